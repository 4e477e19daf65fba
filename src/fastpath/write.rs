//! Writing to the connections the fast path holds: whole buffers, flushed at once, and for a
//! response to a client, within a time limit.

use std::future::Future;
use std::io;
use std::time::Duration;

use futures_util::FutureExt;
use pingora::protocols::l4::stream::Stream as TcpClient;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A client that reads nothing for this long is treated as gone, so a stalled reader cannot hold
/// a container connection forever.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes all of `bytes` and flushes them: Pingora's stream may hold writes back otherwise.
pub async fn write_flushed<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    to.write_all(bytes).await?;
    to.flush().await
}

/// Writes part of a response to the client, within [`CLIENT_WRITE_TIMEOUT`].
pub async fn write_client(client: &mut TcpClient, bytes: &[u8]) -> io::Result<()> {
    within(CLIENT_WRITE_TIMEOUT, write_flushed(client, bytes)).await
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
