//! Upstream sockets of WebSocket upgrades that the router can end on its own: with a close frame
//! the browser receives as if from the dev server, placed between two whole frames, then the end
//! of the stream. Pingora owns the socket and offers no way to end an idle upgraded connection
//! from outside, so on its path the upstream connection of every upgrade is made here instead;
//! the fast path wraps the connection it made in the same socket once the 101 has come.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::task::AtomicWaker;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType, OrErr, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use frames::{close_frame, FrameTracker};

mod frames;

/// Close code 1001: the endpoint is going away (the router is shutting down).
pub const GOING_AWAY: u16 = 1001;
/// Close code 1008: policy violation (the session's access was revoked).
pub const POLICY_VIOLATION: u16 = 1008;
/// Close code 1012: the service is restarting (the session moved to another container).
pub const SERVICE_RESTART: u16 = 1012;

/// How long a close waits for the frame in flight to end before the stream ends without one.
const FRAME_END_WAIT: Duration = Duration::from_secs(1);

/// Asks one upgraded connection to close. Cheap to clone; closing twice keeps the first code.
#[derive(Debug, Clone, Default)]
pub struct CloseHandle {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// 0 while open, else the close code asked for.
    code: AtomicU16,
    /// The task reading the upstream, woken so an idle connection notices the close at once.
    reader: AtomicWaker,
}

impl CloseHandle {
    pub fn close(&self, code: u16) {
        let _ = self
            .shared
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.shared.reader.wake();
    }

    fn requested(&self) -> Option<u16> {
        match self.shared.code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }
}

/// What is left to hand to the reader once a close is under way.
#[derive(Debug)]
enum Closing {
    Open,
    /// Waiting for the frame in flight to end, until the deadline.
    Draining(Pin<Box<tokio::time::Sleep>>),
    /// The close frame, and how much of it has been handed over.
    Sending([u8; 4], usize),
    Ended,
}

/// The upstream TCP stream of one WebSocket upgrade, which ends with a close frame on request.
#[derive(Debug)]
pub struct ClosableSocket {
    inner: TcpStream,
    handle: CloseHandle,
    frames: FrameTracker,
    closing: Closing,
}

impl ClosableSocket {
    pub fn new(inner: TcpStream, handle: CloseHandle) -> Self {
        ClosableSocket {
            inner,
            handle,
            frames: FrameTracker::default(),
            closing: Closing::Open,
        }
    }

    /// The socket of an upgrade whose response head was read elsewhere; `early` is what the
    /// container sent after the head, passed on by the caller.
    pub fn after_head(inner: TcpStream, handle: CloseHandle, early: &[u8]) -> Self {
        let mut frames = FrameTracker::after_head();
        frames.feed(early);
        ClosableSocket {
            inner,
            handle,
            frames,
            closing: Closing::Open,
        }
    }

    /// The handle that closes this socket.
    pub fn handle(&self) -> CloseHandle {
        self.handle.clone()
    }

    /// Moves the close along as far as it can go now: waits for a frame boundary (or the
    /// deadline), then hands out the close frame, then the end of the stream.
    fn poll_closing(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match &mut self.closing {
                Closing::Open => {
                    self.closing = Closing::Draining(Box::pin(tokio::time::sleep(FRAME_END_WAIT)));
                }
                Closing::Draining(deadline) => {
                    if self.frames.at_frame_start() {
                        let code = self.handle.requested().unwrap_or(GOING_AWAY);
                        self.closing = Closing::Sending(close_frame(code), 0);
                    } else if deadline.as_mut().poll(cx).is_ready() {
                        // The frame never ended: a close frame now would corrupt it.
                        self.end();
                    } else {
                        return self.poll_inner_within_frame(cx, buf);
                    }
                }
                Closing::Sending(frame, sent) => {
                    let n = (frame.len() - *sent).min(buf.remaining());
                    buf.put_slice(&frame[*sent..*sent + n]);
                    *sent += n;
                    if *sent == frame.len() {
                        self.end();
                    }
                    return Poll::Ready(Ok(()));
                }
                Closing::Ended => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Reads no further than the end of the frame in flight.
    fn poll_inner_within_frame(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let limit = self.frames.until_frame_end().min(buf.remaining());
        let filled = {
            let mut limited = buf.take(limit);
            match Pin::new(&mut self.inner).poll_read(cx, &mut limited) {
                Poll::Ready(Ok(())) => limited.filled().len(),
                other => return other,
            }
        };
        if filled == 0 {
            self.end();
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        // SAFETY: the read above initialised `filled` bytes at the start of `buf`'s unfilled
        // part, through a view of it limited to `limit` bytes.
        #[allow(unsafe_code)]
        unsafe {
            buf.assume_init(filled)
        };
        buf.advance(filled);
        self.frames.feed(&buf.filled()[start..]);
        Poll::Ready(Ok(()))
    }

    /// Ends the stream: the container sees the socket shut, the reader sees its end.
    fn end(&mut self) {
        let _ = socket2::SockRef::from(&self.inner).shutdown(Shutdown::Both);
        self.closing = Closing::Ended;
    }
}

impl AsyncRead for ClosableSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.handle.shared.reader.register(cx.waker());
        if this.handle.requested().is_some() {
            return this.poll_closing(cx, buf);
        }
        let start = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.frames.feed(&buf.filled()[start..]);
        }
        poll
    }
}

impl AsyncWrite for ClosableSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl VirtualSocket for ClosableSocket {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        let socket = socket2::SockRef::from(&self.inner);
        match opt {
            VirtualSockOpt::NoDelay => socket.set_tcp_nodelay(true),
            VirtualSockOpt::KeepAlive(ka) => socket.set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(ka.idle)
                    .with_interval(ka.interval)
                    .with_retries(u32::try_from(ka.count).unwrap_or(u32::MAX)),
            ),
            _ => Ok(()),
        }
    }
}

/// Connects the upstream of one upgrade as a [`ClosableSocket`] whose handle the proxy keeps.
#[derive(Debug)]
pub struct ClosableConnector {
    handle: CloseHandle,
    connect_timeout: Duration,
    /// Filled when the connection is made, so the proxy can register the upgrade.
    made: Mutex<Option<CloseHandle>>,
}

impl ClosableConnector {
    pub fn new(connect_timeout: Duration) -> Self {
        ClosableConnector {
            handle: CloseHandle::default(),
            connect_timeout,
            made: Mutex::new(None),
        }
    }

    /// The handle of the connection this connector made, if it made one.
    pub fn connected(&self) -> Option<CloseHandle> {
        self.made.lock().ok().and_then(|made| made.clone())
    }
}

#[async_trait]
impl L4Connect for ClosableConnector {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let Some(inet) = addr.as_inet() else {
            return Error::e_explain(ErrorType::InternalError, "upgrade upstream must be TCP");
        };
        let connecting = tokio::time::timeout(self.connect_timeout, TcpStream::connect(inet));
        let tcp = match connecting.await {
            Err(_) => {
                return Error::e_explain(
                    ErrorType::ConnectTimedout,
                    format!("timeout {:?} connecting to {inet}", self.connect_timeout),
                )
            }
            Ok(result) => {
                let etype = connect_error_type(&result);
                result.or_err_with(etype, || format!("failed to connect to {inet}"))?
            }
        };
        let socket = ClosableSocket::new(tcp, self.handle.clone());
        if let Ok(mut made) = self.made.lock() {
            *made = Some(self.handle.clone());
        }
        Ok(VirtualSocketStream::new(Box::new(socket)).into())
    }
}

/// The Pingora error type of a failed connect, so retries and health see what they would see
/// for a connection Pingora made itself.
fn connect_error_type(result: &io::Result<TcpStream>) -> ErrorType {
    match result.as_ref().map_err(io::Error::kind) {
        Err(io::ErrorKind::ConnectionRefused) => ErrorType::ConnectRefused,
        Err(io::ErrorKind::TimedOut) => ErrorType::ConnectTimedout,
        _ => ErrorType::ConnectNoRoute,
    }
}

#[cfg(test)]
mod tests;
