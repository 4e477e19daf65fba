//! What the table benches share: a table of generated sessions, a resolver holding it, the
//! requests that address it and one resolution as the proxy makes it.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use session_router::config::{Config, RouterFile};
use session_router::metrics::Metrics;
use session_router::routing::{classify, RequestParts};
use session_router::store::{
    ContainerRecord, ContainerStatus, FileStore, SessionRecord, StoreSnapshot,
};
use session_router::table::{Resolution, Resolver, ResolverSettings};
use session_router::upstream::AddressPolicy;

const CLIENTS: usize = 1000;

/// Path mode on `edit.{client}.example.com`, the rest the defaults.
pub fn config() -> Config {
    let mut file = RouterFile::default();
    file.routing.path_hosts = vec!["edit.{client}.example.com".into()];
    Config::validate(file).expect("config")
}

/// `sessions` sessions spread over a thousand clients, each on its own running container;
/// `generation` gives the containers new ids, as a reload after restarts would.
pub fn table(sessions: usize, generation: u32) -> StoreSnapshot {
    let mut snap = StoreSnapshot::default();
    for i in 0..sessions {
        let container: Arc<str> = format!("c{i}-{generation}").into();
        snap.sessions.insert(
            format!("client{}-thread{i}", i % CLIENTS).into(),
            SessionRecord {
                container_id: container.clone(),
                client_id: Some(format!("client{}", i % CLIENTS).into()),
                expires_at: None,
                access: Default::default(),
            },
        );
        snap.containers.insert(
            container.to_string().into(),
            ContainerRecord {
                ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))),
                port: None,
                status: ContainerStatus::Running,
            },
        );
    }
    snap
}

/// A resolver serving `table`. Its store is never reached: every request addresses a session in
/// the table, and the refresh interval outlasts any bench.
pub fn resolver(config: &Config, table: StoreSnapshot) -> Resolver {
    let settings = ResolverSettings {
        session_key: config.routing.session_key.clone(),
        container_port: 4321,
        refresh_interval: Duration::from_secs(3600),
        reconcile_interval: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(2),
        max_staleness: Duration::from_secs(7200),
        policy: AddressPolicy::new(vec!["10.0.0.0/8".parse().expect("cidr")]),
        miss_limits: config.store.miss_limits(),
    };
    let store = Arc::new(FileStore::new(PathBuf::from("/nonexistent")));
    let resolver = Resolver::new(store, Arc::new(Metrics::new().expect("metrics")), settings);
    resolver.reconcile(Arc::new(table), Instant::now(), &[]);
    resolver
}

/// 4,096 (host, path) pairs spread pseudo-randomly over a table of `sessions`.
pub fn requests(sessions: usize) -> Vec<(String, String)> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % sessions as u64) as usize;
            (
                format!("edit.client{}.example.com", i % CLIENTS),
                format!("/session/thread{i}/src/pages/index.astro?astro&type=script"),
            )
        })
        .collect()
}

/// A request of `host` and `path` alone, as routing reads it.
pub fn parts<'a>(host: &'a str, path: &'a str) -> RequestParts<'a> {
    RequestParts {
        host,
        path,
        query: None,
        referer: None,
        cookie_thread: None,
    }
}

/// Classifies one request and resolves it, as the proxy does; every request here is a table hit.
pub fn resolve(config: &Config, resolver: &Resolver, host: &str, path: &str) -> Resolution {
    let target = classify(&config.routing.hosts, &parts(host, path)).expect("routable");
    let resolved = poll_ready(resolver.resolve(&target.client, &target.thread, None));
    let resolution = resolved.resolution;
    assert!(matches!(resolution, Resolution::Ready(_)), "a table hit");
    resolution
}

/// Polls a future that a table hit completes without waiting, as the proxy's first poll does.
pub fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a table hit must not wait"),
    }
}
