//! Route resolution on the request path: host and path parsing plus the table lookup, at 1k,
//! 100k and 1M sessions. The cost should stay flat as the table grows.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use session_router::config::{Config, RouterFile};
use session_router::metrics::Metrics;
use session_router::routing::{classify, RequestParts};
use session_router::store::{
    ContainerRecord, ContainerStatus, FileStore, SessionRecord, StoreSnapshot,
};
use session_router::table::{Resolution, Resolver, ResolverSettings, RouteTable};
use session_router::upstream::AddressPolicy;

const CLIENTS: usize = 1000;

fn snapshot(sessions: usize) -> StoreSnapshot {
    let mut snap = StoreSnapshot::default();
    for i in 0..sessions {
        let container: Arc<str> = format!("c{i}").into();
        snap.sessions.insert(
            format!("client{}-thread{i}", i % CLIENTS).into(),
            SessionRecord {
                container_id: container.clone(),
                client_id: None,
                expires_at: None,
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

fn resolver(config: &Config, sessions: usize) -> Resolver {
    let settings = ResolverSettings {
        session_key: config.routing.session_key.clone(),
        container_port: 4321,
        refresh_interval: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(2),
        max_staleness: Duration::from_secs(7200),
        policy: AddressPolicy::new(vec!["10.0.0.0/8".parse().unwrap()]),
    };
    // The store is never reached: every benchmarked session is in the table.
    let store = Arc::new(FileStore::new(PathBuf::from("/nonexistent")));
    let metrics = Arc::new(Metrics::new().unwrap());
    let resolver = Resolver::new(store, metrics, settings);
    resolver.install(
        RouteTable::from(snapshot(sessions)),
        std::time::Instant::now(),
    );
    resolver
}

/// Request (host, path) pairs spread over the whole table.
fn requests(sessions: usize) -> Vec<(String, String)> {
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

/// Polls a future that a table hit completes without waiting, as the proxy's first poll does.
fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a table hit must not wait"),
    }
}

fn bench_resolution(c: &mut Criterion) {
    let mut file = RouterFile::default();
    file.routing.path_hosts = vec!["edit.{client}.example.com".into()];
    let config = Config::validate(file).unwrap();
    let mut group = c.benchmark_group("route_resolution");
    group.throughput(Throughput::Elements(1));
    for sessions in [1_000, 100_000, 1_000_000] {
        let resolver = resolver(&config, sessions);
        let reqs = requests(sessions);
        let mut n = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(sessions), &sessions, |b, _| {
            b.iter(|| {
                let (host, path) = &reqs[n % reqs.len()];
                n += 1;
                let parts = RequestParts {
                    host,
                    path,
                    query: None,
                    referer: None,
                    cookie_thread: None,
                };
                let target = classify(&config.routing, &parts).unwrap();
                let resolution = poll_ready(resolver.resolve(&target.client, &target.thread));
                assert!(matches!(resolution, Resolution::Ready(_)));
                resolution
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench_resolution
}
criterion_main!(benches);
