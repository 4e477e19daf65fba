//! The client's side of one input: a new connection, the client's bytes written one request at a
//! time, each once the one before is answered, as a browser reuses a kept-alive connection (or
//! all at once when the input pipelines), then everything the router sends read until it closes
//! the connection. The write half stays open, as a browser's does: a half-closed connection is a
//! client going away to Pingora, which would end requests the fast path still answers, a
//! difference no browser causes.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::reading;

/// Longest a router may take over one input. Each of its own waits is far shorter (see
/// `router::TIMEOUTS`), so only a stuck router reaches this.
const LIMIT: Duration = Duration::from_secs(3);
/// How long an answer to one request is waited for before the next request is sent anyway:
/// longer than any wait of the router's own, after which it answers or closes.
const QUIET: Duration = Duration::from_millis(400);
/// Longest single read: how often a wait checks whether it is over.
const POLL: Duration = Duration::from_millis(20);
/// Most bytes read from a router for one input.
const MAX_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The router closed the connection.
    Closed,
    /// The router reset it: bytes it sent just before may never have reached the client.
    Reset,
    /// Neither within `LIMIT`.
    TimedOut,
}

#[derive(Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub end: End,
    /// A request went out before the one before it was answered: the input pipelines, or the
    /// router was quiet for `QUIET` (waiting for bytes the client's parse did not expect, or
    /// slow).
    pub pipelined: bool,
}

struct Conn {
    stream: TcpStream,
    got: Vec<u8>,
    deadline: Instant,
    pipelined: bool,
    /// The last request's answer has not come.
    unanswered: bool,
}

pub fn exchange(proxy: SocketAddr, client: &[u8], pipelined: bool) -> Received {
    let stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("connect to the router on {proxy}: {e}"));
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut conn = Conn {
        stream,
        got: Vec::new(),
        deadline: Instant::now() + LIMIT,
        pipelined,
        unanswered: false,
    };
    let sent = if pipelined {
        0
    } else {
        match conn.one_at_a_time(client) {
            Ok(sent) => sent,
            Err(end) => return conn.received(end),
        }
    };
    // A router that closes before reading everything is still read from below.
    let _ = conn.send(&client[sent..]);
    let end = conn.read_until(|_| false).unwrap_or(End::TimedOut);
    conn.received(end)
}

impl Conn {
    /// Sends each request the client's bytes parse into once the one before is answered (or the
    /// router is quiet); stops after a protocol switch. Returns how many bytes were sent.
    fn one_at_a_time(&mut self, client: &[u8]) -> Result<usize, End> {
        let requests = reading::requests(client);
        let methods: Vec<String> = requests.iter().map(|r| r.method.clone()).collect();
        let mut sent = 0;
        for (i, request) in requests.iter().enumerate() {
            if self.send(&client[sent..request.end]).is_err() {
                return Err(self.read_until(|_| false).unwrap_or(End::TimedOut));
            }
            sent = request.end;
            let answered = |got: &[u8]| {
                let (whole, switched) = reading::answered(&reading::responses(got, &methods));
                whole > i || switched
            };
            let quiet = Instant::now() + QUIET;
            if let Some(end) = self.read_until(|got| answered(got) || Instant::now() > quiet) {
                return Err(end);
            }
            self.unanswered = !answered(&self.got);
            if reading::answered(&reading::responses(&self.got, &methods)).1 {
                break;
            }
        }
        Ok(sent)
    }

    /// Writes the next bytes of the client's, noting whether they go before an answer.
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.pipelined |= self.unanswered;
        self.stream.write_all(bytes)
    }

    /// Reads until `enough` holds (checked after each read, and every `POLL`): `None`; or until
    /// the connection ends or the deadline passes: how it ended.
    fn read_until(&mut self, enough: impl Fn(&[u8]) -> bool) -> Option<End> {
        let mut chunk = [0u8; 16 * 1024];
        // Ends at the deadline at the latest: every read waits at most `POLL`.
        loop {
            if enough(&self.got) {
                return None;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.got.len() >= MAX_BYTES {
                return Some(End::TimedOut);
            }
            let _ = self.stream.set_read_timeout(Some(left.min(POLL)));
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(End::Closed),
                Ok(n) => self.got.extend_from_slice(&chunk[..n]),
                Err(e) if is_wait(e.kind()) => {}
                Err(_) => return Some(End::Reset),
            }
        }
    }

    fn received(self, end: End) -> Received {
        Received {
            bytes: self.got,
            end,
            pipelined: self.pipelined,
        }
    }
}

fn is_wait(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
