use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::store::fixtures::{running, session};
use crate::store::{Change, Stamp, StoreSnapshot};

/// A store that answers single reads from what the test put in, and counts them.
#[derive(Default)]
struct Counted {
    sessions: Mutex<HashMap<String, SessionRecord>>,
    reads: AtomicUsize,
}

#[async_trait]
impl RouteStore for Counted {
    async fn load_all(&self) -> Result<Option<Arc<StoreSnapshot>>, StoreError> {
        Ok(None)
    }

    async fn get_session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.sessions.lock().unwrap().get(key).cloned())
    }

    async fn get_container(&self, _: &str) -> Result<Option<ContainerRecord>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(Some(running("10.0.0.9")))
    }

    async fn stamp(&self, _: &str, _: Stamp, _: u64, _: u64) -> Result<bool, StoreError> {
        Ok(false)
    }
}

fn resolver(store: Arc<Counted>) -> Resolver {
    let settings = ResolverSettings {
        session_key: SessionKeyTemplate::parse("{client}-{thread}").unwrap(),
        container_port: 4321,
        refresh_interval: Duration::from_secs(3600),
        reconcile_interval: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(3600),
        max_staleness: Duration::from_secs(7200),
        policy: AddressPolicy::new(vec!["10.0.0.0/8".parse().unwrap()]),
        miss_limits: crate::config::StoreSection::default().miss_limits(),
    };
    Resolver::new(store, Arc::new(Metrics::new().unwrap()), settings)
}

async fn address(resolver: &Resolver) -> Option<IpAddr> {
    match resolver.resolve("a", "t1", None).await.resolution {
        Resolution::Ready(target) => Some(target.addr.ip()),
        _ => None,
    }
}

#[tokio::test]
async fn a_pushed_session_is_found_though_its_absence_was_remembered() {
    let store = Arc::new(Counted::default());
    let resolver = resolver(store.clone());
    resolver.reconcile(Arc::default(), Instant::now(), &[]);
    assert_eq!(address(&resolver).await, None);
    assert_eq!(store.reads.load(Ordering::Relaxed), 1, "absence read once");

    resolver
        .apply(&[
            Change::Session {
                key: "a-t1".into(),
                record: Some(session("c1")),
            },
            Change::Container {
                id: "c1".into(),
                record: Some(running("10.0.0.1")),
            },
        ])
        .await;
    assert_eq!(address(&resolver).await, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(store.reads.load(Ordering::Relaxed), 1, "no read for it");
}

#[tokio::test]
async fn a_pushed_deletion_beats_the_read_through_cache_and_needs_no_read() {
    let store = Arc::new(Counted::default());
    store
        .sessions
        .lock()
        .unwrap()
        .insert("a-t1".into(), session("c1"));
    let resolver = resolver(store.clone());
    resolver.reconcile(Arc::default(), Instant::now(), &[]);
    assert!(address(&resolver).await.is_some(), "read through");
    let reads = store.reads.load(Ordering::Relaxed);

    resolver
        .apply(&[Change::Session {
            key: "a-t1".into(),
            record: None,
        }])
        .await;
    assert_eq!(
        resolver.resolve("a", "t1", None).await.resolution,
        Resolution::Unknown
    );
    assert_eq!(store.reads.load(Ordering::Relaxed), reads, "known absent");
}

#[tokio::test]
async fn a_pushed_change_replaces_a_heal_of_the_same_session() {
    let store = Arc::new(Counted::default());
    store
        .sessions
        .lock()
        .unwrap()
        .insert("a-t1".into(), session("c1"));
    let resolver = resolver(store.clone());
    resolver.reconcile(Arc::default(), Instant::now(), &[]);
    resolver.reresolve("a", "t1").await;
    assert_eq!(address(&resolver).await, Some("10.0.0.9".parse().unwrap()));

    resolver
        .apply(&[Change::Container {
            id: "c1".into(),
            record: Some(running("10.0.0.2")),
        }])
        .await;
    // The heal named c1 at its old address; the pushed record is newer. The session itself
    // now comes from the read-through cache, the container from the table.
    assert_eq!(address(&resolver).await, Some("10.0.0.2".parse().unwrap()));
}
