//! A WebSocket on the router's own path once its container has switched protocols: bytes passed
//! each way through one small buffer, until either side ends or the router closes it. Pingora's
//! proxy keeps a large body buffer on each side of every upgraded connection; an HMR socket that
//! is quiet between edits needs neither.

use std::time::Duration;

use pingora::protocols::l4::stream::Stream as TcpClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::exchange::Switched;
use super::write::write_flushed;

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
    active: &(dyn Fn() + Sync),
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
            active,
        );
        let to_client = pump(
            &mut container_read,
            &mut client_write,
            FROM_CONTAINER_CHUNK,
            None,
            active,
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
/// `active` is told of every read: frames either way mark the session active.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    chunk: usize,
    idle: Option<Duration>,
    active: &(dyn Fn() + Sync),
) -> Pumped
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
                active();
                if write_flushed(to, &buf[..n]).await.is_err() {
                    return Pumped::Broken;
                }
            }
            Err(_) => return Pumped::Broken,
        }
    }
}

async fn discard_until_end<R: AsyncRead + Unpin>(from: &mut R) {
    let mut buf = [0; 512];
    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_sockets::connected_pair as pair;
    use crate::ws_socket::{ClosableSocket, CloseHandle};
    use tokio::net::TcpStream;

    struct Ends {
        browser: TcpStream,
        container: TcpStream,
        tunnel: tokio::task::JoinHandle<()>,
    }

    /// A tunnel between a browser and a container socket; `early` is what the container sent
    /// with its 101, `from_client` what the browser sent after its request head.
    async fn tunnel(early: &[u8], from_client: &[u8], idle: Option<Duration>) -> Ends {
        let (browser, client_side) = pair().await;
        let (container, container_side) = pair().await;
        let close = CloseHandle::default();
        let switched = Switched {
            socket: ClosableSocket::after_head(container_side, close, early),
            early: early.to_vec(),
        };
        let from_client = from_client.to_vec();
        let tunnel = tokio::spawn(async move {
            let mut client = TcpClient::from(client_side);
            run(&mut client, &from_client, switched, idle, &|| {}).await;
        });
        Ends {
            browser,
            container,
            tunnel,
        }
    }

    async fn read_exactly(from: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        let read = tokio::time::timeout(Duration::from_secs(5), from.read_exact(&mut buf));
        read.await.expect("in time").expect("bytes");
        buf
    }

    async fn read_to_end(from: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), from.read_to_end(&mut buf));
        read.await.expect("in time").expect("until the end");
        buf
    }

    #[tokio::test]
    async fn bytes_read_with_the_heads_go_first_then_larger_messages_in_pieces() {
        let mut ends = tunnel(b"\x81\x05hello", b"\x81\x82ab", None).await;
        assert_eq!(read_exactly(&mut ends.browser, 7).await, b"\x81\x05hello");
        assert_eq!(read_exactly(&mut ends.container, 4).await, b"\x81\x82ab");
        // Larger than either buffer, both ways at once.
        let big: Vec<u8> = (0..=255u8)
            .cycle()
            .take(3 * FROM_CONTAINER_CHUNK + 7)
            .collect();
        ends.container.write_all(&big).await.unwrap();
        ends.browser.write_all(&big).await.unwrap();
        assert_eq!(read_exactly(&mut ends.browser, big.len()).await, big);
        assert_eq!(read_exactly(&mut ends.container, big.len()).await, big);
    }

    #[tokio::test]
    async fn a_browser_that_stops_sending_still_gets_the_containers_answer() {
        let mut ends = tunnel(b"", b"", None).await;
        ends.browser.shutdown().await.unwrap();
        // The container sees the end of the browser's side, and answers after it.
        assert_eq!(read_to_end(&mut ends.container).await, b"");
        ends.container.write_all(b"\x88\x02\x03\xe8").await.unwrap();
        drop(ends.container);
        assert_eq!(read_to_end(&mut ends.browser).await, b"\x88\x02\x03\xe8");
        ends.tunnel.await.unwrap();
    }

    #[tokio::test]
    async fn a_closing_container_leaves_the_browser_time_to_answer_and_hang_up() {
        let mut ends = tunnel(b"", b"", None).await;
        ends.container.write_all(b"\x88\x00").await.unwrap();
        drop(ends.container);
        assert_eq!(read_to_end(&mut ends.browser).await, b"\x88\x00");
        // The browser's own close frame goes into an open socket, not a reset one.
        ends.browser.write_all(b"\x88\x80abcd").await.unwrap();
        ends.browser.shutdown().await.unwrap();
        let hung_up = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), ends.tunnel)
            .await
            .expect("in time")
            .unwrap();
        assert!(
            hung_up.elapsed() < CLOSE_WAIT / 2,
            "the tunnel ends when the browser hangs up, not at the close wait"
        );
    }

    #[tokio::test]
    async fn a_quiet_browser_is_cut_at_the_idle_limit_however_chatty_the_container() {
        let mut ends = tunnel(b"", b"", Some(Duration::from_millis(300))).await;
        let started = std::time::Instant::now();
        let chatter = async {
            while ends.container.write_all(b"\x81\x01x").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(5), ends.tunnel);
        tokio::select! {
            ended = ended => ended.expect("cut in time").unwrap(),
            _ = chatter => {}
        }
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(290), "{waited:?}");
        let _ = read_to_end(&mut ends.browser).await;
    }
}
