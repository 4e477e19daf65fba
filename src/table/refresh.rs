//! The refresh task: reloads the whole table from the store on an interval and swaps it in. A
//! failed load keeps the last good table serving; `/readyz` reports when it grows too old.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{Resolver, RouteTable};
use crate::metrics::Metrics;
use crate::store::StoreError;

pub struct Refresher {
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
}

impl Refresher {
    pub fn new(resolver: Arc<Resolver>, metrics: Arc<Metrics>) -> Self {
        Refresher { resolver, metrics }
    }

    /// One full load; on success the new table (if the store changed) is live when this returns.
    pub async fn refresh_once(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.resolver.store().load_all().await;
        let elapsed = started.elapsed();
        self.metrics
            .store_call("load_all", result.is_ok(), elapsed.as_secs_f64());
        match result? {
            Some(snapshot) => {
                let skipped = snapshot.skipped;
                self.metrics.table_skipped.set(skipped as i64);
                let table = RouteTable::from(snapshot);
                log::info!(
                    "route table loaded: sessions={} containers={} skipped={} took_ms={}",
                    table.session_count(),
                    table.container_count(),
                    skipped,
                    elapsed.as_millis()
                );
                self.resolver.install(table);
            }
            None => self.resolver.mark_refreshed(),
        }
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for Refresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let interval = self.resolver.settings().refresh_interval;
        loop {
            if let Err(e) = self.refresh_once().await {
                log::error!("route table refresh failed, keeping the last good table: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
