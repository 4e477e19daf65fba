//! One request's exchange with its container on the router's own path: a pooled or new
//! connection, the request head, and the response passed to the client as it comes (see
//! `passing`). A WebSocket upgrade gets a connection of its own, and a 101 hands that connection
//! back to the caller.

mod passing;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pingora::protocols::l4::stream::Stream as TcpClient;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::pool::UpstreamPool;
use super::write::write_client;
use crate::config::Upstream;
use crate::drain::Draining;
use crate::headers::OwnCookies;
use crate::outcome::Outcome;
use crate::pages::{self, RequestKind};
use crate::upstream::UpstreamTarget;
use crate::ws_socket::{ClosableSocket, CloseHandle};
use passing::{Broken, Failure, Passed, Passing};

pub use passing::{Ask, Buffers};

pub struct Exchange {
    pool: Arc<UpstreamPool>,
    connect_timeout: Duration,
    passing: Passing,
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

impl Exchange {
    pub fn new(
        upstream: &Upstream,
        own_cookies: OwnCookies,
        pool: Arc<UpstreamPool>,
        draining: Arc<Draining>,
    ) -> Self {
        Exchange {
            pool,
            connect_timeout: upstream.connect_timeout,
            passing: Passing {
                read_timeout: upstream.read_timeout,
                identity_header: upstream.identity_header.clone(),
                max_interim: upstream.max_interim_responses,
                own_cookies,
                draining,
            },
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
            .passing
            .response(&mut conn, upstream, ask, client, bufs)
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
                match self.passing.read(&mut conn, first).await {
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
