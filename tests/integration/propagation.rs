//! Route changes pushed by DynamoDB Streams to a fleet: three router processes on the same moto
//! tables see a moved container, a repointed session and a changed status without scanning again,
//! and a stream replaced under them (a gap) is recovered by a full load with no wrong route served.

use crate::common;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use common::moto::{s, Moto};
use common::{Router, RouterOptions, Upstream};
use serde_json::Value;

const SESSIONS: &str = "webordinary-edit-sessions";
const CONTAINERS: &str = "webordinary-containers";
const FULL_LOADS: &str = "session_router_store_requests_total{op=\"load_all\",result=\"ok\"}";

async fn moto_with_streams() -> Moto {
    let moto = Moto::start().await;
    let images = Some(StreamViewType::NewAndOldImages);
    moto.create_table_streamed(SESSIONS, "sessionId", images.clone())
        .await;
    moto.create_table_streamed(CONTAINERS, "containerId", images)
        .await;
    moto
}

/// What a router answers for a session: status, and the upstream's name when it was proxied.
async fn answer(router: &Router, thread: &str) -> (u16, String) {
    let sent = router
        .client()
        .get(router.url("edit.acme.localhost", &format!("/session/{thread}/")))
        .send()
        .await;
    let Ok(resp) = sent else {
        return (0, String::new());
    };
    let status = resp.status().as_u16();
    let echo: Value = resp.json().await.unwrap_or(Value::Null);
    let upstream = echo["upstream"].as_str().unwrap_or_default().to_owned();
    (status, upstream)
}

/// Waits until every router answers `want` for `thread`; returns how long the slowest took.
async fn all_answer(fleet: &[Router], thread: &str, want: (u16, &str)) -> Duration {
    let started = Instant::now();
    for router in fleet {
        loop {
            let got = answer(router, thread).await;
            if (got.0, got.1.as_str()) == want {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{thread}: a router still answers {got:?}, want {want:?}:\n{}",
                router.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    started.elapsed()
}

/// Three routers following the streams. Full loads every hour at most, so that anything seen
/// sooner came through the streams.
fn fleet(moto: &Moto, env: &[(&str, &str)]) -> Vec<Router> {
    (0..3)
        .map(|_| {
            Router::start(
                "",
                RouterOptions {
                    dynamodb_endpoint: Some(moto.endpoint()),
                    refresh_interval: "1h",
                    max_staleness: "2h",
                    store_extra: "reconcile_interval = \"1h\"\n".into(),
                    env: env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..RouterOptions::default()
                },
            )
        })
        .collect()
}

async fn full_loads(fleet: &[Router]) -> Vec<f64> {
    let mut loads = Vec::new();
    for router in fleet {
        loads.push(router.metric(FULL_LOADS).await);
    }
    loads
}

/// Waits until each router has positioned on the streams and made a full load after that.
async fn following(fleet: &[Router]) {
    for router in fleet {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = router.log();
            let positioned = log.find("route changes: ");
            if positioned.is_some_and(|at| log[at..].contains("route table loaded")) {
                break;
            }
            assert!(Instant::now() < deadline, "not following:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn changes_reach_every_router_of_the_fleet_without_a_scan() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let moto = moto_with_streams().await;
    moto.put_container("c1", a.addr).await;
    moto.put_container("c2", b.addr).await;
    moto.put_session("acme-moved", "c1").await;
    moto.put_session("acme-repointed", "c1").await;
    let fleet = fleet(&moto, &[]);
    following(&fleet).await;
    all_answer(&fleet, "moved", (200, "a")).await;
    let loads = full_loads(&fleet).await;

    moto.put_container("c1", b.addr).await;
    let moved = all_answer(&fleet, "moved", (200, "b")).await;
    moto.put_session("acme-repointed", "c2").await;
    moto.put_container("c1", a.addr).await;
    let repointed = all_answer(&fleet, "repointed", (200, "b")).await;
    all_answer(&fleet, "moved", (200, "a")).await;
    moto.put_stopped_container("c1").await;
    let stopped = all_answer(&fleet, "moved", (503, "")).await;
    moto.put_session("acme-new", "c2").await;
    let created = all_answer(&fleet, "new", (200, "b")).await;
    moto.delete_session("acme-new").await;
    let deleted = all_answer(&fleet, "new", (404, "")).await;
    println!(
        "seen by all three: moved {moved:?}, repointed {repointed:?}, stopped {stopped:?}, \
         created {created:?}, deleted {deleted:?}"
    );

    assert_eq!(
        full_loads(&fleet).await,
        loads,
        "no full load between reconciles"
    );
    for router in &fleet {
        let applied = router
            .metric("session_router_stream_records_total{result=\"applied\",table=\"containers\"}")
            .await;
        assert!(applied >= 3.0, "{applied} container records applied");
        let lag = router.metric("session_router_stream_lag_seconds").await;
        assert!(lag < 5.0, "lag {lag}");
    }
}

#[tokio::test]
async fn a_replaced_stream_is_a_gap_recovered_by_a_full_load_with_no_wrong_route() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let moto = moto_with_streams().await;
    moto.put_container("c1", a.addr).await;
    moto.put_container("c2", b.addr).await;
    moto.put_session("acme-t1", "c1").await;
    let discover = (
        "SESSION_ROUTER__STORE__DYNAMODB__STREAM_DISCOVER_INTERVAL",
        "1s",
    );
    let fleet = fleet(&moto, &[discover]);
    following(&fleet).await;
    all_answer(&fleet, "t1", (200, "a")).await;
    let loads = full_loads(&fleet).await;

    // The sessions table is replaced, and its stream with it: the routers' iterators now read a
    // stream nobody writes, and the session comes back pointing elsewhere.
    moto.client
        .delete_table()
        .table_name(SESSIONS)
        .send()
        .await
        .expect("delete table");
    let images = Some(StreamViewType::NewAndOldImages);
    moto.create_table_streamed(SESSIONS, "sessionId", images)
        .await;
    moto.put(
        SESSIONS,
        &[("sessionId", s("acme-t1")), ("containerId", s("c2"))],
    )
    .await;
    let started = Instant::now();
    // Every router answers a (the old route) until it learns of the gap, then b, and never a
    // third thing or a again.
    for router in &fleet {
        let mut seen_b = false;
        loop {
            let (status, upstream) = answer(router, "t1").await;
            assert_eq!(status, 200, "only a or b: {}", router.log());
            match upstream.as_str() {
                "a" => assert!(!seen_b, "back to the old route after the new one"),
                "b" => seen_b = true,
                other => panic!("unexpected upstream {other:?}"),
            }
            if seen_b && started.elapsed() > Duration::from_secs(4) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "gap never recovered:\n{}",
                router.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after = full_loads(&fleet).await;
    for (before, after) in loads.iter().zip(&after) {
        assert!(
            after > before,
            "the gap made a full load: {before} → {after}"
        );
    }

    // The routers follow the new stream from then on.
    moto.put_container("c2", a.addr).await;
    moto.put(
        SESSIONS,
        &[("sessionId", s("acme-t2")), ("containerId", s("c2"))],
    )
    .await;
    all_answer(&fleet, "t2", (200, "a")).await;
}
