//! One request's exchange with its container on the router's own path: a pooled or new
//! connection, the request head, and the response passed to the client as it comes, framed so
//! the container's connection can be pooled again. A WebSocket upgrade gets a connection of its
//! own, and a 101 hands that connection back to the caller.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pingora::protocols::l4::stream::Stream as TcpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::Body;
use super::pool::UpstreamPool;
use super::response::{self, ClientCookies, Framing};
use super::write::write_client;
use crate::config::Upstream;
use crate::drain::Draining;
use crate::headers::OwnCookies;
use crate::outcome::Outcome;
use crate::pages::{self, RequestKind};
use crate::upstream::UpstreamTarget;
use crate::ws_socket::{ClosableSocket, CloseHandle};

/// Bytes read from a container at a time.
const READ_CHUNK: usize = 16 * 1024;

pub struct Exchange {
    pool: Arc<UpstreamPool>,
    connect_timeout: Duration,
    read_timeout: Duration,
    identity_header: Option<http::HeaderName>,
    max_interim: u32,
    /// The router's cookie names, which a container's Set-Cookie may not use.
    own_cookies: OwnCookies,
    /// Set from SIGQUIT or SIGTERM on: answers then close their connections.
    draining: Arc<Draining>,
}

/// What is sent to the container, and how the answer is to be passed on.
pub struct Ask<'a> {
    pub head: &'a [u8],
    pub head_request: bool,
    pub kind: RequestKind,
    pub set_cookie: Option<&'a str>,
    /// The client's connection closes after this answer.
    pub closing: bool,
    /// A WebSocket upgrade: a new connection, handed back on a 101.
    pub upgrade: bool,
    /// When the request was read: interim answers are refused past the read timeout from it.
    pub started: Instant,
}

/// How an exchange ended.
#[derive(Debug)]
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
    /// The container switched to the WebSocket protocol and the client has the 101.
    Switched(Switched),
}

/// The container's side of an upgraded connection.
#[derive(Debug)]
pub struct Switched {
    /// Ends with a close frame placed between two frames when its handle asks.
    pub socket: ClosableSocket,
    /// What the container sent after its 101, not yet passed to the client.
    pub early: Vec<u8>,
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
    pub fn new(
        upstream: &Upstream,
        own_cookies: OwnCookies,
        pool: Arc<UpstreamPool>,
        draining: Arc<Draining>,
    ) -> Self {
        Exchange {
            draining,
            own_cookies,
            max_interim: upstream.max_interim_responses,
            pool,
            connect_timeout: upstream.connect_timeout,
            read_timeout: upstream.read_timeout,
            identity_header: upstream.identity_header.clone(),
        }
    }

    pub async fn run(
        &self,
        upstream: &UpstreamTarget,
        ask: &Ask<'_>,
        client: &mut TcpClient,
        bufs: &mut Buffers,
    ) -> Exchanged {
        bufs.from_upstream.clear();
        let sent = self.send(upstream, ask, &mut bufs.from_upstream).await;
        let mut conn = match sent {
            Ok(conn) => conn,
            Err(Unsent::Delegate) => return Exchanged::Delegate,
            Err(Unsent::TimedOut) => {
                let outcome = Outcome::UpstreamUnreachable;
                let status = self.answer(client, outcome, ask.kind, bufs).await;
                return Exchanged::Done {
                    outcome,
                    status,
                    keep_alive: false,
                };
            }
        };
        match self
            .pass_response(&mut conn, upstream, ask, client, bufs)
            .await
        {
            Ok(Passed::Switched) => {
                // Copied out: a split would keep the whole read buffer alive with the socket.
                let early = bufs.from_upstream.to_vec();
                let socket = ClosableSocket::after_head(conn, CloseHandle::default(), &early);
                Exchanged::Switched(Switched { socket, early })
            }
            Ok(Passed::Response {
                status,
                reusable,
                keep_client,
            }) => {
                if reusable {
                    self.pool.put(upstream.pool_key, conn);
                }
                Exchanged::Done {
                    outcome: Outcome::Routed,
                    status,
                    keep_alive: keep_client,
                }
            }
            Err(Failure::Answer(outcome)) => {
                let status = self.answer(client, outcome, ask.kind, bufs).await;
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
        ask: &Ask<'_>,
        first: &mut BytesMut,
    ) -> Result<TcpStream, Unsent> {
        let head = ask.head;
        let mut pooled = if ask.upgrade {
            None
        } else {
            self.pool.take(upstream.pool_key)
        };
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

    /// Reads the response head (passing a bounded number of interim 1xx answers on, all within
    /// the read timeout), checks the container's identity, then passes the response on, or the
    /// 101 of an upgrade.
    async fn pass_response(
        &self,
        conn: &mut TcpStream,
        upstream: &UpstreamTarget,
        ask: &Ask<'_>,
        client: &mut TcpClient,
        bufs: &mut Buffers,
    ) -> Result<Passed, Failure> {
        let mut interims = 0;
        loop {
            let head = match self.take_head(upstream, ask, bufs)? {
                Some(head) => head,
                None => match self.read(conn, &mut bufs.from_upstream).await {
                    Ok(n) if n > 0 => continue,
                    _ => return Err(Failure::Answer(Outcome::UpstreamUnreachable)),
                },
            };
            let status = head.status;
            if head.interim {
                interims += 1;
                if interims > self.max_interim || ask.started.elapsed() > self.read_timeout {
                    return Err(Failure::Answer(Outcome::UpstreamUnreachable));
                }
            }
            if head.interim || head.switch {
                write_client(client, &bufs.to_client)
                    .await
                    .map_err(|_| Failure::Cut(Broken::Client, status))?;
                if head.switch {
                    return Ok(Passed::Switched);
                }
                continue;
            }
            let complete = self
                .pass_body(conn, head.framing, client, bufs)
                .await
                .map_err(|broken| Failure::Cut(broken, status))?;
            return Ok(Passed::Response {
                status,
                // An upgrade's connection is never pooled, even when the container refused it.
                reusable: !ask.upgrade
                    && head.keep_alive
                    && complete
                    && bufs.from_upstream.is_empty(),
                keep_client: !head.close_client,
            });
        }
    }

    /// Parses the response head read so far, checks the container's identity and writes the
    /// client's head into `to_client`; `None` until the head is complete. Not async, so that the
    /// parsed header table is not part of every connection's state while it waits.
    fn take_head(
        &self,
        upstream: &UpstreamTarget,
        ask: &Ask<'_>,
        bufs: &mut Buffers,
    ) -> Result<Option<HeadPassed>, Failure> {
        let mut parsed = [httparse::EMPTY_HEADER; response::MAX_HEADERS];
        let parse = response::parse(
            &bufs.from_upstream,
            &mut parsed,
            ask.head_request,
            ask.upgrade,
        );
        let head = match parse {
            Ok(Some(head)) => head,
            Ok(None) if bufs.from_upstream.len() < response::MAX_HEAD => return Ok(None),
            _ => return Err(Failure::Answer(Outcome::UpstreamUnreachable)),
        };
        if let Some(name) = &self.identity_header {
            if let Some(claimed) = head.header(name.as_str()) {
                if crate::upstream::claims_another(upstream, &head.value(claimed)) {
                    return Err(Failure::Answer(Outcome::ContainerMismatch));
                }
            }
        }
        let passed = HeadPassed {
            status: head.status,
            interim: head.is_interim(),
            switch: head.is_switch(),
            framing: head.framing,
            keep_alive: head.keep_alive,
            // Checked as the head goes out: shutdown may have begun while the container worked.
            close_client: ask.closing
                || ask.upgrade
                || head.framing == Framing::UntilClose
                || self.draining.is_set(),
        };
        bufs.to_client.clear();
        let cookies = ClientCookies {
            set: if passed.interim { None } else { ask.set_cookie },
            own: &self.own_cookies,
        };
        response::write_client_head(&mut bufs.to_client, &head, &cookies, passed.close_client);
        let head_len = head.head_len;
        bufs.from_upstream.advance(head_len);
        Ok(Some(passed))
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
                .take(&bufs.from_upstream, &mut bufs.to_client)
                .map_err(|_| Broken::Upstream)?;
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

/// What is left of a response head once the client's head is written.
struct HeadPassed {
    status: u16,
    interim: bool,
    switch: bool,
    framing: Framing,
    /// The container keeps its connection open after this response.
    keep_alive: bool,
    /// The client's connection closes after this response.
    close_client: bool,
}

/// A response passed on whole.
enum Passed {
    Response {
        status: u16,
        /// The container's connection can be pooled.
        reusable: bool,
        /// The client's connection can take another request.
        keep_client: bool,
    },
    Switched,
}

enum Failure {
    /// Nothing was sent to the client yet: it gets the router's answer for this outcome.
    Answer(Outcome),
    /// The response was cut after its head went out, with that status.
    Cut(Broken, u16),
}
