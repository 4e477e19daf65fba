//! One client connection, on either engine: admitted under the connection limits, each request
//! head read under the head limits and deadline, then served on the router's own path or handed
//! to Pingora's proxy for that one request, after which the connection comes back here.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpClient;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::write::write_flushed;
use super::{request, FastPath, Handoff, Next, Scratch};
use crate::downstream::{HeadLimit, HeadScan, Refused};
use crate::outcome::Outcome;
use crate::pages::{self, Answer, RequestKind};

/// One client connection while the router holds it.
pub(super) struct Client {
    pub(super) io: Box<TcpClient>,
    /// Read from the client and not consumed yet: a partial head, or pipelined requests.
    pub(super) buf: BytesMut,
    pub(super) peer: Option<IpAddr>,
    pub(super) trusted_peer: bool,
    shutdown: ShutdownWatch,
    /// When the head being read must be complete; `None` while the connection is idle.
    head_deadline: Option<Instant>,
    scan: HeadScan,
}

/// Why a connection ends without an answer from either engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Closed, idle past the keep-alive timeout, or idle as the process shuts down.
    Done,
    /// The head was not complete by its deadline.
    HeadTimeout,
    /// The head broke a size limit: answered 431.
    TooLarge(HeadLimit),
    /// The head ended where httparse does not see it end: answered 400.
    Malformed,
}

#[async_trait]
impl ServerApp for FastPath {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Only plain TCP connections come here; anything else is Pingora's from the start.
        if !stream.as_any().is::<TcpClient>() {
            return Box::pin(self.proxy.process_new(stream, shutdown)).await;
        }
        let mut io: Box<TcpClient> = stream.into_any().downcast().ok()?;
        let peer = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let trusted_peer = peer.is_some_and(|ip| self.limits.trusts(ip));
        // A trusted balancer's connections carry many clients: not counted as one.
        let _admitted = match self.admission.admit(peer.filter(|_| !trusted_peer)) {
            Ok(admitted) => admitted,
            Err(refused) => {
                self.refuse(&mut io, refused).await;
                return None;
            }
        };
        let client = Client {
            io,
            buf: BytesMut::with_capacity(4096),
            peer,
            trusted_peer,
            shutdown: shutdown.clone(),
            // A new connection has head_timeout for its first head, as nginx gives it.
            head_deadline: Some(Instant::now() + self.limits.head_timeout),
            scan: HeadScan::default(),
        };
        self.run(client, shutdown).await;
        None
    }
}

impl FastPath {
    async fn run(&self, mut client: Client, shutdown: &ShutdownWatch) {
        let mut scratch = Scratch::default();
        loop {
            match self.serve(&mut client, &mut scratch).await {
                Next::Again => {}
                Next::Stop(stop) => return self.stop(&mut client, stop).await,
                Next::Upgraded(upgraded) => {
                    // Nothing more is proxied on this connection: its buffers go back now
                    // rather than stay with the socket for as long as it is open.
                    drop(std::mem::take(&mut scratch));
                    return Box::pin(self.hold_websocket(*upgraded, &mut client)).await;
                }
                Next::Delegate(why) => {
                    if self.own_path {
                        self.results[why.counter()].inc();
                    }
                    match Box::pin(self.delegate(client, shutdown)).await {
                        Some(back) => client = back,
                        None => return,
                    }
                }
            }
            client.scan = HeadScan::default();
            client.head_deadline = None;
        }
    }

    /// Reads the next request head under the limits and serves it, or says who should.
    async fn serve(&self, client: &mut Client, scratch: &mut Scratch) -> Next {
        let limits = &self.limits;
        loop {
            match client
                .scan
                .scan(&client.buf, limits.max_head_line, limits.max_head_size)
            {
                Err(limit) => return Next::Stop(Stop::TooLarge(limit)),
                Ok(Some(_)) => break,
                Ok(None) => {}
            }
            if let Err(stop) = self.read_more(client).await {
                return Next::Stop(stop);
            }
        }
        if !self.own_path {
            return hand_over(&client.buf);
        }
        let mut parsed = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
        let req = match request::parse(&client.buf, &mut parsed) {
            Ok(Some(req)) => req,
            // Parsed whole: Pingora reads no further than this head.
            Err(request::Decline::NotPlain) => return Next::Delegate(Handoff::Declined),
            Ok(None) | Err(request::Decline::Unparsed) => return hand_over(&client.buf),
        };
        let head_len = req.head_len;
        let next = self
            .serve_request(
                &req,
                client.peer,
                client.trusted_peer,
                &mut client.io,
                scratch,
            )
            .await;
        if !matches!(next, Next::Delegate(_)) {
            client.buf.advance(head_len);
        }
        next
    }

    /// Reads more of a request head: within the keep-alive timeout while the connection is
    /// idle, by the head's deadline once it has begun.
    async fn read_more(&self, client: &mut Client) -> Result<(), Stop> {
        if client.buf.is_empty() && client.head_deadline.is_none() {
            // Draining alone keeps the connection: its next answer says `Connection: close`.
            if *client.shutdown.borrow() {
                return Err(Stop::Done);
            }
            let read =
                tokio::time::timeout(self.limits.keepalive, client.io.read_buf(&mut client.buf));
            let result = tokio::select! {
                r = read => r,
                _ = client.shutdown.changed() => return Err(Stop::Done),
            };
            return match result {
                Ok(Ok(n)) if n > 0 => {
                    client.head_deadline = Some(Instant::now() + self.limits.head_timeout);
                    Ok(())
                }
                _ => Err(Stop::Done),
            };
        }
        let deadline = client
            .head_deadline
            .get_or_insert_with(|| Instant::now() + self.limits.head_timeout);
        let read = client.io.read_buf(&mut client.buf);
        match tokio::time::timeout_at((*deadline).into(), read).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            Ok(_) => Err(Stop::Done),
            Err(_) => Err(Stop::HeadTimeout),
        }
    }

    /// Hands the connection, with the request head read so far, to Pingora's proxy for one
    /// request; the connection comes back when Pingora would keep it for another.
    async fn delegate(&self, mut client: Client, shutdown: &ShutdownWatch) -> Option<Client> {
        client.io.rewind(&client.buf);
        client.buf.clear();
        let mut session = ServerSession::new_http1(client.io);
        // The proxy's request filter narrows this to the configured keep-alive.
        session.set_keepalive(Some(self.limits.keepalive.as_secs().max(1)));
        let reused = self.proxy.process_new_http(session, shutdown).await?;
        let (stream, _) = reused.consume();
        client.io = stream.into_any().downcast().ok()?;
        Some(client)
    }

    async fn stop(&self, client: &mut Client, stop: Stop) {
        let metrics = &self.shared.metrics;
        let limits = &metrics.client_limits;
        if matches!(stop, Stop::TooLarge(_) | Stop::Malformed) {
            // A request, if a broken one: counted among the requests, with no time worth timing.
            metrics.observe_request(Outcome::BadRequest, 0.0);
        }
        match stop {
            Stop::Done => {}
            Stop::HeadTimeout => limits.with_label_values(&["head_timeout"]).inc(),
            Stop::TooLarge(limit) => {
                limits.with_label_values(&[limit.label()]).inc();
                let answer = Answer {
                    status: 431,
                    ..pages::answer(Outcome::BadRequest, RequestKind::Asset)
                };
                send_and_close(&mut client.io, &answer).await;
            }
            Stop::Malformed => {
                let answer = pages::answer(Outcome::BadRequest, RequestKind::Asset);
                send_and_close(&mut client.io, &answer).await;
            }
        }
    }

    /// Answers a connection the limits do not admit, without reading from it.
    async fn refuse(&self, io: &mut TcpClient, refused: Refused) {
        self.shared
            .metrics
            .client_limits
            .with_label_values(&[refused.label()])
            .inc();
        let status = match refused {
            Refused::Full => 503,
            Refused::TooManyFromClient => 429,
        };
        let answer = Answer {
            status,
            content_type: None,
            retry_after: Some(1),
            location: None,
            set_cookie: None,
            body: Bytes::new(),
        };
        // No lingering here: a flood of refused connections must not hold descriptors longer.
        let _ = tokio::time::timeout(LINGER, send(io, &answer)).await;
    }
}

/// A complete head the router's own path does not take goes to Pingora's proxy, which parses
/// it again and answers it, unless httparse would have Pingora read on past it (with Pingora's
/// own, looser limits): a head with more headers than Pingora takes, or one that httparse does
/// not see ending where its blank line is.
fn hand_over(buf: &[u8]) -> Next {
    match request::head_len(buf) {
        Err(httparse::Error::TooManyHeaders) => Next::Stop(Stop::TooLarge(HeadLimit::Size)),
        Ok(None) => Next::Stop(Stop::Malformed),
        Ok(Some(_)) | Err(_) => Next::Delegate(Handoff::Declined),
    }
}

/// Writes the router's answer on a connection that closes after it, then reads and drops what
/// the client still sends for a moment (a lingering close, as nginx does): closing a socket with
/// unread bytes resets it, and the reset can destroy the answer before the client reads it.
async fn send_and_close(io: &mut TcpClient, answer: &Answer) {
    let linger = async {
        send(io, answer).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        for _ in 0..LINGER_READS {
            if io.read(&mut sink).await? == 0 {
                break;
            }
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
}

/// Writes the router's answer, saying the connection closes after it.
async fn send(io: &mut TcpClient, answer: &Answer) -> std::io::Result<()> {
    let mut out = Vec::new();
    answer.write_http1(&mut out, true);
    write_flushed(io, &out).await
}

/// How long, and for how many reads, a refused client's remaining bytes are drained.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_READS: usize = 16;
