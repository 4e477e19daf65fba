//! A `-u` binary upgrade under load: what the handover does to requests and WebSockets,
//! measured on the real binary.

use crate::common;
use crate::shutdown::{connect_hmr, connect_ws, socket_end};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{one_session, Router, RouterOptions, Upstream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The second process of a handover: killed on drop if the test ends early.
struct Successor(Child);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one load client saw.
#[derive(Default)]
struct LoadStats {
    ok: AtomicUsize,
    /// Transport errors before any response, on a GET, retried once.
    retried: AtomicUsize,
    failed: AtomicUsize,
    errors: Mutex<Vec<String>>,
    /// (start, end) of every request.
    spans: Mutex<Vec<(Instant, Instant)>>,
}

async fn load_client(url: String, proxy: SocketAddr, stop: Arc<AtomicBool>, stats: Arc<LoadStats>) {
    const MAX_PER_CLIENT: usize = 5_000;
    let client = common::client_for(proxy);
    for _ in 0..MAX_PER_CLIENT {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let start = Instant::now();
        let mut result = client.get(&url).send().await;
        if let Err(e) = &result {
            // A GET whose connection closed before any response is retried once, as browsers
            // and most HTTP clients do for idempotent requests (RFC 9110 9.2.2).
            stats.retried.fetch_add(1, Ordering::Relaxed);
            stats.errors.lock().expect("lock").push(format!("{e:?}"));
            result = client.get(&url).send().await;
        }
        let ok = match result {
            Ok(resp) => resp.status() == 200 && resp.text().await.is_ok(),
            Err(_) => false,
        };
        let counter = if ok { &stats.ok } else { &stats.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        stats
            .spans
            .lock()
            .expect("lock")
            .push((start, Instant::now()));
    }
}

fn wait_for_log(path: &Path, needle: &str, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|l| l.contains(needle)) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn count_access_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(" access] request"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_handover_loses_no_request_and_closes_websockets_cleanly() {
    const CLIENTS: usize = 8;
    let up = Upstream::start("steady").await;
    let mut old = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions {
            grace_period_seconds: 2,
            graceful_shutdown_timeout_seconds: 1,
            ..RouterOptions::default()
        },
    );
    let proxy = old.proxy;
    let mut ws = connect_hmr(proxy).await;
    let client = old.client();

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats::default());
    // Each request spends 20 ms at the container, so the handover always finds some in flight.
    let url = old.url("edit.acme.localhost", "/session/t1/load?delay_ms=20");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(load_client(url.clone(), proxy, stop.clone(), stats.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. The new process starts with -u and waits on the upgrade socket for the listeners.
    let dir = old.dir.path().to_owned();
    let successor = Successor(
        common::router_command(&dir, "router-new.log")
            .arg("-u")
            .spawn()
            .expect("spawn successor"),
    );
    let sock = dir.join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sock.exists(), "successor never opened the upgrade socket");

    // Two requests that the old process is still serving when it stops accepting, 5 s on.
    let hits = up.hits();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let get = client.get(old.url("edit.acme.localhost", "/session/t1/slow?delay_ms=5800"));
            tokio::spawn(async move {
                let resp = get.send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                resp.text().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, Instant::now()))
            })
        })
        .collect();
    while up.hits() < hits + 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // 2. SIGQUIT to the old one: it sends its listening sockets, both accept for 5 s, then the
    //    old one stops accepting, drains for its grace period and exits.
    let quit = Instant::now();
    old.signal(libc::SIGQUIT);
    let old_log = dir.join("router.log");
    let broadcast = tokio::task::spawn_blocking(move || {
        wait_for_log(
            &old_log,
            "Broadcasting graceful shutdown",
            Duration::from_secs(10),
        )
    });
    let ws_end = socket_end(&mut ws, Duration::from_secs(10)).await;
    let ws_closed = Instant::now();
    let broadcast = broadcast
        .await
        .expect("join")
        .expect("old process started its shutdown");

    // 3. The dev client's reconnect: a vite-ping socket, then the HMR socket again, which now
    //    reach the new process.
    let ping = connect_ws(proxy, "vite-ping").await;
    let mut again = connect_hmr(proxy).await;
    again
        .send(Message::Text("after".into()))
        .await
        .expect("send");

    let old_exit = tokio::task::spawn_blocking(move || {
        let status = old.wait_exit(Duration::from_secs(10));
        (status, Instant::now(), old)
    });
    let (old_status, old_exited, old) = old_exit.await.expect("join");
    let mut slow_ends = Vec::new();
    for task in slow {
        let (status, end) = task
            .await
            .expect("join")
            .expect("slow request across the handover");
        assert_eq!(status, 200);
        slow_ends.push(end);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("load client");
    }

    let spans = stats.spans.lock().expect("lock").clone();
    let spanning = |t: Instant| spans.iter().filter(|(s, e)| *s <= t && t <= *e).count();
    let ok = stats.ok.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let retried = stats.retried.load(Ordering::Relaxed);
    let old_served = count_access_lines(&old.log());
    let new_served = count_access_lines(
        &std::fs::read_to_string(dir.join("router-new.log")).unwrap_or_default(),
    );
    println!(
        "upgrade: {} requests from {CLIENTS} keep-alive clients, {ok} ok, {failed} failed, \
         {retried} retried once after a connection closed before any response {:?}; load requests \
         in flight at SIGQUIT {}, at the old process's shutdown {} (+{:?}), at its exit {} (+{:?}); served \
         by old {old_served}, by new {new_served}; websocket {ws_end:?} at +{:?}; 2 slow \
         requests on the old process ended at +{:?}",
        spans.len(),
        stats.errors.lock().expect("lock"),
        spanning(quit),
        spanning(broadcast),
        broadcast.duration_since(quit),
        spanning(old_exited),
        old_exited.duration_since(quit),
        ws_closed.duration_since(quit),
        slow_ends
            .iter()
            .map(|e| e.duration_since(quit))
            .collect::<Vec<_>>(),
    );
    assert_eq!(failed, 0, "requests lost across the handover");
    assert!(ok >= 200, "the load ran: {ok}");
    assert!(
        slow_ends.iter().all(|e| *e > broadcast),
        "the slow requests were in flight on the old process when it stopped accepting"
    );
    assert!(
        old_served > 0 && new_served > 0,
        "{old_served} / {new_served}"
    );
    assert!(old_status.is_some_and(|s| s.success()), "{old_status:?}");
    assert_eq!(ws_end, Ok(CloseCode::Away), "{}", old.log());
    assert!(ping.is_ok(), "vite-ping reconnect: {ping:?}");
    match tokio::time::timeout(Duration::from_secs(5), again.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert_eq!(t.as_str(), "after"),
        other => panic!("HMR socket through the new process: {other:?}"),
    }
    drop(successor);
}
