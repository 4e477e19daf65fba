//! Container health: active TCP checks of the containers that served traffic recently, plus the
//! passive signal of failed connects, in one state the request path reads without locks. An
//! unhealthy container is answered with a fast 503 instead of a wait for the connect timeout.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures_util::{stream, StreamExt};
use pingora::lb::health_check::{HealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::background::wait_or_shutdown;
use crate::config::HealthSection;
use crate::metrics::Metrics;

/// When each container last served a request, in whole seconds since start. Read and stamped on
/// every request, so without a lock; a container is added (copying the map) only on its first
/// request, and stale ones are dropped by the checker.
struct RecentlyUsed {
    since: Instant,
    window: Duration,
    last: ArcSwap<HashMap<SocketAddr, AtomicU64>>,
}

impl RecentlyUsed {
    fn new(window: Duration) -> Self {
        RecentlyUsed {
            since: Instant::now(),
            window,
            last: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    fn now(&self) -> u64 {
        self.since.elapsed().as_secs()
    }

    fn stamp(&self, addr: SocketAddr) {
        let now = self.now();
        if let Some(last) = self.last.load().get(&addr) {
            if last.load(Ordering::Relaxed) != now {
                last.store(now, Ordering::Relaxed);
            }
            return;
        }
        self.last.rcu(|map| {
            let mut map: HashMap<SocketAddr, AtomicU64> = map
                .iter()
                .map(|(a, t)| (*a, AtomicU64::new(t.load(Ordering::Relaxed))))
                .collect();
            map.insert(addr, AtomicU64::new(now));
            map
        });
    }

    /// Containers used within the window; the others are forgotten.
    fn current(&self) -> Vec<SocketAddr> {
        let oldest = self.now().saturating_sub(self.window.as_secs());
        let fresh = |t: &AtomicU64| t.load(Ordering::Relaxed) >= oldest;
        if self.last.load().values().any(|t| !fresh(t)) {
            self.last.rcu(|map| {
                map.iter()
                    .filter(|(_, t)| fresh(t))
                    .map(|(a, t)| (*a, AtomicU64::new(t.load(Ordering::Relaxed))))
                    .collect::<HashMap<_, _>>()
            });
        }
        self.last.load().keys().copied().collect()
    }

    fn contains(&self, addr: &SocketAddr) -> bool {
        self.last.load().contains_key(addr)
    }
}

pub struct Health {
    /// Containers that served a request within `recent_window`: the only ones checked.
    recent: RecentlyUsed,
    /// Usually empty; replaced whole when a container's state flips.
    unhealthy: ArcSwap<HashSet<SocketAddr>>,
    /// Consecutive failures per container; written by checks and failed connects only.
    failures: Mutex<HashMap<SocketAddr, u32>>,
    failures_to_unhealthy: u32,
    metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(settings: &HealthSection, metrics: Arc<Metrics>) -> Self {
        Health {
            recent: RecentlyUsed::new(settings.recent_window),
            unhealthy: ArcSwap::from_pointee(HashSet::new()),
            failures: Mutex::new(HashMap::new()),
            failures_to_unhealthy: settings.failures_to_unhealthy.max(1),
            metrics,
        }
    }

    /// Whether requests to `addr` should be answered without trying it.
    pub fn is_unhealthy(&self, addr: SocketAddr) -> bool {
        let unhealthy = self.unhealthy.load();
        !unhealthy.is_empty() && unhealthy.contains(&addr)
    }

    /// Records that `addr` is serving traffic, so the checker watches it.
    pub fn note_used(&self, addr: SocketAddr) {
        self.recent.stamp(addr);
    }

    /// One observation of `addr`, from an active check or a request's connect attempt.
    pub fn report(&self, addr: SocketAddr, ok: bool) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        let now_unhealthy = if ok {
            failures.remove(&addr);
            false
        } else {
            let count = failures.entry(addr).or_insert(0);
            *count += 1;
            *count >= self.failures_to_unhealthy
        };
        if now_unhealthy != self.is_unhealthy(addr) {
            self.unhealthy.rcu(|set| {
                let mut set = HashSet::clone(set);
                if now_unhealthy {
                    set.insert(addr);
                } else {
                    set.remove(&addr);
                }
                set
            });
            log::info!(
                "container {addr} is now {}",
                if ok { "healthy" } else { "unhealthy" }
            );
        }
        self.metrics
            .containers_unhealthy
            .set(self.unhealthy.load().len() as i64);
    }

    /// Forgets containers that no longer serve traffic, so state does not grow without bound.
    fn forget_idle(&self) {
        let idle: Vec<SocketAddr> = self
            .unhealthy
            .load()
            .iter()
            .filter(|a| !self.recent.contains(a))
            .copied()
            .collect();
        for addr in idle {
            self.report(addr, true);
        }
    }
}

/// Background task running the active checks.
pub struct HealthChecker {
    health: Arc<Health>,
    check: TcpHealthCheck,
    interval: Duration,
    concurrency: usize,
}

impl HealthChecker {
    pub fn new(health: Arc<Health>, settings: &HealthSection) -> Self {
        let mut check = TcpHealthCheck::default();
        check.peer_template.options.connection_timeout = Some(settings.timeout);
        HealthChecker {
            health,
            check,
            interval: settings.interval,
            concurrency: settings.concurrency.max(1),
        }
    }

    async fn check_all(&self) {
        let targets = self.health.recent.current();
        self.health.forget_idle();
        let results: Vec<(SocketAddr, bool)> = stream::iter(targets)
            .map(|addr| async move {
                let ok = match Backend::new(&addr.to_string()) {
                    Ok(backend) => self.check.check(&backend).await.is_ok(),
                    Err(_) => false,
                };
                (addr, ok)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (addr, ok) in results {
            let result = if ok { "ok" } else { "failed" };
            self.health
                .metrics
                .health_checks
                .with_label_values(&[result])
                .inc();
            self.health.report(addr, ok);
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while wait_or_shutdown(self.interval, &mut shutdown).await {
            self.check_all().await;
        }
    }
}
