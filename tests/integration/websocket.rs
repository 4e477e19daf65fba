//! WebSockets through the router as Vite HMR uses them: subprotocol and token untouched, frames
//! both ways, closes from either side, and an idle socket outliving the downstream read timeout.
//! Sockets go through the router's own path unless a test turns it off to cover Pingora's.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{one_session, Router, RouterOptions, Upstream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

type Ws = WebSocketStream<TcpStream>;

async fn setup(read_timeout: &'static str, websocket_idle: Option<&str>) -> (Router, Upstream) {
    setup_on(Engine::FastPath, read_timeout, websocket_idle).await
}

/// Which of the router's two proxies carries the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    FastPath,
    Pingora,
}

async fn setup_on(
    engine: Engine,
    read_timeout: &'static str,
    websocket_idle: Option<&str>,
) -> (Router, Upstream) {
    let up = Upstream::start("hmr").await;
    let sessions = one_session(Some(up.addr), "running");
    let mut listen_extra = websocket_idle
        .map(|t| format!("websocket_idle_timeout = \"{t}\"\n"))
        .unwrap_or_default();
    if engine == Engine::Pingora {
        listen_extra += "fast_path = false\n";
    }
    let opts = RouterOptions {
        read_timeout,
        listen_extra,
        ..RouterOptions::default()
    };
    (Router::start(&sessions, opts), up)
}

/// Checks that `sockets` upgrades were carried by `engine`: the router's own path counts each
/// one it served when it ends.
async fn assert_carried_by(router: &Router, engine: Engine, sockets: f64) {
    let served = router
        .metric_eventually(
            "session_router_fast_path_requests_total{result=\"served\"}",
            if engine == Engine::FastPath {
                sockets
            } else {
                0.0
            },
        )
        .await;
    let declined = router
        .metric("session_router_fast_path_requests_total{result=\"declined\"}")
        .await;
    match engine {
        Engine::FastPath => assert_eq!((served, declined), (sockets, 0.0), "{}", router.log()),
        Engine::Pingora => assert_eq!(served, 0.0, "{}", router.log()),
    }
}

/// Opens the HMR socket the way the Vite client does from a path-mode page.
async fn connect_hmr(router: &Router) -> (Ws, Value) {
    let host = format!("edit.acme.localhost:{}", router.proxy.port());
    let mut req = format!("ws://{host}/?token=tok-123")
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    headers.insert("origin", format!("http://{host}").parse().unwrap());
    headers.insert("cookie", "sr_session=t1".parse().unwrap());
    let tcp = TcpStream::connect(router.proxy).await.unwrap();
    let (mut ws, resp) = client_async(req, tcp)
        .await
        .expect("upgrade through router");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "vite-hmr");
    let hello = next_text(&mut ws).await;
    (ws, serde_json::from_str(&hello).unwrap())
}

async fn next_text(ws: &mut Ws) -> String {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn hmr_handshake_reaches_upstream_untouched() {
    let (router, _up) = setup("60s", None).await;
    let (_ws, hello) = connect_hmr(&router).await;
    assert_eq!(hello["uri"], "/?token=tok-123");
    assert_eq!(hello["headers"]["sec-websocket-protocol"][0], "vite-hmr");
    assert!(
        hello["headers"].get("cookie").is_none(),
        "router cookie stripped"
    );
    let opened = router
        .metric_eventually("session_router_websocket_connections", 1.0)
        .await;
    assert_eq!(opened, 1.0);
}

/// What each side of one upgrade sees: the handshake the container got (its headers, less the
/// two that hold a port of this test's own) and the 101 the client got, less its Date.
async fn handshake_seen(engine: Engine) -> (Value, BTreeMap<String, String>) {
    let (router, _up) = setup_on(engine, "60s", None).await;
    let host = format!("edit.acme.localhost:{}", router.proxy.port());
    let mut req = format!("ws://{host}/session/t1/?token=tok-123")
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    headers.insert(
        "sec-websocket-key",
        "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
    );
    headers.insert("cookie", "a=1; sr_session=t1".parse().unwrap());
    let tcp = TcpStream::connect(router.proxy).await.unwrap();
    let (mut ws, resp) = client_async(req, tcp).await.expect("upgrade");
    let mut hello: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let sent = hello["headers"].as_object_mut().unwrap();
    for port_bearing in ["host", "x-forwarded-host"] {
        let value = sent.remove(port_bearing);
        assert!(value.is_some(), "{port_bearing} is sent");
    }
    let answer = resp
        .headers()
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_carried_by(&router, engine, 0.0).await;
    (hello, answer)
}

#[tokio::test]
async fn both_engines_pass_the_same_handshake() {
    let fast = handshake_seen(Engine::FastPath).await;
    let pingora = handshake_seen(Engine::Pingora).await;
    assert_eq!(fast, pingora);
    let (hello, answer) = fast;
    assert_eq!(
        hello["uri"], "/?token=tok-123",
        "prefix stripped, query kept"
    );
    assert_eq!(
        hello["headers"]["cookie"][0], "a=1",
        "the router's cookie is not sent on"
    );
    assert_eq!(answer["upgrade"], "websocket");
    assert_eq!(answer["sec-websocket-protocol"], "vite-hmr");
}

#[tokio::test]
async fn frames_echo_and_closes_work_both_ways() {
    echo_and_close_both_ways(Engine::FastPath).await;
}

#[tokio::test]
async fn frames_echo_and_closes_work_both_ways_on_pingoras_path() {
    echo_and_close_both_ways(Engine::Pingora).await;
}

async fn echo_and_close_both_ways(engine: Engine) {
    let (router, _up) = setup_on(engine, "60s", None).await;
    let (mut ws, _) = connect_hmr(&router).await;
    ws.send(Message::Text("{\"type\":\"ping\"}".into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "{\"type\":\"ping\"}");
    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::Binary(payload.clone().into()))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b.as_ref(), payload.as_slice()),
        other => panic!("expected binary echo, got {other:?}"),
    }
    // Client closes: the close handshake completes through the router.
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(matches!(end, Some(Ok(Message::Close(_))) | None), "{end:?}");

    // Upstream closes: the client sees the close frame.
    let (mut ws, _) = connect_hmr(&router).await;
    ws.send(Message::Text("close-please".into())).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(
        matches!(end, Some(Ok(Message::Close(_)))),
        "{end:?} {}",
        router.log()
    );

    let ok = router
        .metric_eventually(
            "session_router_websocket_upgrades_total{result=\"ok\"}",
            2.0,
        )
        .await;
    assert_eq!(ok, 2.0);
    let open = router
        .metric_eventually("session_router_websocket_connections", 0.0)
        .await;
    assert_eq!(open, 0.0, "both sockets counted closed");
    assert_carried_by(&router, engine, 2.0).await;
}

#[tokio::test]
async fn idle_socket_outlives_downstream_read_timeout() {
    let (router, _up) = setup("1s", None).await;
    // Quiet for 2.5 read timeouts, then still echoing.
    let (mut ws, _) = connect_hmr(&router).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ws.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still here");
}

#[tokio::test]
async fn configured_websocket_idle_limit_closes_quiet_sockets() {
    // The same quiet socket is closed when an operator does set an idle limit, which shows the
    // timeout mechanism the previous test relies on being lifted is real.
    let (router, _up) = setup("60s", Some("1s")).await;
    let (mut ws, _) = connect_hmr(&router).await;
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap();
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn sockets_to_a_replaced_container_close_and_reconnect_to_the_new_one() {
    close_on_replace_and_reconnect(Engine::FastPath).await;
}

#[tokio::test]
async fn sockets_to_a_replaced_container_close_on_pingoras_path_too() {
    close_on_replace_and_reconnect(Engine::Pingora).await;
}

async fn close_on_replace_and_reconnect(engine: Engine) {
    let (router, _old) = setup_on(engine, "60s", None).await;
    let new = Upstream::start("new").await;
    let (mut ws, hello) = connect_hmr(&router).await;
    assert_eq!(hello["upstream"], "hmr");

    router.write_sessions(&one_session(Some(new.addr), "running"));
    let changed = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    let waited = changed.elapsed();
    // A close frame the dev client reads as a restart, then the end of the connection.
    match &end {
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            assert_eq!(u16::from(frame.code), 1012, "service restart")
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(
        waited < Duration::from_millis(1500),
        "closed only after {waited:?}"
    );

    let (_ws, hello) = connect_hmr(&router).await;
    assert_eq!(hello["upstream"], "new");
    let closed = router
        .metric_eventually("session_router_websocket_closed_on_replace_total", 1.0)
        .await;
    assert_eq!(closed, 1.0, "{end:?} {}", router.log());
    // The first socket has ended; the second is still open.
    assert_carried_by(&router, engine, 1.0).await;
}

/// An upgrade the container refuses: the client gets the container's answer, and the refusal is
/// counted. (The fast path then closes the connection; Pingora's proxy may keep it.)
async fn refused_upgrade(engine: Engine) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (router, _up) = setup_on(engine, "60s", None).await;
    let mut tcp = TcpStream::connect(router.proxy).await.unwrap();
    // No Sec-WebSocket-Key: the container's WebSocket handler answers 400.
    tcp.write_all(
        b"GET /session/t1/ HTTP/1.1\r\nHost: edit.acme.localhost\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk));
        let n = read.await.expect("an answer in time").unwrap();
        assert!(n > 0, "closed before an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let rejected = router
        .metric_eventually(
            "session_router_websocket_upgrades_total{result=\"rejected\"}",
            1.0,
        )
        .await;
    assert_eq!(rejected, 1.0, "{}", router.log());
    assert_eq!(
        router.metric("session_router_websocket_connections").await,
        0.0
    );
}

#[tokio::test]
async fn a_refused_upgrade_passes_the_containers_answer_on() {
    refused_upgrade(Engine::FastPath).await;
}

#[tokio::test]
async fn a_refused_upgrade_passes_the_containers_answer_on_pingoras_path_too() {
    refused_upgrade(Engine::Pingora).await;
}
