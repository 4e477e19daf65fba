//! Session activity: every routed request and every WebSocket read marks its session, and at most
//! once per `[activity] interval` per session this router queues a write of `lastActivityAt`. The
//! queue is bounded and only tried, never waited on: a request pays a map lookup and, once an
//! interval, a `try_send`. A background writer drains it into conditional store writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use super::epoch_secs;
use crate::metrics::Metrics;
use crate::store::{RouteStore, Stamp};

/// Writes in flight at once: enough to keep up with a slow store, few enough not to flood it.
const CONCURRENT_WRITES: usize = 8;

/// When a session was last used here, and when its last write was queued (epoch seconds).
#[derive(Debug, Default)]
struct Seen {
    used: AtomicU64,
    queued: AtomicU64,
}

/// One activity write: the session and its time.
type Write = (Box<str>, u64);

/// Records activity and queues its writes.
pub struct Activity {
    interval: u64,
    seen: DashMap<Box<str>, Seen>,
    queue: mpsc::Sender<Write>,
    /// Taken by the writer when it starts.
    pending: Mutex<Option<mpsc::Receiver<Write>>>,
    metrics: Arc<Metrics>,
}

impl Activity {
    pub fn new(interval: Duration, queue: usize, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(queue);
        Activity {
            interval: interval.as_secs().max(1),
            seen: DashMap::new(),
            queue: tx,
            pending: Mutex::new(Some(rx)),
            metrics,
        }
    }

    /// Marks the session of store key `key` active now.
    pub fn touch(&self, key: &str) {
        let now = epoch_secs();
        match self.seen.get(key) {
            Some(seen) => {
                seen.used.fetch_max(now, Ordering::Relaxed);
                let queued = seen.queued.load(Ordering::Relaxed);
                let due = now >= queued + self.interval;
                // Of the requests that find the write due, one queues it.
                if !due
                    || seen
                        .queued
                        .compare_exchange(queued, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_err()
                {
                    return;
                }
            }
            None => {
                let seen = Seen {
                    used: AtomicU64::new(now),
                    queued: AtomicU64::new(now),
                };
                self.seen.insert(key.into(), seen);
            }
        }
        if self.queue.try_send((key.into(), now)).is_err() {
            self.metrics.activity_write("dropped");
        }
    }

    /// When the session was last used through this router (epoch seconds).
    pub fn last_used(&self, key: &str) -> Option<u64> {
        self.seen.get(key).map(|s| s.used.load(Ordering::Relaxed))
    }

    /// Forgets sessions unused for an interval: their next use queues a write anyway.
    fn prune(&self) {
        let horizon = epoch_secs().saturating_sub(self.interval);
        self.seen
            .retain(|_, seen| seen.used.load(Ordering::Relaxed) >= horizon);
    }
}

/// Drains the activity queue into conditional writes of `lastActivityAt`.
pub struct ActivityWriter {
    activity: Arc<Activity>,
    store: Arc<dyn RouteStore>,
    metrics: Arc<Metrics>,
}

impl ActivityWriter {
    pub fn new(activity: Arc<Activity>, store: Arc<dyn RouteStore>, metrics: Arc<Metrics>) -> Self {
        ActivityWriter {
            activity,
            store,
            metrics,
        }
    }

    async fn write(&self, (key, at): Write) {
        // The condition `lastActivityAt < at` keeps a later stamp from another router.
        let result = match self.store.stamp(&key, Stamp::LastActivity, at, at).await {
            Ok(true) => "written",
            Ok(false) => "skipped",
            Err(e) => {
                log::debug!("activity write for {key} failed: {e}");
                "failed"
            }
        };
        self.metrics.activity_write(result);
    }
}

#[async_trait]
impl BackgroundService for ActivityWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(rx) = self.activity.pending.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let writes = tokio_stream_of(rx).for_each_concurrent(CONCURRENT_WRITES, |w| self.write(w));
        let interval = Duration::from_secs(self.activity.interval);
        let prune = async {
            loop {
                tokio::time::sleep(interval).await;
                self.activity.prune();
            }
        };
        tokio::select! {
            _ = writes => {}
            _ = prune => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The receiver as a stream, without another crate for it.
fn tokio_stream_of(rx: mpsc::Receiver<Write>) -> impl futures_util::Stream<Item = Write> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_interval_per_session_and_a_full_queue_drops() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let activity = Activity::new(Duration::from_secs(60), 1, metrics.clone());
        for _ in 0..100 {
            activity.touch("acme-t1");
        }
        activity.touch("acme-t2");
        let rx = activity.pending.lock().unwrap().take().unwrap();
        assert_eq!(rx.len(), 1, "one queued, t2's dropped by the full queue");
        let dropped = metrics.encode();
        let text = String::from_utf8(dropped).unwrap();
        assert!(text.contains("session_router_activity_writes_total{result=\"dropped\"} 1"));
        assert!(activity.last_used("acme-t1").is_some());
        assert!(activity.last_used("acme-t9").is_none());
    }
}
