//! The DynamoDB store against a real DynamoDB-compatible server (moto): full loads, read-through,
//! expiry, outages and malformed items, through the real router binary.

use crate::common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::moto::{n, s, Moto};
use common::wire::CountingRelay;
use common::{Router, RouterOptions, Upstream};
use serde_json::Value;

const SESSIONS: &str = "webordinary-edit-sessions";
const CONTAINERS: &str = "webordinary-containers";

async fn status_and_upstream(router: &Router, path: &str) -> (u16, String) {
    let resp = router
        .client()
        .get(router.url("edit.acme.localhost", path))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let echo: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        echo["upstream"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn eventually(router: &Router, path: &str, want: (u16, &str)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_and_upstream(router, path).await;
        if (got.0, got.1.as_str()) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: still {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dynamo(moto: &Moto) -> RouterOptions {
    RouterOptions {
        dynamodb_endpoint: Some(moto.endpoint()),
        ..RouterOptions::default()
    }
}

async fn seeded(upstream: &Upstream) -> Moto {
    let moto = Moto::start().await;
    moto.create_default_tables().await;
    moto.put_session("acme-t1", "c1").await;
    moto.put_container("c1", upstream.addr).await;
    moto
}

/// Tables without streams are loaded in full every refresh interval, which follows changes.
#[tokio::test]
async fn tables_are_routed_and_changes_follow_refreshes() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let moto = seeded(&a).await;
    let router = Router::start("", dynamo(&moto));
    assert_eq!(
        status_and_upstream(&router, "/session/t1/").await,
        (200, "a".into())
    );
    let loads = "session_router_store_requests_total{op=\"load_all\",result=\"ok\"}";
    let first = router.metric(loads).await;

    // The container restarted elsewhere.
    moto.put_container("c1", b.addr).await;
    eventually(&router, "/session/t1/", (200, "b")).await;
    assert!(router.metric(loads).await > first, "a refresh loaded it");

    // The session was deleted.
    moto.delete_session("acme-t1").await;
    eventually(&router, "/session/t1/", (404, "")).await;
}

#[tokio::test]
async fn expired_sessions_are_absent_at_once() {
    let a = Upstream::start("a").await;
    let moto = seeded(&a).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let soon = (now + 2).to_string();
    moto.put(
        SESSIONS,
        &[
            ("sessionId", s("acme-brief")),
            ("containerId", s("c1")),
            ("expiresAt", n(&soon)),
        ],
    )
    .await;
    let past = (now - 10).to_string();
    moto.put(
        SESSIONS,
        &[
            ("sessionId", s("acme-gone")),
            ("containerId", s("c1")),
            ("ttl", n(&past)),
        ],
    )
    .await;
    let router = Router::start("", dynamo(&moto));
    assert_eq!(status_and_upstream(&router, "/session/gone/").await.0, 404);
    assert_eq!(status_and_upstream(&router, "/session/brief/").await.0, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_and_upstream(&router, "/session/brief/").await.0, 404);
}

#[tokio::test]
async fn new_session_is_read_through_once_for_many_first_requests() {
    let a = Upstream::start("a").await;
    let moto = seeded(&a).await;
    let wire = CountingRelay::start(moto.addr);
    let opts = RouterOptions {
        refresh_interval: "1h",
        negative_ttl: "1h",
        max_staleness: "2h",
        dynamodb_endpoint: Some(wire.endpoint()),
        ..dynamo(&moto)
    };
    let router = Router::start("", opts);
    moto.put_session("acme-fresh", "c2").await;
    moto.put_container("c2", a.addr).await;
    assert_eq!(
        wire.count("GetItem"),
        0,
        "nothing read before the first request"
    );

    let statuses = router
        .concurrent_statuses("edit.acme.localhost", "/session/fresh/", 50)
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // One GetItem of the session and one of its container, counted where they travel.
    assert_eq!(wire.count("GetItem"), 2, "GetItem calls on the wire");
    for op in ["get_session", "get_container"] {
        let series = format!("session_router_store_requests_total{{op=\"{op}\",result=\"ok\"}}");
        assert_eq!(router.metric(&series).await, 1.0, "{series}");
    }
}

#[tokio::test]
async fn store_outage_keeps_known_sessions_routing() {
    let a = Upstream::start("a").await;
    let mut moto = seeded(&a).await;
    let router = Router::start("", dynamo(&moto));
    assert_eq!(status_and_upstream(&router, "/session/t1/").await.0, 200);

    moto.stop();
    let stale = "session_router_route_lookups_total{result=\"stale\"}";
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut served = 0;
    while Instant::now() < deadline {
        assert_eq!(
            status_and_upstream(&router, "/session/t1/").await,
            (200, "a".into())
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served > 10);
    assert!(
        router.metric(stale).await > 0.0,
        "stale lookups counted during the outage"
    );
    // Unknown while unreachable is "try again", never "does not exist".
    assert_eq!(
        status_and_upstream(&router, "/session/unknown/").await.0,
        503
    );

    moto.restart();
    moto.create_default_tables().await;
    moto.put_session("acme-t1", "c1").await;
    moto.put_container("c1", a.addr).await;
    let ok = "session_router_store_requests_total{op=\"load_all\",result=\"ok\"}";
    let before = router.metric(ok).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.metric(ok).await <= before {
        assert!(
            Instant::now() < deadline,
            "no refresh after recovery:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stale_after = router.metric(stale).await;
    for _ in 0..10 {
        assert_eq!(status_and_upstream(&router, "/session/t1/").await.0, 200);
    }
    assert_eq!(
        router.metric(stale).await,
        stale_after,
        "lookups no longer stale"
    );
}

#[tokio::test]
async fn malformed_items_are_skipped_and_counted() {
    let a = Upstream::start("a").await;
    let moto = seeded(&a).await;
    moto.put(SESSIONS, &[("sessionId", s("acme-nocontainer"))])
        .await;
    moto.put(
        SESSIONS,
        &[("sessionId", s("acme-numeric")), ("containerId", n("7"))],
    )
    .await;
    moto.put(
        CONTAINERS,
        &[
            ("containerId", s("c-bad-ip")),
            ("containerIp", s("ten.0.0.1")),
        ],
    )
    .await;
    moto.put(
        CONTAINERS,
        &[
            ("containerId", s("c-bad-port")),
            ("containerPort", n("99999")),
        ],
    )
    .await;
    let router = Router::start("", dynamo(&moto));
    assert_eq!(
        router
            .metric("session_router_route_table_skipped_items")
            .await,
        4.0
    );
    assert_eq!(
        router.metric("session_router_route_table_sessions").await,
        1.0
    );
    assert_eq!(
        status_and_upstream(&router, "/session/t1/").await,
        (200, "a".into())
    );
    assert!(
        router.log().contains("item acme-numeric"),
        "{}",
        router.log()
    );
}

#[tokio::test]
async fn twenty_thousand_sessions_load_with_parallel_scan() {
    const COUNT: usize = 20_000;
    let a = Upstream::start("a").await;
    let moto = seeded(&a).await;
    let writers = (0..8).map(|w| {
        let client = moto.client.clone();
        tokio::spawn(async move {
            use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
            let mine: Vec<usize> = (0..COUNT).filter(|i| i % 8 == w).collect();
            for chunk in mine.chunks(25) {
                let writes = chunk.iter().map(|i| {
                    let put = PutRequest::builder()
                        .item("sessionId", s(&format!("bulk-t{i}")))
                        .item("containerId", s("c1"))
                        .build()
                        .unwrap();
                    WriteRequest::builder().put_request(put).build()
                });
                client
                    .batch_write_item()
                    .request_items(SESSIONS, writes.collect())
                    .send()
                    .await
                    .expect("batch write");
            }
        })
    });
    let write_started = Instant::now();
    for w in futures_util::future::join_all(writers).await {
        w.expect("writer");
    }
    println!("20k sessions written in {:?}", write_started.elapsed());

    let started = Instant::now();
    let wire = CountingRelay::start(moto.addr);
    let opts = RouterOptions {
        refresh_interval: "2m",
        max_staleness: "5m",
        wait_ready: false,
        // moto answers a Scan page of a large table far slower than DynamoDB does.
        store_request_timeout: "60s",
        dynamodb_endpoint: Some(wire.endpoint()),
        ..dynamo(&moto)
    };
    let router = Router::start("", opts);
    let deadline = Instant::now() + Duration::from_secs(180);
    while router.metric("session_router_route_table_sessions").await < (COUNT + 1) as f64 {
        assert!(
            Instant::now() < deadline,
            "20k sessions never loaded:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = router.log();
    let took = log
        .lines()
        .find(|l| l.contains("route table loaded"))
        .and_then(|l| l.split("took_ms=").nth(1))
        .unwrap_or("?");
    println!(
        "20k sessions: full load took {took} ms (router start to ready {:?})",
        started.elapsed()
    );
    // Full pages (up to 1 MB): a few calls per segment, not one per few hundred items.
    let pages = wire.count("Scan");
    assert!(
        (8..=40).contains(&pages),
        "{pages} Scan pages for {COUNT} sessions in 4 segments of two tables"
    );
}

/// The README's local DynamoDB: `deploy/local_dynamodb.py` makes tables the router loads, with
/// the demo session as `conf/sessions.toml` has it.
#[tokio::test]
async fn the_local_tables_script_gives_the_demo_session() {
    let moto = Moto::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local_dynamodb.py");
    for run in ["created", "exists, left as it is"] {
        let out = std::process::Command::new(common::moto::python())
            .arg(script)
            .arg(moto.endpoint())
            .output()
            .expect("run deploy/local_dynamodb.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(run),
            "a second run finds the tables: {stdout}"
        );
    }
    let router = Router::start(
        "",
        RouterOptions {
            dynamodb_endpoint: Some(moto.endpoint()),
            ..RouterOptions::default()
        },
    );
    let held = reqwest::get(format!("http://{}/sessions/demo-hello", router.admin))
        .await
        .unwrap();
    assert_eq!(held.status(), 200, "{}", router.log());
    let held: Value = held.json().await.unwrap();
    assert_eq!(held["route"]["container"]["address"], "127.0.0.1:4321");
    assert_eq!(held["route"]["container"]["status"], "running");
    assert_eq!(held["access"]["level"], "public");
}
