//! Session activity: every routed request and every WebSocket read marks its session, and at most
//! once per `[activity] interval` per session this router queues a write of `lastActivityAt`. The
//! queue is bounded and only tried, never waited on: a request pays a map lookup and, once an
//! interval, a `try_send`. A background writer drains it into conditional store writes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::mapref::entry::Entry;
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
    /// Writes queued or being written.
    outstanding: AtomicUsize,
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
            outstanding: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Marks the session of store key `key` active now.
    pub fn touch(&self, key: &str) {
        let now = epoch_secs();
        let queue = match self.seen.get(key) {
            Some(seen) => self.due(&seen, now),
            // Of first touches at once, the one that inserts queues the write; the others find
            // it there.
            None => match self.seen.entry(key.into()) {
                Entry::Occupied(seen) => self.due(seen.get(), now),
                Entry::Vacant(slot) => {
                    slot.insert(Seen {
                        used: AtomicU64::new(now),
                        queued: AtomicU64::new(now),
                    });
                    true
                }
            },
        };
        if !queue {
            return;
        }
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send((key.into(), now)).is_err() {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            self.metrics.activity_write("dropped");
        }
    }

    /// Records a use at `now`; true for the one caller that is to queue the write now due.
    fn due(&self, seen: &Seen, now: u64) -> bool {
        seen.used.fetch_max(now, Ordering::Relaxed);
        let queued = seen.queued.load(Ordering::Relaxed);
        now >= queued + self.interval
            && seen
                .queued
                .compare_exchange(queued, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
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
        self.activity.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stamp not yet written: a graceful shutdown waits for it, since the session's last use
/// here would otherwise reach the store only through another router, if ever.
impl crate::drain::InFlight for Activity {
    fn in_flight(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }
}

#[async_trait]
impl BackgroundService for ActivityWriter {
    // Runs past the shutdown watch on purpose: requests still in flight queue stamps, and the
    // process exits once they are written (`ShutdownWatcher`) or at the end of the grace period.
    async fn start(&self, _shutdown: ShutdownWatch) {
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
        use crate::drain::InFlight;
        assert_eq!(
            activity.in_flight(),
            1,
            "a shutdown waits for the queued one only"
        );
        let dropped = metrics.encode();
        let text = String::from_utf8(dropped).unwrap();
        assert!(text.contains("session_router_activity_writes_total{result=\"dropped\"} 1"));
        assert!(activity.last_used("acme-t1").is_some());
        assert!(activity.last_used("acme-t9").is_none());
    }

    #[test]
    fn first_touches_on_several_threads_at_once_queue_one_write() {
        use std::sync::atomic::AtomicUsize;
        const KEYS: usize = 300;
        const THREADS: usize = 2;
        let metrics = Arc::new(Metrics::new().unwrap());
        let activity = Activity::new(Duration::from_secs(60), KEYS * THREADS, metrics);
        let keys: Vec<String> = (0..KEYS).map(|k| format!("acme-t{k}")).collect();
        // Each thread spins until all are at key k, then touches it at once.
        let arrived = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for (k, key) in keys.iter().enumerate() {
                        arrived.fetch_add(1, Ordering::AcqRel);
                        while arrived.load(Ordering::Acquire) < (k + 1) * THREADS {
                            std::hint::spin_loop();
                        }
                        activity.touch(key);
                    }
                });
            }
        });
        let rx = activity.pending.lock().unwrap().take().unwrap();
        assert_eq!(rx.len(), KEYS, "one write queued per session");
    }
}
