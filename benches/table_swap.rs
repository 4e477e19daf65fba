//! What a full table swap costs the request path: route lookups timed one by one, first with the
//! table left alone, then while another thread keeps building and swapping in whole new tables of
//! the same size, freeing each replaced one as the refresh task does. Prints p50/p99/p99.9 of both
//! and their ratio. `cargo bench --bench table_swap` runs 100k sessions; `cargo test` a small
//! smoke run.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use session_router::config::{Config, RouterFile};
use session_router::metrics::Metrics;
use session_router::routing::{classify, RequestParts};
use session_router::store::{
    ContainerRecord, ContainerStatus, FileStore, SessionRecord, StoreSnapshot,
};
use session_router::table::{Resolution, Resolver, ResolverSettings, RouteTable};
use session_router::upstream::AddressPolicy;

const CLIENTS: usize = 1000;

struct Sizes {
    sessions: usize,
    lookups: usize,
    /// Pause between two swaps; each build itself takes a while at 100k sessions.
    swap_every: Duration,
}

fn sizes() -> Sizes {
    if std::env::args().any(|a| a == "--bench") {
        Sizes {
            sessions: 100_000,
            lookups: 3_000_000,
            swap_every: Duration::from_millis(50),
        }
    } else {
        Sizes {
            sessions: 10_000,
            lookups: 100_000,
            swap_every: Duration::from_millis(5),
        }
    }
}

fn table(sessions: usize, generation: u32) -> RouteTable {
    let mut snap = StoreSnapshot::default();
    for i in 0..sessions {
        let container: Arc<str> = format!("c{i}-{generation}").into();
        snap.sessions.insert(
            format!("client{}-thread{i}", i % CLIENTS).into(),
            SessionRecord {
                container_id: container.clone(),
                client_id: Some(format!("client{}", i % CLIENTS).into()),
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
    RouteTable::from(snap)
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
    // The store is never reached: every looked-up session is in every table.
    let store = Arc::new(FileStore::new(PathBuf::from("/nonexistent")));
    let resolver = Resolver::new(store, Arc::new(Metrics::new().unwrap()), settings);
    resolver.install(table(sessions, 0), Instant::now());
    resolver
}

/// Polls a future that a table hit completes without waiting, as the proxy's first poll does.
fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a table hit must not wait"),
    }
}

/// Times `count` lookups spread over the table; returns their durations in nanoseconds, sorted.
fn timed_lookups(config: &Config, resolver: &Resolver, sessions: usize, count: usize) -> Vec<u64> {
    let requests: Vec<(String, String)> = (0..4096)
        .map(|n| {
            let i = (n * 7919) % sessions;
            (
                format!("edit.client{}.example.com", i % CLIENTS),
                format!("/session/thread{i}/src/main.ts"),
            )
        })
        .collect();
    let mut took = Vec::with_capacity(count);
    for n in 0..count {
        let (host, path) = &requests[n % requests.len()];
        let started = Instant::now();
        let parts = RequestParts {
            host,
            path,
            query: None,
            referer: None,
            cookie_thread: None,
        };
        let target = classify(&config.routing, &parts).expect("routable");
        let resolution = poll_ready(resolver.resolve(&target.client, &target.thread));
        took.push(started.elapsed().as_nanos() as u64);
        assert!(matches!(resolution, Resolution::Ready(_)));
    }
    took.sort_unstable();
    took
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn report(label: &str, sorted: &[u64]) -> [u64; 3] {
    let ps = [0.5, 0.99, 0.999].map(|p| percentile(sorted, p));
    println!(
        "table_swap: {label:<22} p50 {:>6} ns  p99 {:>6} ns  p99.9 {:>6} ns",
        ps[0], ps[1], ps[2]
    );
    ps
}

fn main() {
    let sizes = sizes();
    let mut file = RouterFile::default();
    file.routing.path_hosts = vec!["edit.{client}.example.com".into()];
    let config = Config::validate(file).expect("config");
    let resolver = Arc::new(resolver(&config, sizes.sessions));

    timed_lookups(&config, &resolver, sizes.sessions, sizes.lookups / 10);
    let quiet = timed_lookups(&config, &resolver, sizes.sessions, sizes.lookups);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (resolver, stop, swaps) = (resolver.clone(), stop.clone(), swaps.clone());
        let (sessions, every) = (sizes.sessions, sizes.swap_every);
        std::thread::spawn(move || {
            for generation in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let next = table(sessions, generation);
                let replaced = resolver.install(next, Instant::now());
                // Freed here, as the refresh task frees it, once no lookup holds it.
                while Arc::strong_count(&replaced) > 1 {
                    std::thread::yield_now();
                }
                drop(replaced);
                swaps.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(every);
            }
        })
    };
    let swapping = timed_lookups(&config, &resolver, sizes.sessions, sizes.lookups);
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("swapper");

    println!(
        "table_swap: {} sessions, {} lookups each way, {} tables swapped in during the second",
        sizes.sessions,
        sizes.lookups,
        swaps.load(Ordering::Relaxed)
    );
    let a = report("table left alone", &quiet);
    let b = report("tables being swapped", &swapping);
    println!(
        "table_swap: ratio while swapping: p50 x{:.2}  p99 x{:.2}  p99.9 x{:.2}",
        b[0] as f64 / a[0] as f64,
        b[1] as f64 / a[1] as f64,
        b[2] as f64 / a[2] as f64
    );
}
