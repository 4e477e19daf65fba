//! Session keys two (client, thread) pairs can render: `{client}-{thread}` makes `acme-x-1` of
//! both (`acme`, `x-1`) and (`acme-x`, `1`), and `{thread}` leaves the client out. Such an item
//! is routed only to the client its `clientId` names, through either engine and either store.

use crate::common;

use common::moto::{s, Moto};
use common::{session, sessions_toml, Router, RouterOptions, Session, Upstream};
use serde_json::Value;

const NAV: &[(&str, &str)] = &[("accept", "text/html"), ("sec-fetch-mode", "navigate")];

/// The request of client `acme` for thread `x-1` and of client `acme-x` for thread `1`, in path
/// mode and in host mode: all four render the key `acme-x-1`.
const ACME: &[(&str, &str)] = &[
    ("edit.acme.localhost", "/session/x-1/"),
    ("x-1.edit.acme.localhost", "/"),
];
const ACME_X: &[(&str, &str)] = &[
    ("edit.acme-x.localhost", "/session/1/"),
    ("1.edit.acme-x.localhost", "/"),
];

fn engine(fast_path: bool) -> RouterOptions {
    RouterOptions {
        listen_extra: format!("fast_path = {fast_path}"),
        ..RouterOptions::default()
    }
}

/// Status and, for an upstream's answer, the name of the upstream that gave it.
async fn get(router: &Router, host: &str, path: &str) -> (u16, String) {
    let mut req = router.client().get(router.url(host, path));
    for (k, v) in NAV {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let echo: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match echo["upstream"].as_str() {
        Some(name) => (status, name.to_owned()),
        None => (status, body),
    }
}

async fn assert_unknown(router: &Router, host: &str, path: &str) {
    let (status, body) = get(router, host, path).await;
    assert_eq!(status, 404, "{host}{path}: {body}");
    assert!(body.contains("Session not found"), "{host}{path}: {body}");
}

async fn assert_routed(router: &Router, host: &str, path: &str, upstream: &str) {
    assert_eq!(
        get(router, host, path).await,
        (200, upstream.to_owned()),
        "{host}{path}"
    );
}

async fn assert_unknown_count(router: &Router, want: f64) {
    let series = "session_router_requests_total{outcome=\"unknown_session\"}";
    assert_eq!(router.metric_eventually(series, want).await, want);
}

fn warnings(router: &Router, event: &str) -> usize {
    let needle = format!("event={event} key=");
    router
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&needle))
        .count()
}

#[tokio::test]
async fn an_ambiguous_key_without_client_id_reaches_no_one() {
    for fast_path in [true, false] {
        let shared = Upstream::start("acme-x-1").await;
        let plain = Upstream::start("acme-t1").await;
        let sessions = [session("acme-x-1", "c1"), session("acme-t1", "c2")];
        let containers = [
            ("c1", Some(shared.addr), "running"),
            ("c2", Some(plain.addr), "running"),
        ];
        let router = Router::start(&sessions_toml(&sessions, &containers), engine(fast_path));
        for _ in 0..3 {
            for (host, path) in ACME.iter().chain(ACME_X) {
                assert_unknown(&router, host, path).await;
            }
        }
        // A key no other pair renders still needs no clientId.
        assert_routed(&router, "edit.acme.localhost", "/session/t1/", "acme-t1").await;

        assert_eq!(shared.hits(), 0, "fast_path = {fast_path}");
        assert_unknown_count(&router, 12.0).await;
        assert_eq!(
            warnings(&router, "ambiguous_session_key"),
            1,
            "{}",
            router.log()
        );
    }
}

#[tokio::test]
async fn an_ambiguous_key_is_routed_to_its_client_id_alone() {
    for fast_path in [true, false] {
        let shared = Upstream::start("acme-x-1").await;
        let sessions = [Session {
            client: Some("acme"),
            ..session("acme-x-1", "c1")
        }];
        let containers = [("c1", Some(shared.addr), "running")];
        let router = Router::start(&sessions_toml(&sessions, &containers), engine(fast_path));
        for _ in 0..2 {
            for (host, path) in ACME {
                assert_routed(&router, host, path, "acme-x-1").await;
            }
            for (host, path) in ACME_X {
                assert_unknown(&router, host, path).await;
            }
        }
        assert_eq!(shared.hits(), 4, "fast_path = {fast_path}");
        assert_unknown_count(&router, 4.0).await;
        assert_eq!(warnings(&router, "client_mismatch"), 1, "{}", router.log());
    }
}

#[tokio::test]
async fn a_thread_keyed_table_routes_only_items_that_name_the_client() {
    let ownerless = Upstream::start("ownerless").await;
    let owned = Upstream::start("owned").await;
    let sessions = [
        session("t1", "c1"),
        Session {
            client: Some("acme"),
            ..session("t2", "c2")
        },
    ];
    let containers = [
        ("c1", Some(ownerless.addr), "running"),
        ("c2", Some(owned.addr), "running"),
    ];
    let opts = RouterOptions {
        routing_extra: "session_key = \"{thread}\"".into(),
        ..RouterOptions::default()
    };
    let router = Router::start(&sessions_toml(&sessions, &containers), opts);
    for host in ["edit.acme.localhost", "edit.globex.localhost"] {
        assert_unknown(&router, host, "/session/t1/").await;
    }
    assert_routed(&router, "edit.acme.localhost", "/session/t2/", "owned").await;
    assert_unknown(&router, "edit.globex.localhost", "/session/t2/").await;

    assert_eq!((ownerless.hits(), owned.hits()), (0, 1));
    assert_unknown_count(&router, 3.0).await;
    assert_eq!(warnings(&router, "ambiguous_session_key"), 1);
    assert_eq!(warnings(&router, "client_mismatch"), 1);
    assert!(router.log().contains("does not name {client}"));
}

#[tokio::test]
async fn dynamodb_items_are_owned_through_their_client_id_attribute() {
    let owned = Upstream::start("owned").await;
    let ownerless = Upstream::start("ownerless").await;
    let moto = Moto::start().await;
    moto.create_default_tables().await;
    let sessions = "webordinary-edit-sessions";
    moto.put(
        sessions,
        &[
            ("sessionId", s("acme-x-1")),
            ("containerId", s("c1")),
            ("clientId", s("acme")),
        ],
    )
    .await;
    moto.put_session("acme-y-1", "c2").await;
    moto.put_container("c1", owned.addr).await;
    moto.put_container("c2", ownerless.addr).await;
    let opts = RouterOptions {
        dynamodb_endpoint: Some(moto.endpoint()),
        ..RouterOptions::default()
    };
    let router = Router::start("", opts);

    assert_routed(&router, "edit.acme.localhost", "/session/x-1/", "owned").await;
    assert_unknown(&router, "edit.acme-x.localhost", "/session/1/").await;
    assert_unknown(&router, "edit.acme.localhost", "/session/y-1/").await;
    assert_eq!((owned.hits(), ownerless.hits()), (1, 0));
}
