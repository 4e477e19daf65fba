//! Containers that restart, start slowly or sit at addresses the router must not reach: the
//! router heals by itself, answers by store state, and never connects where it should not.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{one_session, session, sessions_toml, Router, RouterOptions, Upstream};
use serde_json::Value;

/// A router that only learns of changes by itself: no full refresh during the test.
fn no_refresh() -> RouterOptions {
    RouterOptions {
        refresh_interval: "1h",
        negative_ttl: "1h",
        max_staleness: "2h",
        ..RouterOptions::default()
    }
}

#[tokio::test]
async fn restart_under_load_heals_with_zero_failed_requests() {
    let mut old = Upstream::start("old").await;
    let router = Router::start(&one_session(Some(old.addr), "running"), no_refresh());
    let client = router.client();
    let url = router.url("edit.acme.localhost", "/session/t1/");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);

    let updated = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (client, url, updated, sent) =
            (client.clone(), url.clone(), updated.clone(), sent.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(6);
            let (mut after, mut failed_after, mut new_hits) = (0, Vec::new(), 0);
            while Instant::now() < deadline && after < 2_000 {
                let in_store = updated.load(Ordering::SeqCst);
                let resp = client.get(&url).send().await;
                sent.fetch_add(1, Ordering::SeqCst);
                let (status, upstream) = match resp {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let echo: Value = r.json().await.unwrap_or(Value::Null);
                        (status, echo["upstream"].as_str().unwrap_or("").to_owned())
                    }
                    Err(e) => (0, e.to_string()),
                };
                if in_store {
                    after += 1;
                    new_hits += usize::from(upstream == "new");
                    if status != 200 {
                        failed_after.push((status, upstream));
                    }
                }
            }
            (after, failed_after, new_hits)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The container restarts on another port; the platform records the new address.
    old.stop();
    // Requests reach the stopped container before the store names the new one, however slowly
    // the load loop runs on a busy machine: the retry counted below must have a request to come
    // from.
    let stopped_at = sent.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(3);
    while sent.load(Ordering::SeqCst) < stopped_at + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let new = Upstream::start("new").await;
    router.write_sessions(&one_session(Some(new.addr), "running"));
    // Counted from the moment the router holds the new address: until then the table names the
    // stopped container, which the failed connects above marked unhealthy (503, by design).
    let admin = format!("http://{}/sessions/acme-t1", router.admin);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = reqwest::get(&admin).await.unwrap().text().await.unwrap();
        if held.contains(&new.addr.to_string()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    updated.store(true, Ordering::SeqCst);

    let (after, failed_after, new_hits) = load.await.unwrap();
    assert!(after >= 20, "only {after} requests after the update");
    assert!(
        failed_after.is_empty(),
        "failed after the update: {failed_after:?}"
    );
    assert_eq!(new_hits, after);
    let retries = router
        .metric("session_router_upstream_retries_total{reason=\"connect_refused\"}")
        .await;
    assert!(retries >= 1.0, "the healing retry is counted");
}

#[tokio::test]
async fn unreachable_container_that_is_restarting_answers_starting() {
    let mut old = Upstream::start("old").await;
    let router = Router::start(&one_session(Some(old.addr), "running"), no_refresh());
    let url = router.url("edit.acme.localhost", "/session/t1/");
    assert_eq!(
        router.client().get(&url).send().await.unwrap().status(),
        200
    );
    old.stop();
    router.write_sessions(&one_session(None, "starting"));
    let resp = router
        .client()
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let series = "session_router_requests_total{outcome=\"container_starting\"}";
    assert_eq!(router.metric_eventually(series, 1.0).await, 1.0);
}

/// The platform stops the container and says so in the store; the router's table has not seen
/// it yet, so the first visit connects, fails, and learns it from the store read of its retry.
/// With a waker, that visit is answered and woken as a visit after the table knew would be:
/// the waking page and one wake, not a "paused" page that never comes back by itself.
#[tokio::test]
async fn a_container_stopped_before_the_table_knows_is_woken_by_the_first_visit() {
    let mut old = Upstream::start("old").await;
    // Takes the wake POSTs: any 2xx answer is a wake the platform accepted.
    let platform = Upstream::start("platform").await;
    let opts = RouterOptions {
        extra_toml: format!(
            "\n[wake]\nkind = \"http\"\nurl = \"http://{}/wake\"\nsecret = \"{}\"\n",
            platform.addr,
            "s".repeat(32)
        ),
        ..no_refresh()
    };
    let router = Router::start(&one_session(Some(old.addr), "running"), opts);
    let url = router.url("edit.acme.localhost", "/session/t1/");
    assert_eq!(
        router.client().get(&url).send().await.unwrap().status(),
        200
    );
    old.stop();
    router.write_sessions(&one_session(None, "stopped"));
    let resp = router
        .client()
        .get(&url)
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert!(resp.text().await.unwrap().contains("Waking your preview"));
    let sent = "session_router_wake_requests_total{result=\"sent\"}";
    assert_eq!(router.metric_eventually(sent, 1.0).await, 1.0);
    assert_eq!(platform.hits(), 1);
    let waking = "session_router_requests_total{outcome=\"container_waking\"}";
    assert_eq!(router.metric(waking).await, 1.0);
}

#[tokio::test]
async fn unreachable_with_nothing_better_is_502() {
    let mut old = Upstream::start("old").await;
    let addr = old.addr;
    let router = Router::start(&one_session(Some(addr), "running"), no_refresh());
    old.stop();
    let resp = router
        .client()
        .get(router.url("edit.acme.localhost", "/session/t1/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let series = "session_router_upstream_retries_total{reason=\"connect_refused\"}";
    assert_eq!(
        router.metric_eventually(series, 1.0).await,
        1.0,
        "one retry, not more"
    );
}

/// A listener that must never see a connection.
struct Tripwire(TcpListener);

impl Tripwire {
    fn new() -> Tripwire {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Tripwire(l)
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    fn untouched(&self) -> bool {
        matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

async fn status_of(router: &Router, thread: &str) -> u16 {
    let url = router.url("edit.acme.localhost", &format!("/session/{thread}/"));
    router
        .client()
        .get(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn addresses_outside_the_allowlist_are_never_connected() {
    let wire = Tripwire::new();
    let sessions = sessions_toml(
        &[
            session("acme-loop", "c-loop"),
            session("acme-public", "c-public"),
        ],
        &[
            ("c-loop", Some(wire.addr()), "running"),
            ("c-public", Some("8.8.8.8:4321".parse().unwrap()), "running"),
        ],
    );
    let opts = RouterOptions {
        allowed_cidrs: "[\"10.0.0.0/8\", \"192.168.0.0/16\"]",
        ..RouterOptions::default()
    };
    let router = Router::start(&sessions, opts);
    assert_eq!(status_of(&router, "loop").await, 502);
    assert_eq!(status_of(&router, "public").await, 502);
    let series = "session_router_requests_total{outcome=\"forbidden_upstream\"}";
    assert_eq!(router.metric_eventually(series, 2.0).await, 2.0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(wire.untouched(), "loopback listener was connected to");
    assert!(router.log().contains("event=forbidden_upstream"));
}

#[tokio::test]
async fn metadata_and_unspecified_addresses_are_refused_even_when_listed() {
    let up = Upstream::start("ok").await;
    let sessions = sessions_toml(
        &[
            session("acme-meta", "c-meta"),
            session("acme-zero", "c-zero"),
            session("acme-ok", "c-ok"),
        ],
        &[
            (
                "c-meta",
                Some("169.254.169.254:80".parse().unwrap()),
                "running",
            ),
            ("c-zero", Some("0.0.0.0:4321".parse().unwrap()), "running"),
            ("c-ok", Some(up.addr), "running"),
        ],
    );
    let opts = RouterOptions {
        allowed_cidrs: "[\"0.0.0.0/0\"]",
        ..RouterOptions::default()
    };
    let router = Router::start(&sessions, opts);
    assert_eq!(status_of(&router, "meta").await, 502);
    assert_eq!(status_of(&router, "zero").await, 502);
    assert_eq!(status_of(&router, "ok").await, 200);
    let series = "session_router_requests_total{outcome=\"forbidden_upstream\"}";
    assert_eq!(router.metric_eventually(series, 2.0).await, 2.0);
}

#[tokio::test]
async fn a_container_answering_for_another_is_refused() {
    // The test upstream states its name as its container id. Session t2's record names container
    // c-gone, whose address the upstream "c-live" now holds, as after an IP reuse.
    let up = Upstream::start("c-live").await;
    let sessions = sessions_toml(
        &[session("acme-t1", "c-live"), session("acme-t2", "c-gone")],
        &[
            ("c-live", Some(up.addr), "running"),
            ("c-gone", Some(up.addr), "running"),
        ],
    );
    let opts = RouterOptions {
        extra_toml: "identity_header = \"x-container-id\"".into(),
        ..RouterOptions::default()
    };
    let router = Router::start(&sessions, opts);
    assert_eq!(status_of(&router, "t1").await, 200);
    let resp = router
        .client()
        .get(router.url("edit.acme.localhost", "/session/t2/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502, "{}", router.log());
    let body = resp.text().await.unwrap();
    assert!(
        !body.contains("c-live"),
        "the other container's response is not shown"
    );
    let series = "session_router_requests_total{outcome=\"container_mismatch\"}";
    assert_eq!(router.metric_eventually(series, 1.0).await, 1.0);
    assert!(router.log().contains("event=container_mismatch"));
}

/// A listener whose accept queue is full and never drained: connects to it time out, as to a
/// container that hangs.
struct Blackhole {
    _listener: socket2::Socket,
    _queued: Vec<std::net::TcpStream>,
}

impl Blackhole {
    fn at(addr: SocketAddr) -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.listen(0).unwrap();
        let queued = (0..4)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            })
            .collect();
        Blackhole {
            _listener: socket,
            _queued: queued,
        }
    }
}

#[tokio::test]
async fn a_hanging_container_gets_a_fast_503_until_it_recovers() {
    let mut up = Upstream::start("up").await;
    let addr = up.addr;
    let opts = RouterOptions {
        health_toml: "interval = \"200ms\"\ntimeout = \"300ms\"\nfailures_to_unhealthy = 2".into(),
        ..RouterOptions::default()
    };
    let router = Router::start(&one_session(Some(addr), "running"), opts);
    assert_eq!(status_of(&router, "t1").await, 200);

    up.stop();
    let hole = Blackhole::at(addr);
    let probe = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(
        matches!(&probe, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "the container should hang, not refuse: {probe:?}"
    );
    let unhealthy = router
        .metric_eventually("session_router_containers_unhealthy", 1.0)
        .await;
    assert_eq!(unhealthy, 1.0, "{}", router.log());

    let started = Instant::now();
    let resp = router
        .client()
        .get(router.url("edit.acme.localhost", "/session/t1/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("http-equiv=\"refresh\""));
    assert!(
        waited < Duration::from_millis(500),
        "answered after {waited:?}, connect timeout is 1s"
    );
    let series = "session_router_requests_total{outcome=\"container_unhealthy\"}";
    assert_eq!(router.metric_eventually(series, 1.0).await, 1.0);

    drop(hole);
    let _back = Upstream::start_on("back", addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(&router, "t1").await != 200 {
        assert!(
            Instant::now() < deadline,
            "never routed again:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        router.metric("session_router_containers_unhealthy").await,
        0.0
    );
}
