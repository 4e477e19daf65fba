//! The route table over the file store: edits are routed as they happen (or at the next refresh),
//! a broken file keeps the last good table, concurrent misses make one store call, and readiness
//! follows the table.

use crate::common;

use std::time::{Duration, Instant};

use common::{one_session, session, sessions_toml, Router, RouterOptions, Upstream};
use serde_json::Value;

async fn upstream_of(router: &Router, host: &str, path: &str) -> Result<String, u16> {
    let resp = router
        .client()
        .get(router.url(host, path))
        .send()
        .await
        .expect("request");
    if resp.status() != 200 {
        return Err(resp.status().as_u16());
    }
    let echo: Value = resp.json().await.expect("json");
    Ok(echo["upstream"].as_str().unwrap_or_default().to_owned())
}

/// Polls until the session routes to `want` (or fails with that status), for at most 5 s.
async fn eventually(router: &Router, path: &str, want: Result<&str, u16>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = upstream_of(router, "edit.acme.localhost", path).await;
        if got.as_deref().map_err(|s| *s) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: still {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn edits_are_routed_after_the_next_refresh() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let router = Router::start(
        &one_session(Some(a.addr), "running"),
        RouterOptions::default(),
    );
    assert_eq!(
        upstream_of(&router, "edit.acme.localhost", "/session/t1/").await,
        Ok("a".into())
    );
    assert_eq!(
        upstream_of(&router, "edit.acme.localhost", "/session/t2/").await,
        Err(404)
    );

    // The container moved, and a second session appeared.
    router.write_sessions(&sessions_toml(
        &[session("acme-t1", "c1"), session("acme-t2", "c1")],
        &[("c1", Some(b.addr), "running")],
    ));
    eventually(&router, "/session/t1/", Ok("b")).await;
    eventually(&router, "/session/t2/", Ok("b")).await;

    // The session was deleted.
    router.write_sessions(&sessions_toml(
        &[session("acme-t2", "c1")],
        &[("c1", Some(b.addr), "running")],
    ));
    eventually(&router, "/session/t1/", Err(404)).await;
}

#[tokio::test]
async fn broken_file_keeps_the_last_good_table() {
    let a = Upstream::start("a").await;
    let router = Router::start(
        &one_session(Some(a.addr), "running"),
        RouterOptions::default(),
    );
    router.write_sessions("[sessions.\"acme-t1\"\ncontainer_id = ");
    let failed = "session_router_store_requests_total{op=\"load_all\",result=\"error\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while router.metric(failed).await < 3.0 {
        assert!(
            Instant::now() < deadline,
            "refresh never failed:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        upstream_of(&router, "edit.acme.localhost", "/session/t1/").await,
        Ok("a".into())
    );
    assert!(router.log().contains("keeping the last good table"));
    // A session the table does not know cannot be looked up in a broken file: unavailable, not 404.
    assert_eq!(
        upstream_of(&router, "edit.acme.localhost", "/session/new/").await,
        Err(503)
    );
    // Fixed again: picked up.
    router.write_sessions(&sessions_toml(
        &[session("acme-t1", "c1"), session("acme-new", "c1")],
        &[("c1", Some(a.addr), "running")],
    ));
    eventually(&router, "/session/new/", Ok("a")).await;
}

#[tokio::test]
async fn concurrent_misses_make_one_store_lookup() {
    let a = Upstream::start("a").await;
    let opts = RouterOptions {
        refresh_interval: "1h",
        negative_ttl: "1h",
        max_staleness: "2h",
        ..RouterOptions::default()
    };
    let router = Router::start(&one_session(Some(a.addr), "running"), opts);
    // Written after the first full load: until the load that the file's watch starts lands,
    // the table does not know it and the file does.
    router.write_sessions(&sessions_toml(
        &[session("acme-t1", "c1"), session("acme-fresh", "c1")],
        &[("c1", Some(a.addr), "running")],
    ));
    let statuses = router
        .concurrent_statuses("edit.acme.localhost", "/session/fresh/", 100)
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let lookups = router
        .metric("session_router_store_requests_total{op=\"get_session\",result=\"ok\"}")
        .await;
    assert!(lookups <= 1.0, "{lookups} lookups for one session");
    assert_eq!(a.hits(), 100);
}

#[tokio::test]
async fn readiness_follows_the_first_load() {
    let a = Upstream::start("a").await;
    let opts = RouterOptions {
        wait_ready: false,
        max_staleness: "1s",
        ..RouterOptions::default()
    };
    let router = Router::start_without_sessions(opts);
    router.wait_for("/readyz", 503);
    router.write_sessions(&one_session(Some(a.addr), "running"));
    router.wait_for("/readyz", 200);
    router.wait_for("/healthz", 200);
    router.wait_for("/nope", 404);
    assert_eq!(
        upstream_of(&router, "edit.acme.localhost", "/session/t1/").await,
        Ok("a".into())
    );

    // The store breaks: the last table keeps serving, and readiness lapses past max_staleness.
    std::fs::remove_file(router.sessions_path()).unwrap();
    router.wait_for("/readyz", 503);
    assert_eq!(
        upstream_of(&router, "edit.acme.localhost", "/session/t1/").await,
        Ok("a".into())
    );
    let stale = router
        .metric("session_router_route_lookups_total{result=\"stale\"}")
        .await;
    assert!(stale >= 1.0, "stale lookups counted: {stale}");
    router.write_sessions(&one_session(Some(a.addr), "running"));
    router.wait_for("/readyz", 200);
}

#[tokio::test]
async fn file_edits_are_routed_as_they_happen_not_at_the_next_poll() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let opts = RouterOptions {
        refresh_interval: "1h",
        max_staleness: "2h",
        ..RouterOptions::default()
    };
    let router = Router::start(&one_session(Some(a.addr), "running"), opts);
    eventually(&router, "/session/t1/", Ok("a")).await;
    // Twice: the first edit of a file and a later one both reach the table at once.
    for (up, name) in [(&b, "b"), (&a, "a")] {
        let written = Instant::now();
        router.write_sessions(&one_session(Some(up.addr), "running"));
        eventually(&router, "/session/t1/", Ok(name)).await;
        let took = written.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "routed to {name} after {took:?}"
        );
    }
    let loads = router
        .metric("session_router_store_requests_total{op=\"load_all\",result=\"ok\"}")
        .await;
    assert!(
        loads >= 3.0,
        "each edit was a full load of the file: {loads}"
    );
}
