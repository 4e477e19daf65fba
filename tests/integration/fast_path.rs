//! The router's own HTTP/1.1 path: it forwards exactly what Pingora's proxy forwards, frames
//! every kind of response body, reuses and retries container connections, keeps pipelined
//! requests in order, and hands everything else to Pingora.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::raw::{RawUpstream, Reply};
use common::{one_session, session, sessions_toml, Router, RouterOptions, Upstream};
use serde_json::Value;

fn with_fast_path(on: bool) -> RouterOptions {
    RouterOptions {
        listen_extra: format!("fast_path = {on}"),
        ..RouterOptions::default()
    }
}

/// What a client sees of one answer, less what may differ between two routers: the Date, the
/// router's own port in the forwarded Host, and `Connection: keep-alive`, which HTTP/1.1 means
/// without it being said (Pingora says it, the fast path does not).
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
}

async fn seen(
    router: &Router,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Seen {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = router.client().request(method, router.url(host, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let mut seen_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in resp.headers() {
        let default_keep_alive = k == "connection" && v == "keep-alive";
        if k != "date" && !default_keep_alive {
            let v = v.to_str().unwrap_or("<binary>").to_owned();
            seen_headers
                .entry(k.as_str().to_owned())
                .or_default()
                .push(v);
        }
    }
    Seen {
        status: resp.status().as_u16(),
        headers: seen_headers,
        body: resp
            .text()
            .await
            .unwrap_or_default()
            .replace(&format!(":{}", router.proxy.port()), ":PORT"),
    }
}

/// Method, host, path and request headers of one request.
type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);

async fn fast_path_count(router: &Router, result: &str) -> f64 {
    let series = format!("session_router_fast_path_requests_total{{result=\"{result}\"}}");
    router.metric(&series).await
}

#[tokio::test]
async fn the_fast_path_forwards_and_answers_exactly_as_pingora_does() {
    let up = Upstream::start("up").await;
    let sessions = sessions_toml(
        &[session("acme-t1", "c1")],
        &[("c1", Some(up.addr), "running")],
    );
    let fast = Router::start(&sessions, with_fast_path(true));
    let pingora = Router::start(&sessions, with_fast_path(false));
    let nav = [("accept", "text/html"), ("sec-fetch-mode", "navigate")];
    let cases: Vec<Case> = vec![
        (
            "GET",
            "edit.acme.localhost",
            "/session/t1/a/b?x=1&y=%20",
            nav.to_vec(),
        ),
        (
            "GET",
            "edit.acme.localhost",
            "/@vite/client",
            vec![("referer", "http://edit.acme.localhost/session/t1/")],
        ),
        (
            "GET",
            "edit.acme.localhost",
            "/src/a.css",
            vec![("cookie", "a=1; sr_session=t1; b=2")],
        ),
        (
            "GET",
            "edit.acme.localhost",
            "/src/b.css",
            vec![("cookie", "sr_session=t1")],
        ),
        (
            "GET",
            "t1.edit.acme.localhost",
            "/x?q=1",
            vec![("sec-fetch-mode", "no-cors")],
        ),
        ("HEAD", "edit.acme.localhost", "/session/t1/", vec![]),
        ("OPTIONS", "edit.acme.localhost", "/session/t1/", vec![]),
        (
            "GET",
            "edit.acme.localhost",
            "/session/t1/spoof",
            vec![
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-prefix", "/evil"),
            ],
        ),
        (
            "GET",
            "edit.acme.localhost",
            "/session/t1/hop",
            vec![("connection", "x-hop"), ("x-hop", "1")],
        ),
    ];
    for (method, host, path, headers) in &cases {
        let a = seen(&fast, method, host, path, headers).await;
        let b = seen(&pingora, method, host, path, headers).await;
        assert_eq!(a, b, "{method} {host}{path}");
        assert!(a.status == 200, "{method} {host}{path}: {a:?}");
    }
    // A Connection header naming other headers is Pingora's to judge; every other case took the
    // fast path.
    assert_eq!(
        fast_path_count(&fast, "served").await,
        (cases.len() - 1) as f64,
    );
    assert_eq!(fast_path_count(&fast, "declined").await, 1.0);
    assert_eq!(fast_path_count(&pingora, "served").await, 0.0);
}

/// Serves bodies of every framing, by path.
fn framing_script(_conn: usize, _request: usize, head: &str) -> Reply {
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let ok = |extra: &str, body: &str| -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\n{extra}\r\n{body}").into_bytes()
    };
    match path {
        "/chunked" => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
            b"lo\r\n6\r\n world\r\n".to_vec(),
            b"0\r\n\r\n".to_vec(),
        ]),
        "/split" => Reply::Pieces(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello".to_vec(),
            b" world".to_vec(),
        ]),
        "/until-close" => Reply::SendAndClose(ok("", "hello world")),
        "/empty" => Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        "/hints" => Reply::Send(
            [
                &b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"[..],
                &ok("Content-Length: 11\r\n", "hello world")[..],
            ]
            .concat(),
        ),
        _ => Reply::Send(ok("Content-Length: 11\r\n", "hello world")),
    }
}

#[tokio::test]
async fn every_body_framing_arrives_whole_and_keep_alive_reuses_the_container_connection() {
    let raw = RawUpstream::start(Box::new(framing_script));
    let router = Router::start(
        &one_session(Some(raw.addr), "running"),
        RouterOptions::default(),
    );
    for path in ["/split", "/chunked", "/hints", "/split"] {
        let a = seen(
            &router,
            "GET",
            "edit.acme.localhost",
            &format!("/session/t1{path}"),
            &[],
        )
        .await;
        assert_eq!((a.status, a.body.as_str()), (200, "hello world"), "{path}");
    }
    assert_eq!(
        raw.connections(),
        1,
        "one container connection for every keep-alive request"
    );
    let empty = seen(
        &router,
        "GET",
        "edit.acme.localhost",
        "/session/t1/empty",
        &[],
    )
    .await;
    assert_eq!((empty.status, empty.body.as_str()), (204, ""));
    let closing = seen(
        &router,
        "GET",
        "edit.acme.localhost",
        "/session/t1/until-close",
        &[],
    )
    .await;
    assert_eq!(
        (closing.status, closing.body.as_str()),
        (200, "hello world")
    );
    assert_eq!(
        closing.headers["connection"],
        ["close"],
        "a close-delimited body ends the client connection"
    );
    let after = seen(
        &router,
        "GET",
        "edit.acme.localhost",
        "/session/t1/split",
        &[],
    )
    .await;
    assert_eq!(after.body, "hello world");
    assert_eq!(
        raw.connections(),
        2,
        "a connection the container closed is not reused"
    );
    assert_eq!(fast_path_count(&router, "served").await, 7.0);
}

#[tokio::test]
async fn a_pooled_connection_the_container_dropped_is_retried_on_a_new_one() {
    // Each connection answers one request, then reads the next and hangs up without a word.
    let raw = RawUpstream::start(Box::new(|_, request, _| match request {
        0 => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
        _ => Reply::Close,
    }));
    let router = Router::start(
        &one_session(Some(raw.addr), "running"),
        RouterOptions::default(),
    );
    for _ in 0..3 {
        let a = seen(&router, "GET", "edit.acme.localhost", "/session/t1/x", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
    }
    assert_eq!(raw.connections(), 3);
    assert_eq!(fast_path_count(&router, "served").await, 3.0);
    assert_eq!(fast_path_count(&router, "upstream_failed").await, 0.0);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start("up").await;
    let router = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions::default(),
    );
    let mut conn = std::net::TcpStream::connect(router.proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(
        b"GET /session/t1/first HTTP/1.1\r\nHost: edit.acme.localhost\r\n\r\n\
          GET /session/t1/second HTTP/1.1\r\nHost: edit.acme.localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answers = String::new();
    conn.read_to_string(&mut answers).unwrap();
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
    let first = answers.find("\"uri\":\"/first\"").expect("first answer");
    let second = answers.find("\"uri\":\"/second\"").expect("second answer");
    assert!(first < second, "{answers}");
}

#[tokio::test]
async fn everything_else_is_handed_to_pingora_on_the_same_connection() {
    let up = Upstream::start("up").await;
    let router = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions::default(),
    );
    let client = router.client();
    let post = client
        .post(router.url("edit.acme.localhost", "/session/t1/api"))
        .body("payload")
        .send()
        .await
        .unwrap();
    let echo: Value = post.json().await.unwrap();
    assert_eq!(
        (echo["method"].as_str(), echo["uri"].as_str()),
        (Some("POST"), Some("/api"))
    );
    let unknown = seen(
        &router,
        "GET",
        "edit.acme.localhost",
        "/session/nobody/",
        &[],
    )
    .await;
    assert_eq!(unknown.status, 404);
    // The same client connection is back on the fast path for its next plain request.
    let plain = seen(&router, "GET", "edit.acme.localhost", "/session/t1/x", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(fast_path_count(&router, "declined").await, 1.0);
    assert_eq!(fast_path_count(&router, "not_routed").await, 1.0);
    assert_eq!(fast_path_count(&router, "served").await, 1.0);
    let routed = "session_router_requests_total{outcome=\"routed\"}";
    assert_eq!(
        router.metric_eventually(routed, 2.0).await,
        2.0,
        "counted once each, by either path"
    );
}
