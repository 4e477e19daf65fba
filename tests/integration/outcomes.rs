//! Every outcome the router answers itself: status, headers and body kind per request kind, and
//! the matching `session_router_requests_total` label.

use crate::common;

use std::net::SocketAddr;

use common::{free_port, session, sessions_toml, Router, RouterOptions, Session, Upstream};
use reqwest::header::HeaderMap;

const NAV: &[(&str, &str)] = &[("accept", "text/html"), ("sec-fetch-mode", "navigate")];
const ASSET: &[(&str, &str)] = &[("accept", "*/*"), ("sec-fetch-mode", "cors")];
const UPGRADE: &[(&str, &str)] = &[
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-protocol", "vite-hmr"),
];

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn assert_html(&self, text: &str) {
        assert_eq!(
            self.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(self.header("cache-control"), Some("no-store"));
        assert!(self.body.contains(text), "{}", self.body);
    }

    fn assert_status(&self, status: u16, retry_after: Option<&str>, what: &str) {
        assert_eq!(
            (self.status, self.header("retry-after")),
            (status, retry_after),
            "{what}"
        );
    }

    fn assert_plain(&self) {
        assert_eq!(
            self.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(!self.body.contains('<'), "{}", self.body);
    }
}

async fn fetch(router: &Router, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = router.client().get(router.url(host, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap_or_default(),
    }
}

/// Asserts the request counter of `outcome` reaches `want`.
/// A request for `/session/{thread}/{rest}` on client acme's host.
async fn fetch_thread(r: &Router, thread: &str, rest: &str, headers: &[(&str, &str)]) -> Answer {
    fetch(
        r,
        "edit.acme.localhost",
        &format!("/session/{thread}/{rest}"),
        headers,
    )
    .await
}

async fn assert_count(router: &Router, outcome: &str, want: f64) {
    let series = format!("session_router_requests_total{{outcome=\"{outcome}\"}}");
    assert_eq!(
        router.metric_eventually(&series, want).await,
        want,
        "{series}"
    );
}

fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

async fn router_with_states() -> (Router, Upstream) {
    router_with_states_and(RouterOptions::default()).await
}

async fn router_with_states_and(opts: RouterOptions) -> (Router, Upstream) {
    let up = Upstream::start("up").await;
    let sessions = [
        session("acme-live", "c-live"),
        session("acme-starting", "c-starting"),
        session("acme-nocontainer", "c-missing"),
        session("acme-stopped", "c-stopped"),
        session("acme-stopping", "c-stopping"),
        session("acme-dead", "c-dead"),
        session("acme-outside", "c-outside"),
        Session {
            expires_at: Some(1_000),
            ..session("acme-expired", "c-live")
        },
    ];
    let containers = [
        ("c-live", Some(up.addr), "running"),
        ("c-starting", None, "starting"),
        ("c-stopped", Some(up.addr), "stopped"),
        ("c-stopping", Some(up.addr), "stopping"),
        ("c-dead", Some(closed_port()), "running"),
        (
            "c-outside",
            Some(SocketAddr::from(([10, 255, 255, 1], 4321))),
            "running",
        ),
    ];
    let router = Router::start(&sessions_toml(&sessions, &containers), opts);
    (router, up)
}

#[tokio::test]
async fn not_found_family() {
    let (r, up) = router_with_states().await;
    let a = fetch(&r, "example.localhost", "/session/live/", NAV).await;
    assert_eq!(a.status, 404);
    a.assert_plain();
    assert_count(&r, "not_preview_host", 1.0).await;
    // Someone calling the router by its address is told how to call it, with its own port.
    let port = r.proxy.port();
    let a = fetch(&r, "127.0.0.1", "/", NAV).await;
    assert_eq!(a.status, 404);
    a.assert_plain();
    let curl =
        format!("curl -H 'Host: edit.demo.localhost' http://127.0.0.1:{port}/session/hello/");
    assert!(a.body.contains(&curl), "{}", a.body);
    assert!(
        a.body.contains("edit.{client}.localhost/session/{thread}/"),
        "{}",
        a.body
    );
    assert_count(&r, "not_preview_host", 2.0).await;

    let a = fetch(&r, "edit.acme.localhost", "/", NAV).await;
    assert_eq!(a.status, 404);
    a.assert_html("No active session");
    assert_count(&r, "no_session", 1.0).await;

    for thread in ["nobody", "expired"] {
        let a = fetch_thread(&r, thread, "", NAV).await;
        assert_eq!(a.status, 404, "{thread}");
        a.assert_html("Session not found");
        let a = fetch_thread(&r, thread, "x.js", ASSET).await;
        assert_eq!(a.status, 404);
        a.assert_plain();
    }
    assert_count(&r, "unknown_session", 4.0).await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn starting_container_answers_per_request_kind() {
    let (r, up) = router_with_states().await;
    for thread in ["starting", "nocontainer"] {
        let a = fetch_thread(&r, thread, "", NAV).await;
        assert_eq!(a.status, 503, "{thread}");
        assert_eq!(a.header("retry-after"), Some("2"));
        a.assert_html("Starting your preview");
        assert!(a.body.contains("http-equiv=\"refresh\""));

        let a = fetch_thread(&r, thread, "x.css", ASSET).await;
        assert_eq!((a.status, a.header("retry-after")), (503, Some("2")));
        a.assert_plain();

        let a = fetch_thread(&r, thread, "", UPGRADE).await;
        assert_eq!((a.status, a.header("retry-after")), (503, Some("2")));
        assert!(a.body.is_empty());
    }
    assert_count(&r, "container_starting", 6.0).await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn stopped_container_is_paused() {
    let (r, up) = router_with_states().await;
    for thread in ["stopped", "stopping"] {
        let a = fetch_thread(&r, thread, "", NAV).await;
        assert_eq!(a.status, 503);
        a.assert_html("Session paused");
    }
    assert_count(&r, "container_stopped", 2.0).await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn unreachable_and_forbidden_upstreams_are_502() {
    let (r, _up) = router_with_states().await;
    let a = fetch(&r, "edit.acme.localhost", "/session/dead/", NAV).await;
    assert_eq!(a.status, 502);
    a.assert_html("Preview unreachable");
    assert_count(&r, "upstream_unreachable", 1.0).await;

    let a = fetch(&r, "edit.acme.localhost", "/session/outside/", NAV).await;
    assert_eq!(a.status, 502);
    a.assert_html("Preview unavailable");
    assert_count(&r, "forbidden_upstream", 1.0).await;
    assert!(r.log().contains("event=forbidden_upstream"), "{}", r.log());
}

#[tokio::test]
async fn malformed_requests_are_400_and_bare_session_redirects() {
    let (r, up) = router_with_states().await;
    for path in ["/session/a.b/", "/session/a%2Fb/", "/session/a%20b/x"] {
        let a = fetch(&r, "edit.acme.localhost", path, NAV).await;
        assert_eq!(a.status, 400, "{path}");
        a.assert_html("Bad request");
    }
    let a = fetch(
        &r,
        "edit.acme.localhost",
        "/x",
        &[("cookie", "sr_session=../../etc")],
    )
    .await;
    assert_eq!(a.status, 400);
    assert_count(&r, "bad_request", 4.0).await;

    let a = fetch(&r, "edit.acme.localhost", "/session/live?x=1", NAV).await;
    assert_eq!(a.status, 308);
    assert_eq!(a.header("location"), Some("/session/live/?x=1"));
    assert_count(&r, "redirect", 1.0).await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn routed_requests_are_counted() {
    let (r, up) = router_with_states().await;
    for _ in 0..3 {
        let a = fetch(&r, "edit.acme.localhost", "/session/live/", NAV).await;
        assert_eq!(a.status, 200);
    }
    assert_count(&r, "routed", 3.0).await;
    assert_eq!(up.hits(), 3);
    let scrape = r.metrics().await;
    assert!(scrape.contains("session_router_request_duration_seconds_count{outcome=\"routed\"} 3"));
    assert!(
        scrape.contains("session_router_route_table_sessions 8"),
        "{scrape}"
    );
    assert!(!scrape.contains("acme-live"), "no session ids in labels");
    assert!(
        scrape.contains("process_resident_memory_bytes"),
        "process metrics exported"
    );
}

/// What the router's own answer must look like for one outcome, whatever the request kind.
struct Expected {
    thread: &'static str,
    outcome: &'static str,
    status: u16,
    retry_after: Option<&'static str>,
    title: &'static str,
}

#[tokio::test]
async fn every_outcome_answers_each_request_kind_in_its_shape() {
    // Passive health would turn the dead container's later answers into `container_unhealthy`;
    // that outcome gets its own test below.
    let (r, up) = router_with_states_and(RouterOptions {
        health_toml: "failures_to_unhealthy = 1000".into(),
        ..RouterOptions::default()
    })
    .await;
    let expected = [
        Expected {
            thread: "nobody",
            outcome: "unknown_session",
            status: 404,
            retry_after: None,
            title: "Session not found",
        },
        Expected {
            thread: "starting",
            outcome: "container_starting",
            status: 503,
            retry_after: Some("2"),
            title: "Starting your preview",
        },
        Expected {
            thread: "stopped",
            outcome: "container_stopped",
            status: 503,
            retry_after: None,
            title: "Session paused",
        },
        Expected {
            thread: "dead",
            outcome: "upstream_unreachable",
            status: 502,
            retry_after: None,
            title: "Preview unreachable",
        },
        Expected {
            thread: "outside",
            outcome: "forbidden_upstream",
            status: 502,
            retry_after: None,
            title: "Preview unavailable",
        },
        Expected {
            thread: "bad.id",
            outcome: "bad_request",
            status: 400,
            retry_after: None,
            title: "Bad request",
        },
    ];
    for e in &expected {
        let nav = fetch_thread(&r, e.thread, "", NAV).await;
        nav.assert_status(
            e.status,
            e.retry_after,
            &format!("{} navigation", e.outcome),
        );
        nav.assert_html(e.title);

        let asset = fetch_thread(&r, e.thread, "app.js", ASSET).await;
        asset.assert_status(e.status, e.retry_after, &format!("{} asset", e.outcome));
        asset.assert_plain();
        assert_eq!(asset.body.trim(), e.title, "{} asset body", e.outcome);
        assert_eq!(asset.header("cache-control"), Some("no-store"));

        let upgrade = fetch_thread(&r, e.thread, "", UPGRADE).await;
        upgrade.assert_status(e.status, e.retry_after, &format!("{} upgrade", e.outcome));
        assert!(
            upgrade.body.is_empty() && upgrade.header("content-type").is_none(),
            "{} upgrade is bare",
            e.outcome
        );
        assert_count(&r, e.outcome, 3.0).await;
    }

    // No thread anywhere, and a host the router does not serve: the same three kinds.
    for (host, outcome, html) in [
        ("edit.acme.localhost", "no_session", true),
        ("example.localhost", "not_preview_host", false),
    ] {
        for headers in [NAV, ASSET, UPGRADE] {
            let a = fetch(&r, host, "/", headers).await;
            assert_eq!(a.status, 404, "{outcome}");
            assert_eq!(a.header("cache-control"), Some("no-store"), "{outcome}");
            match (headers == NAV && html, headers == UPGRADE) {
                (true, _) => a.assert_html("No active session"),
                (_, true) => assert!(a.body.is_empty(), "{outcome} upgrade is bare"),
                _ => a.assert_plain(),
            }
        }
        assert_count(&r, outcome, 3.0).await;
    }
    assert_eq!(up.hits(), 0, "no answer above came from a container");
}

#[tokio::test]
async fn a_container_that_failed_answers_unhealthy_to_each_request_kind() {
    let (r, _up) = router_with_states().await;
    let first = fetch_thread(&r, "dead", "", NAV).await;
    assert_eq!(first.status, 502, "the first failure is seen as it is");
    let nav = fetch_thread(&r, "dead", "", NAV).await;
    nav.assert_status(503, Some("2"), "nav of a failed container");
    nav.assert_html("Preview restarting");
    assert!(
        nav.body.contains("http-equiv=\"refresh\""),
        "the page reloads itself"
    );
    let asset = fetch_thread(&r, "dead", "app.js", ASSET).await;
    asset.assert_status(503, Some("2"), "asset of a failed container");
    asset.assert_plain();
    let upgrade = fetch_thread(&r, "dead", "", UPGRADE).await;
    upgrade.assert_status(503, Some("2"), "upgrade of a failed container");
    assert!(upgrade.body.is_empty());
    assert_count(&r, "container_unhealthy", 3.0).await;
}
