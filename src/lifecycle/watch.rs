//! Waiting for a session to become routable. The waking page sends one request that the router
//! holds; while anyone waits, a background poller re-reads that session from the store every
//! `[wake] watch_interval`, so the wait ends within about that long of the container being
//! written routable, however long the table's full refresh takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::drain::Draining;
use crate::table::{Resolution, Resolver};

/// How often a waiter looks at the table again; the poller's reads refresh it.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// A session someone waits for.
#[derive(Debug, Clone)]
struct Watched {
    client: String,
    thread: String,
    waiters: usize,
}

/// The sessions being waited for.
#[derive(Default)]
pub struct Watch {
    watched: Mutex<HashMap<String, Watched>>,
}

impl Watch {
    /// Waits until the session's container is up (or the session settles into anything else a
    /// reload should show, such as gone or refused), up to `limit`; true if it did. Gives up at
    /// once when the process starts draining: the page asks again, of a router that stays.
    pub async fn until_routable(
        &self,
        resolver: &Resolver,
        client: &str,
        thread: &str,
        limit: Duration,
        draining: &Draining,
    ) -> bool {
        let key = resolver.session_key(client, thread);
        let _watching = self.enter(&key, client, thread);
        let deadline = Instant::now() + limit;
        loop {
            let resolved = resolver.resolve(client, thread, None).await;
            let waiting = matches!(
                resolved.resolution,
                Resolution::Stopped
                    | Resolution::Absent
                    | Resolution::Starting
                    | Resolution::StoreUnavailable
            );
            if !waiting {
                return true;
            }
            if Instant::now() >= deadline || draining.is_set() {
                return false;
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Counts a waiter in until the guard drops, however the wait ends (a client that goes
    /// away drops the request's future mid-wait).
    fn enter<'w>(&'w self, key: &str, client: &str, thread: &str) -> Waiting<'w> {
        if let Ok(mut watched) = self.watched.lock() {
            watched
                .entry(key.to_owned())
                .or_insert_with(|| Watched {
                    client: client.to_owned(),
                    thread: thread.to_owned(),
                    waiters: 0,
                })
                .waiters += 1;
        }
        Waiting {
            watch: self,
            key: key.to_owned(),
        }
    }

    fn leave(&self, key: &str) {
        if let Ok(mut watched) = self.watched.lock() {
            if let Some(w) = watched.get_mut(key) {
                w.waiters -= 1;
                if w.waiters == 0 {
                    watched.remove(key);
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<Watched> {
        self.watched
            .lock()
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// One waiter, counted in [`Watch`] while it lives.
struct Waiting<'w> {
    watch: &'w Watch,
    key: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.watch.leave(&self.key);
    }
}

/// Re-reads each waited-for session from the store, so waiters see it as soon as it is routable.
pub struct WatchPoller {
    watch: Arc<Watch>,
    resolver: Arc<Resolver>,
    interval: Duration,
}

impl WatchPoller {
    pub fn new(watch: Arc<Watch>, resolver: Arc<Resolver>, interval: Duration) -> Self {
        WatchPoller {
            watch,
            resolver,
            interval,
        }
    }
}

#[async_trait]
impl BackgroundService for WatchPoller {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            for w in self.watch.snapshot() {
                // A read straight from the store; its answer is kept until the next full load.
                self.resolver.reresolve(&w.client, &w.thread).await;
            }
        }
    }
}
