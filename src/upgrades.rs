//! Open upgraded (WebSocket) connections and what they are connected to. When the table moves a
//! session to another container or address, its sockets to the old one are shut down, so the
//! browser's dev client reconnects through the new route instead of talking to a dead container.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::Metrics;
use crate::table::Resolver;

/// How often the watcher checks whether routes changed; sockets to a replaced container close
/// within about this long of the table change.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

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
}

/// Background task that closes upgraded connections to replaced containers.
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
                _ = shutdown.changed() => return,
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
