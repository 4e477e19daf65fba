//! What one full reload of the file store costs the refresh thread: read, parse and build the
//! table of a `sessions.toml` with 100k sessions, each on its own container, and free the table it
//! replaces. The request path never waits on this, but on a busy machine it competes for the CPU.

use std::fmt::Write;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use session_router::background::Priority;
use session_router::store::{FileStore, RouteStore};

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
                let table = store.load_all(Priority::Low).await.expect("loads");
                assert_eq!(table.map(|t| t.sessions.len()), Some(sessions));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
