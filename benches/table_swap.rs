//! What a full reload costs the request path: route lookups timed one by one, first with the
//! table left alone, then while another thread keeps applying full loads in which every session
//! has moved to a new container (the most a reconcile can correct). Prints p50/p99/p99.9 of both
//! and their ratio. `cargo bench --bench table_swap` runs 100k sessions; `cargo test` a small
//! smoke run.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_router::config::Config;
use session_router::table::Resolver;

mod common;

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

/// Times `count` lookups spread over the table; returns their durations in nanoseconds, sorted.
fn timed_lookups(config: &Config, resolver: &Resolver, sessions: usize, count: usize) -> Vec<u64> {
    let requests = common::requests(sessions);
    let mut took = Vec::with_capacity(count);
    for n in 0..count {
        let (host, path) = &requests[n % requests.len()];
        let started = Instant::now();
        common::resolve(config, resolver, host, path);
        took.push(started.elapsed().as_nanos() as u64);
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
    let config = common::config();
    let resolver = Arc::new(common::resolver(&config, common::table(sizes.sessions, 0)));

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
                let next = common::table(sessions, generation);
                resolver.reconcile(Arc::new(next), Instant::now(), &[]);
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
