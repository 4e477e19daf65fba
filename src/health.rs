//! Container health: active TCP checks of the containers that served traffic recently, plus the
//! passive signal of failed connects, in one state the request path reads without locks. An
//! unhealthy container is answered with a fast 503 instead of a wait for the connect timeout.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures_util::{stream, StreamExt};
use pingora::lb::health_check::{HealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::HealthSection;
use crate::metrics::Metrics;

pub struct Health {
    /// Containers that served a request within `recent_window`: the only ones checked.
    recent: moka::sync::Cache<SocketAddr, ()>,
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
            recent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(settings.recent_window)
                .build(),
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
        if self.recent.get(&addr).is_none() {
            self.recent.insert(addr, ());
        }
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
            .filter(|a| !self.recent.contains_key(*a))
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
        self.health.forget_idle();
        let targets: Vec<SocketAddr> = self.health.recent.iter().map(|(a, _)| *a).collect();
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
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            self.check_all().await;
        }
    }
}
