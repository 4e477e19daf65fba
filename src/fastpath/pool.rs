//! Idle keep-alive connections to containers, for the router's own HTTP/1.1 path. Keyed like
//! Pingora's pools, by session and container, so a reused container address never hands one
//! session's connection to another. Taken newest first; too old or closed ones are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::net::TcpStream;

use crate::background::wait_or_shutdown;

/// Idle connections kept per session and container: the browser's six connections per host,
/// many times over, without letting one session hoard descriptors.
const PER_KEY: usize = 64;
/// How often connections past their idle time are closed when nothing takes them.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

struct Idle {
    stream: TcpStream,
    since: Instant,
}

pub struct UpstreamPool {
    idle: Mutex<HashMap<u64, Vec<Idle>>>,
    /// Below the dev server's own keep-alive (Node: 5 s), so the router never sends a request
    /// into a connection the container is closing.
    idle_timeout: Duration,
}

/// Whether an idle connection is still open with nothing unread. A close or stray bytes from the
/// container make it readable; tokio knows that from the last readiness event, so for an open,
/// quiet connection this costs no system call.
fn is_reusable(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl UpstreamPool {
    pub fn new(idle_timeout: Duration) -> Self {
        UpstreamPool {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    /// The newest idle connection of `key` that can still be used.
    pub fn take(&self, key: u64) -> Option<TcpStream> {
        let now = Instant::now();
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&key)?;
        while let Some(conn) = list.pop() {
            if now.duration_since(conn.since) < self.idle_timeout && is_reusable(&conn.stream) {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Keeps `stream` for the next request of `key`, unless that key has enough already.
    pub fn put(&self, key: u64, stream: TcpStream) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let list = idle.entry(key).or_default();
        if list.len() < PER_KEY {
            list.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for longer than the idle timeout; forgets empty keys.
    pub fn sweep(&self) {
        let now = Instant::now();
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain(|_, list| {
            list.retain(|c| now.duration_since(c.since) < self.idle_timeout);
            !list.is_empty()
        });
    }

    /// Idle connections held now.
    pub fn len(&self) -> usize {
        self.idle
            .lock()
            .map_or(0, |idle| idle.values().map(Vec::len).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Background task that closes idle connections past their time.
pub struct PoolSweeper {
    pool: Arc<UpstreamPool>,
}

impl PoolSweeper {
    pub fn new(pool: Arc<UpstreamPool>) -> Self {
        PoolSweeper { pool }
    }
}

#[async_trait]
impl BackgroundService for PoolSweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while wait_or_shutdown(SWEEP_INTERVAL, &mut shutdown).await {
            self.pool.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::test_sockets::connected_pair;

    #[tokio::test]
    async fn connections_come_back_by_key_newest_first() {
        let pool = UpstreamPool::new(Duration::from_secs(4));
        let (a, _a_server) = connected_pair().await;
        let (b, _b_server) = connected_pair().await;
        let (a_port, b_port) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        pool.put(1, a);
        pool.put(1, b);
        assert!(pool.take(2).is_none(), "another session's key");
        assert_eq!(pool.take(1).unwrap().local_addr().unwrap(), b_port);
        assert_eq!(pool.take(1).unwrap().local_addr().unwrap(), a_port);
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn closed_or_chatty_connections_are_not_reused() {
        let pool = UpstreamPool::new(Duration::from_secs(4));
        let (closed, server) = connected_pair().await;
        let (chatty, mut talker) = connected_pair().await;
        pool.put(1, closed);
        pool.put(2, chatty);
        drop(server);
        talker.write_all(b"unexpected").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(1).is_none(), "closed by the container");
        assert!(pool.take(2).is_none(), "bytes nobody asked for");
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let pool = UpstreamPool::new(Duration::from_millis(50));
        let (a, _server) = connected_pair().await;
        let (b, _server_b) = connected_pair().await;
        pool.put(1, a);
        pool.put(2, b);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(pool.take(1).is_none());
        pool.sweep();
        assert!(pool.is_empty());
    }
}
