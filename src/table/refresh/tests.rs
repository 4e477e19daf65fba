use std::sync::Mutex;

use tokio::sync::{mpsc, Semaphore};

use super::*;
use crate::config::SessionKeyTemplate;
use crate::store::fixtures::{running, session};
use crate::store::{ContainerRecord, RouteStore, SessionRecord, Stamp, StoreSnapshot};
use crate::table::{Resolution, ResolverSettings};
use crate::upstream::AddressPolicy;

fn settings() -> ResolverSettings {
    ResolverSettings {
        session_key: SessionKeyTemplate::parse("{client}-{thread}").unwrap(),
        container_port: 4321,
        refresh_interval: Duration::from_millis(200),
        reconcile_interval: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(2),
        max_staleness: Duration::from_secs(60),
        policy: AddressPolicy::new(vec!["10.0.0.0/8".parse().unwrap()]),
        miss_limits: crate::config::StoreSection::default().miss_limits(),
    }
}

fn moved(id: &str, ip: &str) -> Change {
    Change::Container {
        id: id.into(),
        record: Some(running(ip)),
    }
}

/// A store whose full loads return what the test put in, each only once the test lets it
/// finish, and whose feed the test writes.
struct Scripted {
    contents: Mutex<StoreSnapshot>,
    loads_allowed: Semaphore,
    started: Mutex<u32>,
    loads: Mutex<u32>,
    feed: Mutex<Option<mpsc::Receiver<FeedEvent>>>,
}

impl Scripted {
    fn new(sessions: &[(&str, &str)], containers: &[(&str, &str)]) -> Arc<Self> {
        let mut s = StoreSnapshot::default();
        for (k, c) in sessions {
            s.sessions.insert((*k).into(), session(c));
        }
        for (id, ip) in containers {
            s.containers.insert((*id).into(), running(ip));
        }
        Arc::new(Scripted {
            contents: Mutex::new(s),
            loads_allowed: Semaphore::new(0),
            started: Mutex::new(0),
            loads: Mutex::new(0),
            feed: Mutex::new(None),
        })
    }

    fn with_feed(self: Arc<Self>) -> (Arc<Self>, mpsc::Sender<FeedEvent>) {
        let (tx, rx) = mpsc::channel(16);
        *self.feed.lock().unwrap() = Some(rx);
        (self, tx)
    }

    fn loads(&self) -> u32 {
        *self.loads.lock().unwrap()
    }
}

#[async_trait]
impl RouteStore for Scripted {
    async fn load_all(&self) -> Result<Option<Arc<StoreSnapshot>>, StoreError> {
        let snapshot = self.contents.lock().unwrap().clone();
        *self.started.lock().unwrap() += 1;
        self.loads_allowed.acquire().await.unwrap().forget();
        *self.loads.lock().unwrap() += 1;
        Ok(Some(Arc::new(snapshot)))
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

    async fn follow(&self, _: Arc<Metrics>) -> Option<ChangeFeed> {
        let rx = self.feed.lock().unwrap().take()?;
        Some(ChangeFeed::new(rx, tokio::spawn(async {})))
    }
}

/// Starts the refresh task over `store`; it stops when the returned sender is dropped.
fn start(store: Arc<Scripted>) -> (Arc<Resolver>, tokio::sync::watch::Sender<bool>) {
    let metrics = Arc::new(Metrics::new().unwrap());
    let resolver = Arc::new(Resolver::new(store, metrics.clone(), settings()));
    let refresher = Refresher::new(resolver.clone(), metrics);
    let (stop, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move { refresher.start(watch).await });
    (resolver, stop)
}

async fn address_of(resolver: &Resolver, thread: &str) -> Option<String> {
    match resolver.resolve("a", thread, None).await.resolution {
        Resolution::Ready(target) => Some(target.addr.ip().to_string()),
        _ => None,
    }
}

/// Polls `check` for up to two seconds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn changes_during_a_load_are_applied_at_once_and_again_over_its_result() {
    let (store, feed) = Scripted::new(&[("a-t1", "c1")], &[("c1", "10.0.0.1")]).with_feed();
    let (resolver, _stop) = start(store.clone());
    feed.send(FeedEvent::Gap("positioned".into()))
        .await
        .unwrap();
    store.loads_allowed.add_permits(1);
    eventually("the first load", async || {
        address_of(&resolver, "t1").await.is_some()
    })
    .await;

    // A reconcile starts from what the store held before the container moved...
    feed.send(FeedEvent::Gap("lost a shard".into()))
        .await
        .unwrap();
    eventually("the reload to start", async || {
        *store.started.lock().unwrap() == 2
    })
    .await;
    feed.send(FeedEvent::Changes(vec![moved("c1", "10.0.0.2")]))
        .await
        .unwrap();
    eventually("the change applied while the load runs", async || {
        address_of(&resolver, "t1").await.as_deref() == Some("10.0.0.2")
    })
    .await;
    // ...and its older word does not undo the change once it ends.
    store.loads_allowed.add_permits(1);
    eventually("the reload to end", async || store.loads() == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        address_of(&resolver, "t1").await.as_deref(),
        Some("10.0.0.2")
    );
}

#[tokio::test]
async fn being_caught_up_counts_only_once_a_load_followed_the_gap() {
    let (store, feed) = Scripted::new(&[("a-t1", "c1")], &[("c1", "10.0.0.1")]).with_feed();
    let (resolver, _stop) = start(store.clone());
    feed.send(FeedEvent::Gap("positioned".into()))
        .await
        .unwrap();
    feed.send(FeedEvent::CaughtUp(Instant::now()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        resolver.table_age(),
        None,
        "no table yet, whatever the streams say"
    );
    store.loads_allowed.add_permits(1);
    eventually("the first load", async || resolver.table_age().is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = resolver.table_age().unwrap();
    assert!(before >= Duration::from_millis(300), "{before:?}");
    feed.send(FeedEvent::CaughtUp(Instant::now()))
        .await
        .unwrap();
    eventually("caught up again", async || {
        resolver.table_age().unwrap() < Duration::from_millis(200)
    })
    .await;
    assert_eq!(store.loads(), 1, "no reload while the streams are followed");
}

#[tokio::test]
async fn being_caught_up_during_the_load_after_a_gap_is_not_being_current() {
    let (store, feed) = Scripted::new(&[("a-t1", "c1")], &[("c1", "10.0.0.1")]).with_feed();
    let (resolver, _stop) = start(store.clone());
    feed.send(FeedEvent::Gap("positioned".into()))
        .await
        .unwrap();
    // The load after the gap has started and waits for its permit; the streams meanwhile are
    // read to their end, which says nothing of what the load will find.
    tokio::time::sleep(Duration::from_millis(50)).await;
    feed.send(FeedEvent::CaughtUp(Instant::now()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(resolver.table_age(), None, "not ready on an empty table");
    store.loads_allowed.add_permits(1);
    eventually("the first load", async || resolver.table_age().is_some()).await;
}

#[tokio::test]
async fn a_lost_feed_falls_back_to_loading_every_refresh_interval() {
    let (store, feed) = Scripted::new(&[("a-t1", "c1")], &[("c1", "10.0.0.1")]).with_feed();
    let (resolver, _stop) = start(store.clone());
    feed.send(FeedEvent::Lost("no stream".into()))
        .await
        .unwrap();
    store.loads_allowed.add_permits(3);
    eventually("three loads, 200 ms apart", async || store.loads() == 3).await;
    assert!(address_of(&resolver, "t1").await.is_some());
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
