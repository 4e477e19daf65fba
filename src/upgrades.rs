//! Open upgraded (WebSocket) connections and what they are connected to. When the table moves a
//! session to another container or address, its sockets to the old one are shut down, so the
//! browser's dev client reconnects through the new route instead of talking to a dead container.
//! When the process shuts down, each one is closed with a WebSocket close handshake (1001 Going
//! Away) instead of being cut when Pingora drops its tasks at the end of the grace period.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::Metrics;
use crate::table::Resolver;

/// How often the watcher checks whether routes changed; sockets to a replaced container close
/// within about this long of the table change.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// At shutdown, how long the close handshakes get before the remaining sockets are shut down.
/// Well inside the grace period, which keeps the process (and these tasks) alive.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(2);

/// Close code 1001, "going away": the endpoint is shutting down.
const GOING_AWAY: u16 = 1001;

/// A client-to-server close frame (so masked, RFC 6455 5.3) carrying `code`.
fn masked_close_frame(code: u16) -> [u8; 8] {
    let mask = fastrand::u32(..).to_be_bytes();
    let payload = code.to_be_bytes();
    [
        0x88,     // FIN + opcode 8 (close)
        0x80 | 2, // masked, 2 payload bytes
        mask[0],
        mask[1],
        mask[2],
        mask[3],
        payload[0] ^ mask[0],
        payload[1] ^ mask[1],
    ]
}

struct Entry {
    session_key: String,
    container_id: Arc<str>,
    addr: SocketAddr,
    /// A duplicate of the upstream socket: shutting it down ends the proxied connection, and
    /// holding it keeps the descriptor number from being reused while it is registered.
    socket: OwnedFd,
}

#[derive(Default)]
pub struct Upgrades {
    next_id: AtomicU64,
    /// Touched only when a connection is upgraded or ends, never per request.
    open: Mutex<HashMap<u64, Entry>>,
}

impl Upgrades {
    /// Registers an upgraded connection; returns the id to [`Upgrades::remove`] it with.
    pub fn register(
        &self,
        session_key: String,
        container_id: Arc<str>,
        addr: SocketAddr,
        socket: OwnedFd,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            session_key,
            container_id,
            addr,
            socket,
        };
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, entry);
        }
        id
    }

    pub fn remove(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
        }
    }

    /// Shuts down every socket whose session now routes elsewhere; returns how many.
    pub fn close_replaced(&self, resolver: &Resolver) -> usize {
        let Ok(mut open) = self.open.lock() else {
            return 0;
        };
        let replaced: Vec<u64> = open
            .iter()
            .filter(|(_, e)| match resolver.current(&e.session_key) {
                Some((container, addr)) => container != e.container_id || addr != Some(e.addr),
                None => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &replaced {
            if let Some(entry) = open.remove(id) {
                // Failing here means the socket is already gone, which is the goal anyway.
                let _ = TcpStream::from(entry.socket).shutdown(Shutdown::Both);
            }
        }
        replaced.len()
    }

    /// Upgraded connections open now.
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends each container a close frame (1001 Going Away) on behalf of its browser. The dev
    /// server answers with its own close frame, which the proxy forwards, so the browser sees a
    /// complete close handshake and its dev client reconnects (through the balancer, to an
    /// instance that is not shutting down). Returns how many were asked.
    ///
    /// The frame is written beside Pingora's own forwarding of client frames on the same socket.
    /// HMR clients send a small frame every 30 s, so the two rarely meet; if they do, the dev
    /// server sees a malformed frame and closes the socket, which ends the connection all the same.
    pub fn send_going_away(&self) -> usize {
        let Ok(open) = self.open.lock() else {
            return 0;
        };
        let mut asked = 0;
        for entry in open.values() {
            let frame = masked_close_frame(GOING_AWAY);
            let sent = entry
                .socket
                .try_clone()
                .map(TcpStream::from)
                .and_then(|mut s| s.write_all(&frame));
            if sent.is_ok() {
                asked += 1;
            }
        }
        asked
    }

    /// Shuts down every registered upstream socket; returns how many.
    pub fn shutdown_all(&self) -> usize {
        let Ok(mut open) = self.open.lock() else {
            return 0;
        };
        let count = open.len();
        for (_, entry) in open.drain() {
            // Failing here means the socket is already gone, which is the goal anyway.
            let _ = TcpStream::from(entry.socket).shutdown(Shutdown::Both);
        }
        count
    }
}

/// Background task that closes upgraded connections to replaced containers, and all of them
/// when the process shuts down.
pub struct UpgradeWatcher {
    upgrades: Arc<Upgrades>,
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
}

impl UpgradeWatcher {
    pub fn new(upgrades: Arc<Upgrades>, resolver: Arc<Resolver>, metrics: Arc<Metrics>) -> Self {
        UpgradeWatcher {
            upgrades,
            resolver,
            metrics,
        }
    }
}

#[async_trait]
impl BackgroundService for UpgradeWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = self.resolver.version();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
                _ = shutdown.changed() => {
                    self.close_for_shutdown().await;
                    return;
                }
            }
            let version = self.resolver.version();
            if version == seen {
                continue;
            }
            seen = version;
            let closed = self.upgrades.close_replaced(&self.resolver);
            if closed > 0 {
                log::info!("closed {closed} upgraded connections to replaced containers");
                self.metrics.websocket_replaced.inc_by(closed as u64);
            }
        }
    }
}

impl UpgradeWatcher {
    /// Pingora leaves upgraded connections running through the grace period and then drops
    /// them without a close frame. Closing them here, at the start of shutdown, gives browsers
    /// a proper close and lets them reconnect at once, instead of after the grace period.
    async fn close_for_shutdown(&self) {
        let open = self.upgrades.len();
        if open == 0 {
            return;
        }
        let asked = self.upgrades.send_going_away();
        self.metrics.websocket_shutdown.inc_by(asked as u64);
        log::info!("shutting down: asked {asked} of {open} upgraded connections to close (1001)");
        let deadline = Instant::now() + CLOSE_HANDSHAKE_WAIT;
        while !self.upgrades.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cut = self.upgrades.shutdown_all();
        if cut > 0 {
            log::warn!("shutting down: {cut} upgraded connections did not close in time; cut");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frame_is_masked_and_carries_the_code() {
        let frame = masked_close_frame(GOING_AWAY);
        assert_eq!(frame[0], 0x88);
        assert_eq!(frame[1], 0x82);
        let code = u16::from_be_bytes([frame[6] ^ frame[2], frame[7] ^ frame[3]]);
        assert_eq!(code, 1001);
    }
}
