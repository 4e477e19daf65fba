//! Passing a container's response to the client on the router's own path: the head read within
//! the read timeout (with a bounded number of interim answers before it), the container's
//! identity checked, then the body as it comes, framed so that the end of the response is known
//! and the container's connection can be pooled again.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pingora::protocols::l4::stream::Stream as TcpClient;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::drain::Draining;
use crate::fastpath::body::Body;
use crate::fastpath::response::{self, ClientCookies, Framing};
use crate::fastpath::write::write_client;
use crate::headers::OwnCookies;
use crate::outcome::Outcome;
use crate::pages::RequestKind;
use crate::upstream::UpstreamTarget;

/// Bytes read from a container at a time.
const READ_CHUNK: usize = 16 * 1024;

/// What a response must satisfy to be passed on, from `[upstream]`.
pub(super) struct Passing {
    pub read_timeout: Duration,
    pub identity_header: Option<http::HeaderName>,
    pub max_interim: u32,
    /// The router's cookie names, which a container's Set-Cookie may not use.
    pub own_cookies: OwnCookies,
    /// Set from SIGQUIT or SIGTERM on: answers then close their connections.
    pub draining: Arc<Draining>,
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

/// Buffers reused from one request to the next.
#[derive(Default)]
pub struct Buffers {
    pub(super) from_upstream: BytesMut,
    pub(super) to_client: Vec<u8>,
}

/// Why the response could not be passed on whole.
pub(super) enum Broken {
    /// The container failed or sent something unusable.
    Upstream,
    /// The client went away.
    Client,
}

impl Passing {
    /// One read from the container, within the read timeout.
    pub(super) async fn read(&self, conn: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
        buf.reserve(READ_CHUNK);
        match tokio::time::timeout(self.read_timeout, conn.read_buf(buf)).await {
            Ok(result) => result,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Reads the response head (passing a bounded number of interim 1xx answers on, all within
    /// the read timeout), checks the container's identity, then passes the response on, or the
    /// 101 of an upgrade.
    pub(super) async fn response(
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
pub(super) enum Passed {
    Response {
        status: u16,
        /// The container's connection can be pooled.
        reusable: bool,
        /// The client's connection can take another request.
        keep_client: bool,
    },
    Switched,
}

pub(super) enum Failure {
    /// Nothing was sent to the client yet: it gets the router's answer for this outcome.
    Answer(Outcome),
    /// The response was cut after its head went out, with that status.
    Cut(Broken, u16),
}
