//! The refresh task, the route table's only writer: a full load to start, then the store's
//! pushed changes applied as they come, with a full load again only as a periodic reconcile and
//! after a gap in the changes. A store that pushes nothing is loaded every `refresh_interval`. A
//! failed load keeps the last good table serving; `/readyz` reports when it falls too far behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::{sleep_until, Instant as TokioInstant};

use super::{Resolver, ResolverSettings};
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

/// Full loads never start closer together than this, however many gaps come.
const MIN_LOAD_SPACING: Duration = Duration::from_secs(1);

/// What the refresh task knows of the feed between events.
struct Following {
    /// A feed is attached and delivering changes.
    live: bool,
    /// Changes may have been missed since the last full load started: being read to the end of
    /// every shard says nothing of the table until a full load started after the gap has ended.
    gap: bool,
    /// Gaps seen so far, so that a load knows whether one came while it ran.
    gaps: u64,
    /// When the next full load starts.
    load_due: TokioInstant,
    last_load: Option<TokioInstant>,
    failures: u32,
}

/// The refresh task's state across loads and events.
struct Run {
    feed: Option<ChangeFeed>,
    following: Following,
    lag_tick: tokio::time::Interval,
    shutdown: ShutdownWatch,
    started: Instant,
}

impl Run {
    fn new(feed: Option<ChangeFeed>, shutdown: ShutdownWatch) -> Self {
        let mut lag_tick = tokio::time::interval(LAG_TICK);
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Run {
            feed,
            following: Following::scanning(),
            lag_tick,
            shutdown,
            started: Instant::now(),
        }
    }
}

impl Refresher {
    pub fn new(resolver: Arc<Resolver>, metrics: Arc<Metrics>) -> Self {
        Refresher { resolver, metrics }
    }

    /// One full load applied to the table, for callers with no feed (tests and benches).
    pub async fn refresh_once(&self) -> Result<(), StoreError> {
        let (_keep, shutdown) = tokio::sync::watch::channel(false);
        self.load(&mut Run::new(None, shutdown)).await
    }

    /// One full load, applying the feed's events as they come meanwhile: the table keeps up
    /// with the streams during a long load, and the changes that arrive during it are applied
    /// again over its result, which may have read those records before they changed. Returns
    /// early, with nothing applied, on shutdown.
    async fn load(&self, run: &mut Run) -> Result<(), StoreError> {
        let started = Instant::now();
        run.following.last_load = Some(TokioInstant::now());
        let gaps_before = run.following.gaps;
        let mut replay = Replay::default();
        let store = self.resolver.store().clone();
        let load = store.load_all();
        tokio::pin!(load);
        let result = loop {
            tokio::select! {
                result = &mut load => break result,
                event = next_event(&mut run.feed) => {
                    if let Some(changes) = self.on_event(event, run).await {
                        replay.keep(changes, &mut run.following);
                    }
                }
                _ = run.lag_tick.tick() => self.report_lag(run),
                _ = run.shutdown.changed() => return Ok(()),
            }
        };
        let elapsed = started.elapsed();
        self.metrics
            .store_call("load_all", result.is_ok(), elapsed.as_secs_f64());
        let Some(snapshot) = result? else {
            self.resolver.mark_refreshed();
            return Ok(());
        };
        self.metrics.table_skipped.set(snapshot.skipped as i64);
        if replay.overflowed {
            log::warn!("too many changes during the table load to replay over it; loading again");
            return Ok(());
        }
        if run.following.gaps == gaps_before {
            run.following.gap = false;
        }
        let corrections = self
            .resolver
            .reconcile(snapshot.clone(), started, &replay.changes);
        log::info!(
            "route table loaded: sessions={} containers={} skipped={} corrected={} replayed={} \
             took_ms={}",
            snapshot.sessions.len(),
            snapshot.containers.len(),
            snapshot.skipped,
            corrections.total(),
            replay.changes.len(),
            elapsed.as_millis()
        );
        Ok(())
    }

    /// Handles one feed event; returns the changes it applied, for a load in progress to replay.
    async fn on_event(&self, event: Option<FeedEvent>, run: &mut Run) -> Option<Vec<Change>> {
        let following = &mut run.following;
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
                following.note_gap();
                following.load_due = following.soonest_load();
            }
            Some(FeedEvent::Lost(reason)) => {
                log::warn!("route changes not followed ({reason}); loading in full meanwhile");
                following.lose(self.resolver.settings().refresh_interval);
            }
            None => {
                log::error!("the route change feed ended; loading in full from now on");
                run.feed = None;
                following.lose(self.resolver.settings().refresh_interval);
            }
        }
        None
    }

    /// Brings the lag gauge up to date: the time since the table last held every change, or
    /// since start while it never has.
    fn report_lag(&self, run: &Run) {
        self.resolver.free_retired();
        let lag = self
            .resolver
            .table_age()
            .unwrap_or_else(|| run.started.elapsed());
        self.metrics.stream_lag.set(lag.as_secs_f64());
    }
}

impl Following {
    fn scanning() -> Self {
        Following {
            live: false,
            gap: true,
            gaps: 0,
            load_due: TokioInstant::now(),
            last_load: None,
            failures: 0,
        }
    }

    fn note_gap(&mut self) {
        self.gap = true;
        self.gaps += 1;
    }

    fn lose(&mut self, refresh_interval: Duration) {
        self.live = false;
        self.note_gap();
        self.load_due = self.load_due.min(TokioInstant::now() + refresh_interval);
    }

    /// Now, or [`MIN_LOAD_SPACING`] after the last load started.
    fn soonest_load(&self) -> TokioInstant {
        let now = TokioInstant::now();
        self.last_load
            .map_or(now, |at| (at + MIN_LOAD_SPACING).max(now))
    }

    /// Schedules the next full load after one that ended with `ok`.
    fn loaded(&mut self, ok: bool, settings: &ResolverSettings) {
        self.failures = if ok { 0 } else { self.failures + 1 };
        self.load_due = if !ok || !self.live {
            TokioInstant::now() + next_wait(settings.refresh_interval, self.failures)
        } else if self.gap {
            // A gap came during the load: the load may have missed its changes.
            self.soonest_load()
        } else {
            TokioInstant::now() + settings.reconcile_interval
        };
    }
}

/// Changes applied during a load, to apply again once the load's result is in.
#[derive(Default)]
struct Replay {
    changes: Vec<Change>,
    /// More came than [`MAX_REPLAY`]: the load's result cannot be made current, and is dropped.
    overflowed: bool,
}

impl Replay {
    fn keep(&mut self, changes: Vec<Change>, following: &mut Following) {
        if self.overflowed {
            return;
        }
        if self.changes.len() + changes.len() > MAX_REPLAY {
            self.overflowed = true;
            self.changes = Vec::new();
            following.note_gap();
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
    async fn start(&self, shutdown: ShutdownWatch) {
        let store = self.resolver.store().clone();
        let feed = store.follow(self.metrics.clone()).await;
        let changed = store.changes();
        let mut run = Run::new(feed, shutdown);
        if run.feed.is_some() {
            run.following.load_due += FIRST_POSITIONING;
        }
        loop {
            tokio::select! {
                _ = sleep_until(run.following.load_due) => {
                    let result = self.load(&mut run).await;
                    if let Err(e) = &result {
                        log::error!("route table load failed, keeping the last good table: {e}");
                    }
                    run.following.loaded(result.is_ok(), self.resolver.settings());
                }
                event = next_event(&mut run.feed) => {
                    self.on_event(event, &mut run).await;
                }
                _ = notified(&changed) => run.following.load_due = TokioInstant::now(),
                _ = run.lag_tick.tick() => self.report_lag(&run),
                _ = run.shutdown.changed() => return,
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
