//! One request's exchange with its container on the router's own path: a pooled or new
//! connection, the request head, and the response passed to the client as it comes, framed so
//! the container's connection can be pooled again.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use pingora::protocols::l4::stream::Stream as TcpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::chunked::ChunkedEnd;
use super::pool::UpstreamPool;
use super::response::{self, Framing};
use crate::config::Upstream;
use crate::drain::Draining;
use crate::outcome::Outcome;
use crate::pages::{self, RequestKind};
use crate::upstream::UpstreamTarget;

/// Bytes read from a container at a time.
const READ_CHUNK: usize = 16 * 1024;

pub struct Exchange {
    pool: Arc<UpstreamPool>,
    connect_timeout: Duration,
    read_timeout: Duration,
    identity_header: Option<http::HeaderName>,
    /// Set from SIGQUIT or SIGTERM on: answers then close their connections.
    draining: Arc<Draining>,
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchanged {
    /// Nothing reached the client: the Pingora proxy should take the request (it retries a
    /// failed connect with a fresh lookup and gives the right answer).
    Delegate,
    Done {
        outcome: Outcome,
        /// Status the client got.
        status: u16,
        /// The client connection can take another request.
        keep_alive: bool,
    },
}

/// Buffers reused from one request to the next.
#[derive(Default)]
pub struct Buffers {
    from_upstream: BytesMut,
    to_client: Vec<u8>,
}

/// Why the response could not be passed on whole.
enum Broken {
    /// The container failed or sent something unusable.
    Upstream,
    /// The client went away.
    Client,
}

impl Exchange {
    pub fn new(upstream: &Upstream, pool: Arc<UpstreamPool>, draining: Arc<Draining>) -> Self {
        Exchange {
            draining,
            pool,
            connect_timeout: upstream.connect_timeout,
            read_timeout: upstream.read_timeout,
            identity_header: upstream.identity_header.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        upstream: &UpstreamTarget,
        head: &[u8],
        head_request: bool,
        kind: RequestKind,
        set_cookie: Option<&str>,
        closing: bool,
        client: &mut TcpClient,
        bufs: &mut Buffers,
    ) -> Exchanged {
        bufs.from_upstream.clear();
        let mut conn = match self.send(upstream, head, &mut bufs.from_upstream).await {
            Ok(conn) => conn,
            Err(Unsent::Delegate) => return Exchanged::Delegate,
            Err(Unsent::TimedOut) => {
                let outcome = Outcome::UpstreamUnreachable;
                let status = self.answer(client, outcome, kind, bufs).await;
                return Exchanged::Done {
                    outcome,
                    status,
                    keep_alive: false,
                };
            }
        };
        match self
            .pass_response(
                &mut conn,
                upstream,
                head_request,
                set_cookie,
                closing,
                client,
                bufs,
            )
            .await
        {
            Ok((status, reusable, client_keep_alive)) => {
                if reusable {
                    self.pool.put(upstream.pool_key, conn);
                }
                Exchanged::Done {
                    outcome: Outcome::Routed,
                    status,
                    keep_alive: client_keep_alive,
                }
            }
            Err(Failure::Answer(outcome)) => {
                let status = self.answer(client, outcome, kind, bufs).await;
                Exchanged::Done {
                    outcome,
                    status,
                    keep_alive: false,
                }
            }
            Err(Failure::Cut(broken, status)) => Exchanged::Done {
                outcome: match broken {
                    Broken::Upstream => Outcome::UpstreamUnreachable,
                    Broken::Client => Outcome::ClientClosed,
                },
                status,
                keep_alive: false,
            },
        }
    }

    /// Sends the request head on a pooled connection, or a new one, and waits for the first
    /// bytes of the answer. A pooled connection the container closed meanwhile gets one more
    /// try on a new connection; a container that never answers gets the router's 502; any other
    /// failure leaves the request to Pingora.
    async fn send(
        &self,
        upstream: &UpstreamTarget,
        head: &[u8],
        first: &mut BytesMut,
    ) -> Result<TcpStream, Unsent> {
        let mut pooled = self.pool.take(upstream.pool_key);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                None => self.connect(upstream).await.ok_or(Unsent::Delegate)?,
            };
            if conn.write_all(head).await.is_ok() {
                match self.read(&mut conn, first).await {
                    Ok(n) if n > 0 => return Ok(conn),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(Unsent::TimedOut),
                    _ => {}
                }
            }
            if !reused {
                return Err(Unsent::Delegate);
            }
        }
    }

    async fn connect(&self, upstream: &UpstreamTarget) -> Option<TcpStream> {
        let connecting = TcpStream::connect(upstream.addr);
        let conn = tokio::time::timeout(self.connect_timeout, connecting).await;
        let conn = conn.ok()?.ok()?;
        // Small heads and bodies go out at once rather than waiting to be coalesced.
        conn.set_nodelay(true).ok()?;
        Some(conn)
    }

    /// One read from the container, within the read timeout.
    async fn read(&self, conn: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
        buf.reserve(READ_CHUNK);
        match tokio::time::timeout(self.read_timeout, conn.read_buf(buf)).await {
            Ok(result) => result,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Reads the response head (passing interim 1xx answers on), checks the container's
    /// identity, then passes the response on. Returns the status, whether the container's
    /// connection can be pooled, and whether the client's can be kept.
    #[allow(clippy::too_many_arguments)]
    async fn pass_response(
        &self,
        conn: &mut TcpStream,
        upstream: &UpstreamTarget,
        head_request: bool,
        set_cookie: Option<&str>,
        closing: bool,
        client: &mut TcpClient,
        bufs: &mut Buffers,
    ) -> Result<(u16, bool, bool), Failure> {
        loop {
            let mut parsed = [httparse::EMPTY_HEADER; response::MAX_HEADERS];
            let head = match response::parse(&bufs.from_upstream, &mut parsed, head_request) {
                Ok(Some(head)) => head,
                Ok(None) if bufs.from_upstream.len() < response::MAX_HEAD => {
                    match self.read(conn, &mut bufs.from_upstream).await {
                        Ok(n) if n > 0 => continue,
                        _ => return Err(Failure::Answer(Outcome::UpstreamUnreachable)),
                    }
                }
                _ => return Err(Failure::Answer(Outcome::UpstreamUnreachable)),
            };
            if let Some(name) = &self.identity_header {
                if let Some(claimed) = head.header(name.as_str()) {
                    if crate::upstream::claims_another(upstream, claimed) {
                        return Err(Failure::Answer(Outcome::ContainerMismatch));
                    }
                }
            }
            let interim = head.is_interim();
            let framing = head.framing;
            let keep_alive = head.keep_alive;
            let status = head.status;
            let head_len = head.head_len;
            // Checked as the head goes out: shutdown may have begun while the container worked.
            let close_client = closing || framing == Framing::UntilClose || self.draining.is_set();
            bufs.to_client.clear();
            let cookie = if interim { None } else { set_cookie };
            response::write_client_head(&mut bufs.to_client, &head, cookie, close_client);

            bufs.from_upstream.advance(head_len);
            if interim {
                write_client(client, &bufs.to_client)
                    .await
                    .map_err(|_| Failure::Cut(Broken::Client, status))?;
                continue;
            }
            let complete = self
                .pass_body(conn, framing, client, bufs)
                .await
                .map_err(|broken| Failure::Cut(broken, status))?;
            let reusable = keep_alive && complete && bufs.from_upstream.is_empty();
            return Ok((status, reusable, !close_client));
        }
    }

    /// Sends the client head with as much of the body as has arrived, then the rest as it comes.
    /// True when the body ended exactly where the framing says, so the connection is clean.
    async fn pass_body(
        &self,
        conn: &mut TcpStream,
        framing: Framing,
        client: &mut TcpClient,
        bufs: &mut Buffers,
    ) -> Result<bool, Broken> {
        let mut body = Body::new(framing);
        loop {
            let take = body
                .take(&bufs.from_upstream)
                .map_err(|_| Broken::Upstream)?;
            bufs.to_client
                .extend_from_slice(&bufs.from_upstream[..take]);
            bufs.from_upstream.advance(take);
            if !bufs.to_client.is_empty() {
                write_client(client, &bufs.to_client)
                    .await
                    .map_err(|_| Broken::Client)?;
                bufs.to_client.clear();
            }
            if body.is_done() {
                return Ok(true);
            }
            match self.read(conn, &mut bufs.from_upstream).await {
                Ok(0) if framing == Framing::UntilClose => return Ok(false),
                Ok(n) if n > 0 => {}
                _ => return Err(Broken::Upstream),
            }
        }
    }

    /// Writes the router's own answer; returns its status.
    async fn answer(
        &self,
        client: &mut TcpClient,
        outcome: Outcome,
        kind: RequestKind,
        bufs: &mut Buffers,
    ) -> u16 {
        let answer = pages::answer(outcome, kind);
        bufs.to_client.clear();
        answer.write_http1(&mut bufs.to_client, true);
        // The connection closes after this either way.
        let _ = write_client(client, &bufs.to_client).await;
        answer.status
    }
}

/// Why a request did not get as far as the container's first byte.
enum Unsent {
    Delegate,
    TimedOut,
}

enum Failure {
    /// Nothing was sent to the client yet: it gets the router's answer for this outcome.
    Answer(Outcome),
    /// The response was cut after its head went out, with that status.
    Cut(Broken, u16),
}

/// A client that reads nothing for this long is treated as gone, so a stalled reader cannot hold
/// a container connection forever.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

async fn write_client(client: &mut TcpClient, bytes: &[u8]) -> io::Result<()> {
    within(CLIENT_WRITE_TIMEOUT, async {
        client.write_all(bytes).await?;
        client.flush().await
    })
    .await
}

/// Runs `op` within `limit`. Most writes finish at once, so the timer is only set up for one that
/// has to wait: a timer per request is a measurable share of the path's work.
async fn within<T>(limit: Duration, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    let mut op = std::pin::pin!(op);
    if let Some(done) = op.as_mut().now_or_never() {
        return done;
    }
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// How much of what has arrived belongs to the body, by its framing.
struct Body {
    framing: Framing,
    left: u64,
    chunked: ChunkedEnd,
    done: bool,
}

impl Body {
    fn new(framing: Framing) -> Self {
        let (left, done) = match framing {
            Framing::Length(n) => (n, n == 0),
            Framing::Empty => (0, true),
            Framing::Chunked | Framing::UntilClose => (0, false),
        };
        Body {
            framing,
            left,
            chunked: ChunkedEnd::default(),
            done,
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn take(&mut self, available: &[u8]) -> Result<usize, super::chunked::Malformed> {
        if self.done {
            return Ok(0);
        }
        let take = match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let take = available
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= take as u64;
                self.done = self.left == 0;
                take
            }
            Framing::Chunked => {
                let take = self.chunked.feed(available)?;
                self.done = self.chunked.is_done();
                take
            }
            Framing::UntilClose => available.len(),
        };
        Ok(take)
    }
}
