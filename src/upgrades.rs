//! Open upgraded (WebSocket) connections and what they are connected to. When the table moves a
//! session to another container or address, its connections to the old one are closed (1012,
//! service restart), so the browser's dev client reconnects through the new route instead of
//! talking to a dead container. When the process shuts down, each one is closed with 1001 (going
//! away) instead of being cut when Pingora drops its tasks at the end of the grace period. When a
//! session's access is revoked (its access generation raised, or it turned private), the
//! connections it no longer lets in are closed with 1008 (policy violation).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::access::{Admitted, Gate};
use crate::metrics::Metrics;
use crate::table::Resolver;
use crate::ws_socket::{CloseHandle, GOING_AWAY, POLICY_VIOLATION, SERVICE_RESTART};

/// How often the watcher checks whether routes changed; sockets to a replaced container close
/// within about this long of the table change.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// At shutdown, how long the closes get to finish before the watcher stops waiting for them.
/// Well inside the grace period, which keeps the process (and these tasks) alive.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What an upgraded connection is connected to, and how it was let in.
#[derive(Debug, Clone)]
pub struct Upgraded {
    pub session_key: String,
    pub container_id: Arc<str>,
    pub addr: SocketAddr,
    pub admitted: Admitted,
}

struct Entry {
    upgraded: Upgraded,
    close: CloseHandle,
}

/// Connections closed by one sweep, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub replaced: usize,
    pub revoked: usize,
}

#[derive(Default)]
pub struct Upgrades {
    next_id: AtomicU64,
    /// Touched only when a connection is upgraded or ends, never per request.
    open: Mutex<HashMap<u64, Entry>>,
}

impl Upgrades {
    /// Registers an upgraded connection; returns the id to [`Upgrades::remove`] it with.
    pub fn register(&self, upgraded: Upgraded, close: CloseHandle) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry { upgraded, close };
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

    /// Closes every connection whose session now routes elsewhere (1012, service restart) or no
    /// longer lets it in (1008, policy violation).
    pub fn close_changed(&self, resolver: &Resolver, gate: &Gate) -> Closed {
        let mut closed = Closed::default();
        let Ok(mut open) = self.open.lock() else {
            return closed;
        };
        let mut doomed: Vec<(u64, u16)> = Vec::new();
        for (id, entry) in open.iter() {
            let e = &entry.upgraded;
            let Some(now) = resolver.current(&e.session_key) else {
                continue;
            };
            if gate.revokes(now.access, e.admitted) {
                closed.revoked += 1;
                doomed.push((*id, POLICY_VIOLATION));
            } else if now.container_id != e.container_id || now.addr != Some(e.addr) {
                closed.replaced += 1;
                doomed.push((*id, SERVICE_RESTART));
            }
        }
        for (id, code) in doomed {
            if let Some(entry) = open.remove(&id) {
                entry.close.close(code);
            }
        }
        closed
    }

    /// Upgraded connections of one session open now.
    pub fn count_for(&self, session_key: &str) -> usize {
        self.open.lock().map_or(0, |open| {
            open.values()
                .filter(|e| e.upgraded.session_key == session_key)
                .count()
        })
    }

    /// Upgraded connections open now.
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every connection with 1001 (going away): the browser gets a close frame between
    /// two whole frames, and its dev client reconnects, through the balancer, to an instance
    /// that is not shutting down. Returns how many.
    pub fn close_all(&self) -> usize {
        let Ok(open) = self.open.lock() else {
            return 0;
        };
        for entry in open.values() {
            entry.close.close(GOING_AWAY);
        }
        open.len()
    }
}

/// Background task that closes upgraded connections to replaced containers, and all of them
/// when the process shuts down.
pub struct UpgradeWatcher {
    upgrades: Arc<Upgrades>,
    resolver: Arc<Resolver>,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
}

impl UpgradeWatcher {
    pub fn new(
        upgrades: Arc<Upgrades>,
        resolver: Arc<Resolver>,
        gate: Arc<Gate>,
        metrics: Arc<Metrics>,
    ) -> Self {
        UpgradeWatcher {
            upgrades,
            resolver,
            gate,
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
            let closed = self.upgrades.close_changed(&self.resolver, &self.gate);
            if closed.replaced > 0 {
                let n = closed.replaced;
                log::info!("closed {n} upgraded connections to replaced containers");
                self.metrics.websocket_replaced.inc_by(n as u64);
            }
            if closed.revoked > 0 {
                let n = closed.revoked;
                log::info!("closed {n} upgraded connections whose access was revoked");
                self.metrics.websocket_revoked.inc_by(n as u64);
            }
        }
    }
}

impl UpgradeWatcher {
    /// Pingora leaves upgraded connections running through the grace period and then drops
    /// them without a close frame. Closing them here, at the start of shutdown, gives browsers
    /// a proper close and lets them reconnect at once, instead of after the grace period.
    async fn close_for_shutdown(&self) {
        let closed = self.upgrades.close_all();
        if closed == 0 {
            return;
        }
        self.metrics.websocket_shutdown.inc_by(closed as u64);
        log::info!("shutting down: closing {closed} upgraded connections (1001)");
        let deadline = Instant::now() + CLOSE_WAIT;
        while !self.upgrades.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.upgrades.len();
        if left > 0 {
            log::warn!(
                "shutting down: {left} upgraded connections still open after {CLOSE_WAIT:?}"
            );
        }
    }
}
