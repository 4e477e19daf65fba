//! The refresh task: reloads the whole table from the store on an interval and swaps it in. A
//! failed load keeps the last good table serving; `/readyz` reports when it grows too old.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{Resolver, RouteTable};
use crate::background::{run_on_own_thread, set_priority, wait_or_shutdown, Priority};
use crate::metrics::Metrics;
use crate::store::{StoreError, StoreSnapshot};

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
        let result = self.load().await;
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
                let replaced = self.resolver.install(table, started);
                retire(replaced).await;
            }
            None => self.resolver.mark_refreshed(),
        }
        Ok(())
    }

    /// Loads yield entirely to requests while the table is fresh. One still waiting for idle CPU
    /// when the table reaches half its staleness limit is redone at nice 19, which even a
    /// saturated core gives about 1.5% of its time: a 100k-session load then finishes in seconds,
    /// before `/readyz` would call the router unready, while costing requests little. The first
    /// table, and a load that starts past half the limit, run at nice 10.
    async fn load(&self) -> Result<Option<Arc<StoreSnapshot>>, StoreError> {
        let store = self.resolver.store();
        let Some(budget) = self.idle_budget() else {
            return store.load_all(Priority::Low).await;
        };
        match tokio::time::timeout(budget, store.load_all(Priority::Idle)).await {
            Ok(result) => result,
            Err(_) => {
                log::info!(
                    "no idle CPU for the table load in {}ms; loading at the lowest priority instead",
                    budget.as_millis()
                );
                store.load_all(Priority::Least).await
            }
        }
    }

    /// How long a load may wait for idle CPU: until the table is half its staleness limit old.
    fn idle_budget(&self) -> Option<Duration> {
        let limit = self.resolver.settings().max_staleness / 2;
        let age = self.resolver.table_age()?;
        limit.checked_sub(age).filter(|left| !left.is_zero())
    }
}

/// How long a replaced table may stay in use by requests before the refresh task stops waiting
/// to free it itself.
const RETIRE_WAIT: Duration = Duration::from_secs(2);

/// Frees a replaced table here rather than in whichever request lets go of it last: freeing a
/// table of many sessions takes milliseconds, which a request would add to its latency. Requests
/// hold a table only for the length of one lookup (longer only while a miss waits on the store).
/// The records are freed on a thread behind request serving, a few at a time, and the memory
/// goes back to the system after them.
async fn retire(table: Arc<RouteTable>) {
    let deadline = Instant::now() + RETIRE_WAIT;
    while Arc::strong_count(&table) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let records = RouteTable::into_sole_snapshot(table);
    run_on_own_thread("table free", Priority::Least, move |yielder| {
        if let Some(records) = records {
            records.drop_gradually(yielder);
        }
        crate::background::release_free_memory();
    })
    .await;
}

/// Longest wait between full loads while the store keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Wait before the next full load after `failures` failures in a row: the interval doubled per
/// failure up to [`MAX_BACKOFF`], with jitter over its upper half so a fleet does not retry in
/// step against a store that is struggling.
fn next_wait(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let ceiling = interval
        .saturating_mul(1 << failures.min(16))
        .min(MAX_BACKOFF.max(interval));
    let half = ceiling / 2;
    half + half.mul_f64(fastrand::f64())
}

#[async_trait]
impl BackgroundService for Refresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // This service has a runtime thread of its own, where stores without threads of their
        // own decode. Never the idle class: it could not leave it again when loads fall behind.
        set_priority(Priority::Low);
        let interval = self.resolver.settings().refresh_interval;
        let changes = self.resolver.store().changes();
        let mut failures = 0;
        loop {
            match self.refresh_once().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    log::error!("route table refresh failed, keeping the last good table: {e}");
                }
            }
            let wait = next_wait(interval, failures);
            let go_on = match &changes {
                Some(changed) => tokio::select! {
                    _ = tokio::time::sleep(wait) => true,
                    _ = changed.notified() => true,
                    _ = shutdown.changed() => false,
                },
                None => wait_or_shutdown(wait, &mut shutdown).await,
            };
            if !go_on {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionKeyTemplate;
    use crate::store::{ContainerRecord, FileStore, RouteStore, SessionRecord, Stamp};
    use crate::table::ResolverSettings;
    use crate::upstream::AddressPolicy;
    use std::sync::Mutex;

    fn settings(max_staleness: Duration) -> ResolverSettings {
        ResolverSettings {
            session_key: SessionKeyTemplate::parse("{client}-{thread}").unwrap(),
            container_port: 4321,
            refresh_interval: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(2),
            max_staleness,
            policy: AddressPolicy::new(vec![]),
            miss_limits: crate::config::StoreSection::default().miss_limits(),
        }
    }

    fn refresher_over(store: Arc<dyn RouteStore>, max_staleness: Duration) -> Refresher {
        let metrics = Arc::new(Metrics::new().unwrap());
        let resolver = Arc::new(Resolver::new(
            store,
            metrics.clone(),
            settings(max_staleness),
        ));
        Refresher::new(resolver, metrics)
    }

    fn refresher(max_staleness: Duration) -> Refresher {
        refresher_over(
            Arc::new(FileStore::new("/nonexistent".into())),
            max_staleness,
        )
    }

    /// A store on a machine with no idle CPU: loads in the idle class never finish.
    #[derive(Default)]
    struct NoIdleCpu {
        asked: Mutex<Vec<Priority>>,
    }

    #[async_trait]
    impl RouteStore for NoIdleCpu {
        async fn load_all(
            &self,
            priority: Priority,
        ) -> Result<Option<Arc<StoreSnapshot>>, StoreError> {
            self.asked.lock().unwrap().push(priority);
            if priority == Priority::Idle {
                std::future::pending::<()>().await;
            }
            Ok(Some(Arc::default()))
        }

        async fn get_session(&self, _: &str) -> Result<Option<SessionRecord>, StoreError> {
            Ok(None)
        }

        async fn get_container(&self, _: &str) -> Result<Option<ContainerRecord>, StoreError> {
            Ok(None)
        }

        async fn stamp(&self, _: &str, _: Stamp, _: u64, _: u64) -> Result<bool, StoreError> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn a_load_starved_of_idle_cpu_is_redone_before_the_table_goes_stale() {
        let store = Arc::new(NoIdleCpu::default());
        let refresher = refresher_over(store.clone(), Duration::from_millis(400));
        refresher.resolver.mark_refreshed();
        let refreshed = tokio::time::timeout(Duration::from_secs(5), refresher.refresh_once());
        refreshed
            .await
            .expect("not stuck behind the idle load")
            .unwrap();
        assert_eq!(
            *store.asked.lock().unwrap(),
            [Priority::Idle, Priority::Least]
        );
        let age = refresher.resolver.table_age().unwrap();
        assert!(age < Duration::from_millis(100), "a new table: {age:?}");
    }

    #[test]
    fn loads_wait_for_idle_cpu_only_until_half_the_staleness_limit() {
        let refresher = refresher(Duration::from_millis(400));
        assert_eq!(refresher.idle_budget(), None, "the first table");
        refresher.resolver.mark_refreshed();
        let budget = refresher.idle_budget().expect("a fresh table");
        assert!(budget <= Duration::from_millis(200), "{budget:?}");
        assert!(budget > Duration::from_millis(100), "{budget:?}");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(refresher.idle_budget(), None, "past half the limit");
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let interval = Duration::from_secs(5);
        assert_eq!(next_wait(interval, 0), interval);
        for failures in 1..40 {
            let wait = next_wait(interval, failures);
            let ceiling = (interval * 2u32.pow(failures.min(16))).min(MAX_BACKOFF);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{failures}: {wait:?}"
            );
        }
        let long = Duration::from_secs(60);
        assert!(
            next_wait(long, 3) <= long,
            "never above the interval when it exceeds the cap"
        );
    }
}
