//! The refresh task, the route table's only writer: a full load to start, then the store's
//! pushed changes applied as they come, with a full load again only as a periodic reconcile and
//! after a gap in the changes. A store that pushes nothing is loaded every `refresh_interval`. A
//! failed load keeps the last good table serving; `/readyz` reports when it falls too far behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::sleep_until;

use super::Resolver;
use crate::metrics::Metrics;
use crate::store::{Change, ChangeFeed, FeedEvent, StoreError};

/// How long the first load waits for the change feed to be positioned, so that no change falls
/// between them; past it the table loads anyway and loads again once the feed is ready.
const FIRST_POSITIONING: Duration = Duration::from_secs(5);

/// Changes kept during one full load, to apply again over it; past this the load is redone.
const MAX_REPLAY: usize = 100_000;

/// How often the lag gauge is brought up to date between events.
const LAG_TICK: Duration = Duration::from_secs(1);

/// Longest wait between full loads while the store keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Refresher {
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
}

/// What the refresh task knows of the feed between events.
struct Following {
    /// A feed is attached and delivering changes.
    live: bool,
    /// Changes may have been missed since the last full load started: being read to the end of
    /// every shard says nothing of the table until a full load has run.
    gap: bool,
    /// When the next full load starts.
    load_due: tokio::time::Instant,
    failures: u32,
}

impl Refresher {
    pub fn new(resolver: Arc<Resolver>, metrics: Arc<Metrics>) -> Self {
        Refresher { resolver, metrics }
    }

    /// One full load applied to the table, for callers with no feed (tests and benches).
    pub async fn refresh_once(&self) -> Result<(), StoreError> {
        self.load(&mut None, &mut Following::scanning()).await
    }

    /// One full load, applying the feed's events as they come meanwhile: the table keeps up
    /// with the streams during a long load, and the changes that arrive during it are applied
    /// again over its result, which may have read those records before they changed.
    async fn load(
        &self,
        feed: &mut Option<ChangeFeed>,
        following: &mut Following,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let gap_before = following.gap;
        following.gap = false;
        let mut replay = Replay::default();
        let store = self.resolver.store().clone();
        let load = store.load_all();
        tokio::pin!(load);
        let result = loop {
            tokio::select! {
                result = &mut load => break result,
                event = next_event(feed) => {
                    if let Some(changes) = self.on_event(event, feed, following).await {
                        replay.keep(changes, following);
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        self.metrics
            .store_call("load_all", result.is_ok(), elapsed.as_secs_f64());
        if result.is_err() {
            following.gap |= gap_before;
        }
        match result? {
            Some(snapshot) => {
                self.metrics.table_skipped.set(snapshot.skipped as i64);
                let corrections = self.resolver.reconcile(&snapshot, started);
                self.resolver.apply(&replay.changes).await;
                log::info!(
                    "route table loaded: sessions={} containers={} skipped={} corrected={} \
                     replayed={} took_ms={}",
                    snapshot.sessions.len(),
                    snapshot.containers.len(),
                    snapshot.skipped,
                    corrections.total(),
                    replay.changes.len(),
                    elapsed.as_millis()
                );
            }
            None => self.resolver.mark_refreshed(),
        }
        Ok(())
    }

    /// Handles one feed event; returns the changes it applied, for a load in progress to replay.
    async fn on_event(
        &self,
        event: Option<FeedEvent>,
        feed: &mut Option<ChangeFeed>,
        following: &mut Following,
    ) -> Option<Vec<Change>> {
        let now = tokio::time::Instant::now();
        match event {
            Some(FeedEvent::Changes(changes)) => {
                self.resolver.apply(&changes).await;
                return Some(changes);
            }
            Some(FeedEvent::CaughtUp(at)) if !following.gap => self.resolver.mark_current(at),
            Some(FeedEvent::CaughtUp(_)) => {}
            Some(FeedEvent::Gap(reason)) => {
                log::info!("route changes: {reason}; loading the table in full");
                following.live = true;
                following.gap = true;
                following.load_due = now;
            }
            Some(FeedEvent::Lost(reason)) => {
                log::warn!("route changes not followed ({reason}); loading in full meanwhile");
                following.lose(now, self.resolver.settings().refresh_interval);
            }
            None => {
                log::error!("the route change feed ended; loading in full from now on");
                *feed = None;
                following.lose(now, self.resolver.settings().refresh_interval);
            }
        }
        None
    }

    /// Brings the lag gauge up to date: the time since the table last held every change.
    fn report_lag(&self) {
        let lag = self.resolver.table_age().unwrap_or_default();
        self.metrics.stream_lag.set(lag.as_secs_f64());
    }
}

impl Following {
    fn scanning() -> Self {
        Following {
            live: false,
            gap: true,
            load_due: tokio::time::Instant::now(),
            failures: 0,
        }
    }

    fn lose(&mut self, now: tokio::time::Instant, refresh_interval: Duration) {
        self.live = false;
        self.gap = true;
        self.load_due = self.load_due.min(now + refresh_interval);
    }

    /// Schedules the next full load after one that ended with `ok`.
    fn loaded(&mut self, ok: bool, resolver: &Resolver) {
        let settings = resolver.settings();
        self.failures = if ok { 0 } else { self.failures + 1 };
        let wait = if !ok || !self.live {
            next_wait(settings.refresh_interval, self.failures)
        } else if self.gap {
            // A gap found during the load: the load may have missed its changes.
            Duration::ZERO
        } else {
            settings.reconcile_interval
        };
        self.load_due = tokio::time::Instant::now() + wait;
    }
}

/// Changes applied during a load, to apply again once the load's result is in.
#[derive(Default)]
struct Replay {
    changes: Vec<Change>,
}

impl Replay {
    fn keep(&mut self, changes: Vec<Change>, following: &mut Following) {
        if self.changes.len() + changes.len() > MAX_REPLAY {
            // Too much changed during this load to replay: load again once it ends.
            self.changes.clear();
            following.gap = true;
            return;
        }
        self.changes.extend(changes);
    }
}

/// The feed's next event; pending forever without a feed.
async fn next_event(feed: &mut Option<ChangeFeed>) -> Option<FeedEvent> {
    match feed {
        Some(feed) => feed.events.recv().await,
        None => std::future::pending().await,
    }
}

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
        let store = self.resolver.store().clone();
        let mut feed = store.follow(self.metrics.clone()).await;
        let changed = store.changes();
        let mut following = Following::scanning();
        if feed.is_some() {
            following.load_due += FIRST_POSITIONING;
        }
        let mut lag_tick = tokio::time::interval(LAG_TICK);
        loop {
            tokio::select! {
                _ = sleep_until(following.load_due) => {
                    let result = self.load(&mut feed, &mut following).await;
                    if let Err(e) = &result {
                        log::error!("route table load failed, keeping the last good table: {e}");
                    }
                    following.loaded(result.is_ok(), &self.resolver);
                }
                event = next_event(&mut feed) => {
                    self.on_event(event, &mut feed, &mut following).await;
                }
                _ = notified(&changed) => following.load_due = tokio::time::Instant::now(),
                _ = lag_tick.tick() => self.report_lag(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Waits for the store to say it changed; pending forever for stores that cannot tell.
async fn notified(changed: &Option<Arc<tokio::sync::Notify>>) {
    match changed {
        Some(changed) => changed.notified().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
