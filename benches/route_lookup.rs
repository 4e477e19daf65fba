//! Route resolution on the request path: host and path parsing plus the table lookup, at 1k,
//! 100k and 1M sessions. The cost should stay flat as the table grows.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod common;

fn bench_resolution(c: &mut Criterion) {
    let config = common::config();
    let mut group = c.benchmark_group("route_resolution");
    group.throughput(Throughput::Elements(1));
    for sessions in [1_000, 100_000, 1_000_000] {
        let resolver = common::resolver(&config, common::table(sessions, 0));
        let reqs = common::requests(sessions);
        let mut n = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(sessions), &sessions, |b, _| {
            b.iter(|| {
                let (host, path) = &reqs[n % reqs.len()];
                n += 1;
                common::resolve(&config, &resolver, host, path)
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
