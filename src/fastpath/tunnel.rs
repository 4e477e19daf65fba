//! A WebSocket on the router's own path once its container has switched protocols: bytes passed
//! each way through one small buffer, until either side ends or the router closes it. Pingora's
//! proxy keeps a 64 KiB body buffer on each side of every upgraded connection; an HMR socket that
//! is quiet between edits needs neither.

use std::time::Duration;

use pingora::protocols::l4::stream::Stream as TcpClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::exchange::Switched;

/// Bytes moved per read from the container. HMR messages are small; a large one (an error
/// overlay's stack trace) takes a few reads.
const FROM_CONTAINER_CHUNK: usize = 4 * 1024;
/// Bytes moved per read from the client, whose HMR messages are rarer still and smaller.
const FROM_CLIENT_CHUNK: usize = 1024;

/// Once one side has ended, how long the other gets to finish its part of the close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// The sender finished; the receiver was told with a shutdown of its write side.
    Ended,
    /// The client sent nothing for the WebSocket idle limit.
    Idle,
    /// A read or write failed.
    Broken,
}

/// Passes the connection's bytes both ways until it ends. `from_client` is what the client sent
/// after its request head; `idle` limits how long the client may send nothing.
pub async fn run(
    client: &mut TcpClient,
    from_client: &[u8],
    switched: Switched,
    idle: Option<Duration>,
) {
    let Switched { socket, early, .. } = switched;
    let (mut container_read, mut container_write) = tokio::io::split(socket);
    if write_flushed(client, &early).await.is_err()
        || write_flushed(&mut container_write, from_client)
            .await
            .is_err()
    {
        return;
    }
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let container_ended = {
        let to_container = pump(
            &mut client_read,
            &mut container_write,
            FROM_CLIENT_CHUNK,
            idle,
        );
        let to_client = pump(
            &mut container_read,
            &mut client_write,
            FROM_CONTAINER_CHUNK,
            None,
        );
        tokio::pin!(to_container, to_client);
        tokio::select! {
            _ = &mut to_client => true,
            pumped = &mut to_container => {
                // A client that half-closed still gets what the container sends in answer.
                if pumped == Pumped::Ended {
                    let _ = tokio::time::timeout(CLOSE_WAIT, &mut to_client).await;
                }
                false
            }
        }
    };
    if container_ended {
        // The client answers a close frame with its own and then hangs up; closing under it
        // first would turn that answer into a reset.
        let _ = tokio::time::timeout(CLOSE_WAIT, discard_until_end(&mut client_read)).await;
    }
}

/// Copies `from` to `to`, `chunk` bytes at most at a time, until `from` ends, fails, or (with `idle`) stays quiet that long.
async fn pump<R, W>(from: &mut R, to: &mut W, chunk: usize, idle: Option<Duration>) -> Pumped
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0; chunk];
    loop {
        let read = from.read(&mut buf);
        let read = match idle {
            Some(limit) => match tokio::time::timeout(limit, read).await {
                Ok(read) => read,
                Err(_) => return Pumped::Idle,
            },
            None => read.await,
        };
        match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Pumped::Ended;
            }
            Ok(n) => {
                if write_flushed(to, &buf[..n]).await.is_err() {
                    return Pumped::Broken;
                }
            }
            Err(_) => return Pumped::Broken,
        }
    }
}

async fn write_flushed<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    to.write_all(bytes).await?;
    to.flush().await
}

async fn discard_until_end<R: AsyncRead + Unpin>(from: &mut R) {
    let mut buf = [0; 512];
    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
}
