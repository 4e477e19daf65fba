//! Resolves a (client, thread) pair to the container that serves it, or to the reason it cannot
//! be served. Reads the current [`RouteTable`]; on a miss asks the store once per session however
//! many requests wait, and remembers "no such session" for `negative_ttl`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

mod changes;
mod views;

pub use views::{Current, Inspection};

use super::miss_limit::{MissLimiter, MissLimits, MissScope};
use super::ownership::{self, RefusalLog};
use super::read_through::{Asker, MissError, ReadThrough};
use super::RouteTable;
use crate::config::SessionKeyTemplate;
use crate::metrics::{LookupResult, Metrics};
use crate::store::{
    ContainerRecord, ContainerStatus, RouteStore, SessionAccess, SessionRecord, StoreError,
};
use crate::upstream::{AddressPolicy, UpstreamTarget};

/// What the table says about a session, mapped one to one onto request outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Ready(UpstreamTarget),
    Unknown,
    Starting,
    Stopped,
    /// The session names a container the store does not hold (yet, or any more).
    Absent,
    StoreUnavailable,
    /// Not in memory, and the store read it needs is over the requester's or the process's
    /// budget.
    RateLimited(MissScope),
    /// The store named an address outside the allowlist.
    Forbidden(IpAddr),
}

/// A resolution, with the access settings of the session whenever the store knows it (whatever
/// its container's state), so that access is decided before anything about the container is
/// told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub resolution: Resolution,
    pub access: Option<SessionAccess>,
    /// The session's store key, rendered once per request.
    pub key: String,
}

/// A resolution and, for a session the store knows, its access settings.
type Found = (Resolution, Option<SessionAccess>);

#[derive(Debug, Clone)]
pub struct ResolverSettings {
    pub session_key: SessionKeyTemplate,
    pub container_port: u16,
    pub refresh_interval: Duration,
    pub reconcile_interval: Duration,
    pub negative_ttl: Duration,
    pub max_staleness: Duration,
    pub policy: AddressPolicy,
    pub miss_limits: MissLimits,
}

/// A session re-read from the store after its container could not be reached, newer than the
/// table until a full load that started after it replaces the table.
#[derive(Debug, Clone)]
struct Healed {
    session: SessionRecord,
    container: Option<ContainerRecord>,
    at: Instant,
}

pub struct Resolver {
    table: ArcSwap<RouteTable>,
    /// Usually empty, so the request path pays one load and an emptiness check for it.
    healed: ArcSwap<HashMap<Box<str>, Healed>>,
    sessions: ReadThrough<SessionRecord>,
    containers: ReadThrough<ContainerRecord>,
    misses: MissLimiter,
    store: Arc<dyn RouteStore>,
    metrics: Arc<Metrics>,
    settings: ResolverSettings,
    /// Unix millis before which the table held every change of the store (the start of the
    /// last full load, or of the last stream poll that found every shard read to its end); 0
    /// until the first load.
    current_at_ms: AtomicU64,
    /// Bumped whenever routes may have changed (a table swap or a heal), so watchers of open
    /// connections know when to look again.
    version: AtomicU64,
    refusals: RefusalLog,
    /// Replaced versions of the table some request still held, freed by the table's writer.
    retired: std::sync::Mutex<Vec<Arc<RouteTable>>>,
}

fn read_through<V: Clone + Send + Sync + 'static>(s: &ResolverSettings) -> ReadThrough<V> {
    ReadThrough::new(s.refresh_interval * 2, s.negative_ttl)
}

fn now_epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Resolver {
    pub fn new(
        store: Arc<dyn RouteStore>,
        metrics: Arc<Metrics>,
        settings: ResolverSettings,
    ) -> Self {
        Resolver {
            table: ArcSwap::from_pointee(RouteTable::default()),
            healed: ArcSwap::from_pointee(HashMap::new()),
            sessions: read_through(&settings),
            containers: read_through(&settings),
            misses: MissLimiter::new(settings.miss_limits),
            store,
            metrics,
            settings,
            current_at_ms: AtomicU64::new(0),
            version: AtomicU64::new(0),
            refusals: RefusalLog::default(),
            retired: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn RouteStore> {
        &self.store
    }

    pub fn settings(&self) -> &ResolverSettings {
        &self.settings
    }

    /// The store key of a session, as the store spells it.
    pub fn session_key(&self, client: &str, thread: &str) -> String {
        self.settings.session_key.render(client, thread)
    }

    /// Changes whenever routes may have changed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Records a successful full load that found nothing new.
    pub fn mark_refreshed(&self) {
        self.mark_current(Instant::now());
        self.metrics
            .last_refresh
            .set(now_epoch_ms() as f64 / 1000.0);
    }

    /// Records that the table held every change the store made before `at`. Never moves back.
    pub fn mark_current(&self, at: Instant) {
        let at_ms = now_epoch_ms().saturating_sub(at.elapsed().as_millis() as u64);
        let latest = self
            .current_at_ms
            .fetch_max(at_ms, Ordering::AcqRel)
            .max(at_ms);
        self.metrics.last_refresh.set(latest as f64 / 1000.0);
    }

    /// How far behind the store the table may be: time since it last held every change; `None`
    /// before the first load.
    pub fn table_age(&self) -> Option<Duration> {
        self.table_age_at(now_epoch_ms())
    }

    fn table_age_at(&self, now_ms: u64) -> Option<Duration> {
        match self.current_at_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some(Duration::from_millis(now_ms.saturating_sub(at))),
        }
    }

    /// Ready once a table has loaded, until it is older than `max_staleness`.
    pub fn is_ready(&self) -> bool {
        self.table_age()
            .is_some_and(|age| age <= self.settings.max_staleness)
    }

    /// Past two refresh intervals behind the store, the table is serving stale routes.
    fn is_stale(&self, now_ms: u64) -> bool {
        self.table_age_at(now_ms)
            .is_some_and(|age| age > self.settings.refresh_interval * 2)
    }

    /// Finds where a session's requests go. A session not in memory costs a store read, charged
    /// to `requester` (the client address; see [`crate::headers::requester`]).
    pub async fn resolve(&self, client: &str, thread: &str, requester: Option<IpAddr>) -> Resolved {
        let key = self.session_key(client, thread);
        let (resolution, access) = self.find(&key, client, thread, requester).await;
        Resolved {
            resolution,
            access,
            key,
        }
    }

    async fn find(
        &self,
        key: &str,
        client: &str,
        thread: &str,
        requester: Option<IpAddr>,
    ) -> Found {
        let asker = Asker {
            limiter: &self.misses,
            requester,
            metrics: &self.metrics,
        };
        let now_ms = now_epoch_ms();
        let healed = self.healed.load();
        if let Some(h) = healed.get(key) {
            self.metrics.lookup(LookupResult::Hit);
            let (session, container) = (h.session.clone(), h.container.clone());
            return self.decide(key, client, thread, session, container, now_ms);
        }
        let table = self.table.load_full();
        let session = match table.session(key) {
            Some(s) => {
                self.count_hit(now_ms);
                s.clone()
            }
            None => match self.read_through_session(key, &asker).await {
                Ok(Some(s)) => s,
                Ok(None) => return (Resolution::Unknown, None),
                Err(e) => return (unanswered(&e), None),
            },
        };
        let container = match table.container(&session.container_id) {
            Some(c) => Some(c.clone()),
            None => match self
                .read_through_container(&session.container_id, &asker)
                .await
            {
                Ok(c) => c,
                Err(e) => return (unanswered(&e), None),
            },
        };
        self.decide(key, client, thread, session, container, now_ms)
    }

    /// Re-reads a session and its container from the store, bypassing every cache, after its
    /// container could not be reached: a restarted container has a new address, and the request
    /// that noticed should not wait for the next full load to learn it.
    pub async fn reresolve(&self, client: &str, thread: &str) -> Resolution {
        let key = self.session_key(client, thread);
        let store = &self.store;
        let session = match self
            .call_store("get_session", store.get_session(&key))
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => return Resolution::Unknown,
            Err(_) => return Resolution::StoreUnavailable,
        };
        let id = session.container_id.clone();
        let container = match self
            .call_store("get_container", store.get_container(&id))
            .await
        {
            Ok(c) => c,
            Err(_) => return Resolution::StoreUnavailable,
        };
        let healed = Healed {
            session: session.clone(),
            container: container.clone(),
            at: Instant::now(),
        };
        self.healed.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(key.as_str().into(), healed.clone());
            map
        });
        self.version.fetch_add(1, Ordering::Release);
        self.decide(&key, client, thread, session, container, now_epoch_ms())
            .0
    }

    /// The answer for a session record and its container record, wherever they came from, to
    /// the request of (`client`, `thread`). Both engines resolve through here, so the owner
    /// check cannot be bypassed by either.
    fn decide(
        &self,
        key: &str,
        client: &str,
        thread: &str,
        session: SessionRecord,
        container: Option<ContainerRecord>,
        now_ms: u64,
    ) -> Found {
        if session.is_expired(now_ms / 1000) {
            return (Resolution::Unknown, None);
        }
        let owner = session.client_id.as_deref();
        if let Err(refusal) = ownership::check(&self.settings.session_key, client, thread, owner) {
            self.refusals.report(refusal, key, client, owner);
            return (Resolution::Unknown, None);
        }
        let resolution = match container {
            Some(c) => self.to_resolution(key, session.container_id, &c),
            None => Resolution::Absent,
        };
        (resolution, Some(session.access))
    }

    fn to_resolution(&self, key: &str, id: Arc<str>, c: &ContainerRecord) -> Resolution {
        match (c.status, c.ip) {
            (ContainerStatus::Stopped | ContainerStatus::Stopping, _) => Resolution::Stopped,
            (ContainerStatus::Starting, _) | (_, None) => Resolution::Starting,
            (ContainerStatus::Running, Some(ip)) if !self.settings.policy.permits(ip) => {
                Resolution::Forbidden(ip)
            }
            (ContainerStatus::Running, Some(ip)) => {
                Resolution::Ready(UpstreamTarget::new(self.container_addr(c, ip), id, key))
            }
        }
    }

    /// The address connected to is the canonical one the policy judged (`::ffff:10.0.0.5`
    /// becomes `10.0.0.5`), and `current` states the same, so an upgrade is not taken for
    /// replaced because one side kept the mapped form.
    fn container_addr(&self, c: &ContainerRecord, ip: IpAddr) -> SocketAddr {
        let port = c.port.unwrap_or(self.settings.container_port);
        SocketAddr::new(ip.to_canonical(), port)
    }

    fn count_hit(&self, now_ms: u64) {
        let result = if self.is_stale(now_ms) {
            LookupResult::Stale
        } else {
            LookupResult::Hit
        };
        self.metrics.lookup(result);
    }

    async fn read_through_session(
        &self,
        key: &str,
        asker: &Asker<'_>,
    ) -> Result<Option<SessionRecord>, Arc<MissError>> {
        let store = &self.store;
        let fetch = || self.call_store("get_session", store.get_session(key));
        self.sessions.get(key, asker, fetch).await
    }

    async fn read_through_container(
        &self,
        id: &str,
        asker: &Asker<'_>,
    ) -> Result<Option<ContainerRecord>, Arc<MissError>> {
        let store = &self.store;
        let fetch = || self.call_store("get_container", store.get_container(id));
        self.containers.get(id, asker, fetch).await
    }

    /// One store call, timed and counted.
    async fn call_store<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .store_call(op, result.is_ok(), started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            log::warn!("store {op} failed: {e}");
        }
        result
    }
}

/// The answer when a key missing from memory could not be read.
fn unanswered(e: &MissError) -> Resolution {
    match e {
        MissError::Limited(scope) => Resolution::RateLimited(*scope),
        MissError::Store(_) => Resolution::StoreUnavailable,
    }
}

#[cfg(test)]
mod tests;
