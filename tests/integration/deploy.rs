//! The deploy/ material against the real binary: the Grafana dashboard parses, and it and the
//! Prometheus alert rules name only metrics that the router exports.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{session, sessions_toml, Router, RouterOptions, Upstream};
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Opens one HMR WebSocket through the router and closes it, so the upgrade series exist.
async fn upgrade_once(proxy: SocketAddr) {
    let host = format!("edit.acme.localhost:{}", proxy.port());
    let mut req = format!("ws://{host}/?token=tok")
        .into_client_request()
        .expect("request");
    let headers = req.headers_mut();
    headers.insert("sec-websocket-protocol", "vite-hmr".parse().expect("value"));
    headers.insert("cookie", "sr_session=t1".parse().expect("value"));
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let (ws, _) = tokio::time::timeout(Duration::from_secs(5), client_async(req, tcp))
        .await
        .expect("in time")
        .expect("upgrade");
    drop(ws);
}

/// Every `session_router_*` / `process_*` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("session_router_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard_text =
        std::fs::read_to_string(root.join("grafana/session-router.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut dashboard_exprs = Vec::new();
    exprs(&dashboard, &mut dashboard_exprs);
    assert!(dashboard_exprs.iter().all(|e| !e.trim().is_empty()));
    let rules = std::fs::read_to_string(root.join("prometheus/alerts.yml")).expect("alerts");
    let mut referenced = metric_names(&dashboard_exprs.join("\n"));
    let from_rules = metric_names(&rules);
    assert!(from_rules.len() >= 3, "{from_rules:?}");
    referenced.extend(from_rules);

    // Labelled series exist only once something happened: make each happen once.
    let up = Upstream::start("metrics").await;
    let dead = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let sessions = sessions_toml(
        &[session("acme-t1", "c1"), session("acme-t2", "c2")],
        &[
            ("c1", Some(up.addr), "running"),
            ("c2", Some(dead), "running"),
        ],
    );
    let router = Router::start(
        &sessions,
        RouterOptions {
            health_toml: "interval = \"100ms\"\n".into(),
            ..RouterOptions::default()
        },
    );
    let client = router.client();
    let get = |path: &str| client.get(router.url("edit.acme.localhost", path)).send();
    assert_eq!(get("/session/t1/").await.expect("routed").status(), 200);
    assert_eq!(get("/session/t2/").await.expect("dead").status(), 502);
    assert_eq!(get("/session/nope/").await.expect("unknown").status(), 404);
    upgrade_once(router.proxy).await;
    let checked = router
        .metric_eventually("session_router_health_checks_total{result=\"ok\"}", 1.0)
        .await;
    assert!(checked >= 1.0);

    let scrape = router.metrics().await;
    let mut exported = BTreeSet::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        exported.insert(name.to_owned());
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                exported.insert(base.to_owned());
            }
        }
    }
    let missing: Vec<_> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}"
    );
    for core in [
        "session_router_requests_total",
        "session_router_request_duration_seconds_bucket",
        "session_router_route_table_last_refresh_timestamp_seconds",
        "session_router_websocket_connections",
    ] {
        assert!(referenced.contains(core), "dashboard or alerts miss {core}");
    }
}
