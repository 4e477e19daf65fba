//! The scripted containers on 127.0.0.1: thread t1's answers the first request head it reads in a
//! run with the input's reply bytes and every later one honestly; thread t2's always answers
//! honestly. An honest answer is a 200 whose body names its thread, the run's nonce and the
//! answer's place among the router's container answers (`t2-<nonce>-<seq>`, also in its
//! `X-Answer` header, for HEADs), so the client's view says which exchange each body came from.
//! Served by std threads until the process ends.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests served on one container connection before it is closed.
const MAX_REQUESTS: usize = 64;
/// Connections served at once per container; more are closed at once.
const MAX_LIVE: usize = 256;
/// Largest request head (or chunk-size line, or trailer) read.
const MAX_HEAD: usize = 64 * 1024;
/// A connection quiet this long is closed: longer than the routers keep a pooled one idle.
pub const IDLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    T1,
    T2,
}

impl Thread {
    pub fn name(self) -> &'static str {
        match self {
            Thread::T1 => "t1",
            Thread::T2 => "t2",
        }
    }
}

/// One answer a container gave during the current run.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u32,
    pub thread: Thread,
    /// The input's reply bytes, not an honest answer.
    pub hostile: bool,
    /// The start of the request head it answered, for reports.
    pub head: String,
}

/// What a router's two containers answer in the current run, and what they answered.
#[derive(Debug, Default)]
pub struct Run {
    pub nonce: u64,
    next_seq: u32,
    pub log: Vec<Entry>,
    /// t1's reply to the first head it reads, and whether it closes after it.
    armed: Option<(Vec<u8>, bool)>,
}

/// The state a router's two containers share.
#[derive(Default)]
pub struct Script {
    run: Mutex<Run>,
}

impl Script {
    /// Starts a run: a new nonce and numbering, an empty log, t1's reply armed.
    pub fn arm(&self, nonce: u64, reply: &[u8], close: bool) {
        let mut run = lock(&self.run);
        *run = Run {
            nonce,
            armed: Some((reply.to_vec(), close)),
            ..Run::default()
        };
    }

    /// The answers given in the current run.
    pub fn log(&self) -> Vec<Entry> {
        lock(&self.run).log.clone()
    }

    /// What to send for one request head, and whether to close after it.
    fn reply(&self, thread: Thread, head: &[u8], method: &str) -> (Vec<u8>, bool) {
        let mut run = lock(&self.run);
        let seq = run.next_seq;
        run.next_seq += 1;
        let armed = if thread == Thread::T1 {
            run.armed.take()
        } else {
            None
        };
        run.log.push(Entry {
            seq,
            thread,
            hostile: armed.is_some(),
            head: String::from_utf8_lossy(&head[..head.len().min(300)]).into_owned(),
        });
        if let Some(hostile) = armed {
            return hostile;
        }
        let body = honest_body(thread, run.nonce, seq);
        let shown = if method == "HEAD" { "" } else { body.as_str() };
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Answer: {body}\r\n\
             Content-Length: {}\r\n\r\n{shown}",
            body.len()
        );
        (reply.into_bytes(), false)
    }
}

/// The body of an honest answer.
pub fn honest_body(thread: Thread, nonce: u64, seq: u32) -> String {
    format!("{}-{nonce:016x}-{seq}", thread.name())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts one container on a free 127.0.0.1 port; it serves until the process ends.
pub fn start(thread: Thread, script: Arc<Script>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a container");
    let addr = listener.local_addr().expect("container address");
    let live = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        // Ends with the process; each connection is bounded in requests and idle time.
        for conn in listener.incoming().flatten() {
            if live.load(Ordering::SeqCst) >= MAX_LIVE {
                continue;
            }
            live.fetch_add(1, Ordering::SeqCst);
            let (script, live) = (script.clone(), live.clone());
            std::thread::spawn(move || {
                serve(conn, thread, &script);
                live.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    addr
}

fn serve(mut conn: TcpStream, thread: Thread, script: &Script) {
    let _ = conn.set_read_timeout(Some(IDLE));
    let _ = conn.set_write_timeout(Some(IDLE));
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    for _ in 0..MAX_REQUESTS {
        let Some((head, method)) = read_request(&mut conn, &mut buf) else {
            return;
        };
        let (reply, close) = script.reply(thread, &head, &method);
        if conn.write_all(&reply).is_err() || close {
            return;
        }
    }
}

/// Reads one request (head and body) from the router; its head and method. `None` at the end
/// of the connection or on anything a router would never send.
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Vec<u8>, String)> {
    let (head_len, method, body) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                break (n, req.method?.to_owned(), framing(req.headers)?);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => fill(conn, buf)?,
            _ => return None,
        }
    };
    let head: Vec<u8> = buf.drain(..head_len).collect();
    match body {
        RequestBody::Length(n) => skip(conn, buf, n)?,
        RequestBody::Chunked => skip_chunked(conn, buf)?,
    }
    Some((head, method))
}

enum RequestBody {
    Length(usize),
    Chunked,
}

fn framing(headers: &[httparse::Header<'_>]) -> Option<RequestBody> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if value("transfer-encoding").is_some() {
        return Some(RequestBody::Chunked);
    }
    match value("content-length") {
        None => Some(RequestBody::Length(0)),
        Some(v) => std::str::from_utf8(v)
            .ok()?
            .trim()
            .parse()
            .ok()
            .map(RequestBody::Length),
    }
}

/// Reads more bytes into `buf`; `None` at the end of the connection or after `IDLE`.
fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match conn.read(&mut chunk) {
        Ok(0) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => Some(()),
        Err(_) => None,
    }
}

/// Drops `n` bytes of body, reading them as they come.
fn skip(conn: &mut TcpStream, buf: &mut Vec<u8>, mut n: usize) -> Option<()> {
    // Each pass either drops bytes or reads at least one; reads end at IDLE.
    while n > 0 {
        if buf.is_empty() {
            fill(conn, buf)?;
        }
        let take = n.min(buf.len());
        buf.drain(..take);
        n -= take;
    }
    Some(())
}

/// Drops a chunked body: chunks, then trailer lines up to the empty one.
fn skip_chunked(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    for _ in 0..MAX_HEAD {
        match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, 0))) => {
                buf.drain(..used);
                return skip_trailers(conn, buf);
            }
            Ok(httparse::Status::Complete((used, size))) => {
                buf.drain(..used);
                skip(conn, buf, usize::try_from(size).ok()?.checked_add(2)?)?;
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => fill(conn, buf)?,
            _ => return None,
        }
    }
    None
}

fn skip_trailers(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    for _ in 0..MAX_HEAD {
        match buf.windows(2).position(|w| w == b"\r\n") {
            Some(0) => {
                buf.drain(..2);
                return Some(());
            }
            Some(end) => {
                buf.drain(..end + 2);
            }
            None if buf.len() < MAX_HEAD => fill(conn, buf)?,
            None => return None,
        }
    }
    None
}
