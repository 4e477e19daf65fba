//! `GET /sessions/{sessionId}` on the admin port: what one router holds and knows about a
//! session, and nothing on the proxy port.

use crate::common;

use std::time::Duration;

use common::{one_session, Router, RouterOptions, Upstream};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn inspect(router: &Router, key: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{}/sessions/{key}", router.admin))
        .await
        .expect("admin");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_is_shown_with_its_route_activity_and_sockets() {
    let up = Upstream::start("c1").await;
    let router = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions::default(),
    );
    let (status, before) = inspect(&router, "acme-t1").await;
    assert_eq!(status, 200);
    assert_eq!(before["route"]["containerId"], "c1");
    assert_eq!(before["route"]["container"]["address"], up.addr.to_string());
    assert_eq!(before["route"]["container"]["status"], "running");
    assert_eq!(before["route"]["source"], "table");
    assert_eq!(before["access"]["level"], "public", "the tests' default");
    assert!(before["lastActivityAt"].is_null(), "not used yet");

    let host = format!("edit.acme.localhost:{}", router.proxy.port());
    let mut req = format!("ws://{host}/session/t1/")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    let tcp = TcpStream::connect(router.proxy).await.unwrap();
    let (mut ws, _) = client_async(req, tcp).await.expect("upgrade");
    let hello = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(matches!(hello, Ok(Some(Ok(_)))), "{hello:?}");

    let (_, after) = inspect(&router, "acme-t1").await;
    assert_eq!(after["openWebSockets"], 1);
    let used = after["lastActivityAt"].as_u64().expect("activity recorded");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(used <= now && now - used < 10, "{used} vs {now}");

    let (status, _) = inspect(&router, "acme-nope").await;
    assert_eq!(status, 404);
    let (status, _) = inspect(&router, "acme-t1%2F..").await;
    assert_eq!(status, 400);
    let on_proxy = router
        .client()
        .get(router.url("edit.acme.localhost", "/sessions/acme-t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        on_proxy.status(),
        404,
        "no admin answers on the proxy listener"
    );
}
