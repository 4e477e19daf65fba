//! What the route table's writer spends: one full load of the file store (read and parse a
//! `sessions.toml` of 100k sessions, each on its own container), applying a full load to the
//! table (a reconcile that finds nothing to correct, and building it from empty), and applying
//! one pushed change. The request path never waits on these, but they compete for the CPU.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use session_router::store::{Change, ContainerRecord, ContainerStatus, FileStore, RouteStore};
use session_router::table::RouteTable;

/// The same shape as the load script's tables: sessions over a thousand clients, one container
/// each with its address and port.
fn sessions_file(sessions: usize) -> String {
    let mut text = String::with_capacity(sessions * 150);
    for i in 0..sessions {
        let _ = write!(
            text,
            "[sessions.\"client{c}-thread{i:07}\"]\ncontainer_id = \"c{i:07}\"\n\
             client_id = \"client{c}\"\n[containers.\"c{i:07}\"]\n\
             ip = \"10.{}.{}.{}\"\nport = 4321\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255,
            c = i % 1000,
        );
    }
    text
}

fn bench_load(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("file_store_load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    for sessions in [10_000, 100_000] {
        let path = dir.path().join(format!("sessions-{sessions}.toml"));
        std::fs::write(&path, sessions_file(sessions)).expect("write table");
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_with_input(BenchmarkId::from_parameter(sessions), &path, |b, path| {
            b.to_async(&runtime).iter(|| async {
                // A new store each time: one that has seen this version of the file skips it.
                let store = FileStore::new(path.clone());
                let table = store.load_all().await.expect("loads");
                assert_eq!(table.map(|t| t.sessions.len()), Some(sessions));
            })
        });
    }
    group.finish();
}

fn bench_apply(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.toml");
    std::fs::write(&path, sessions_file(100_000)).expect("write table");
    let loaded = runtime
        .block_on(FileStore::new(path).load_all())
        .expect("loads")
        .expect("a table");
    let table = RouteTable::from(loaded.clone());
    let mut group = c.benchmark_group("route_table_100k");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("reconcile_unchanged", |b| {
        b.iter(|| table.clone().reconcile(loaded.clone()))
    });
    group.bench_function("apply_one_change", |b| {
        let mut n = 0u32;
        b.iter(|| {
            n = n.wrapping_add(1);
            let change = Change::Container {
                id: format!("c{:07}", n % 100_000).into(),
                record: Some(ContainerRecord {
                    ip: Some(std::net::Ipv4Addr::from(0x0a00_0000 + n).into()),
                    port: None,
                    status: ContainerStatus::Running,
                }),
            };
            let mut next = table.clone();
            next.apply(&change);
            next
        })
    });
    group.finish();
}

criterion_group!(benches, bench_load, bench_apply);
criterion_main!(benches);
