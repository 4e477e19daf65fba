//! The deploy/ material against the real binary: the Grafana dashboard parses, and it and the
//! Prometheus alert rules name only metrics that the router exports; the CloudFormation
//! template's router environment is a configuration the router accepts.

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

/// A YAML scalar as written in the template: plain, 'single' or "double" quoted.
fn scalar(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        inner.to_owned()
    } else {
        raw.to_owned()
    }
}

/// The `Default` of each parameter of the template.
fn parameter_defaults(template: &str) -> Vec<(String, String)> {
    let section = template
        .split("\nParameters:\n")
        .nth(1)
        .and_then(|rest| rest.split("\nConditions:\n").next())
        .expect("Parameters section");
    let mut defaults = Vec::new();
    let mut name = None;
    for line in section.lines() {
        if let Some(n) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
            if !n.starts_with(' ') && !n.starts_with('#') {
                name = Some(n.to_owned());
            }
        } else if let (Some(n), Some(value)) = (&name, line.strip_prefix("    Default: ")) {
            defaults.push((n.clone(), scalar(value)));
        }
    }
    defaults
}

/// The router's environment in the task definition: (name, `Value` or `ValueFrom`, value as
/// written), for every `SESSION_ROUTER__` variable.
fn router_environment(template: &str) -> Vec<(String, String, String)> {
    let lines: Vec<&str> = template.lines().map(str::trim).collect();
    let mut env = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim_start_matches("- ");
        let Some(name) = line.strip_prefix("Name: SESSION_ROUTER__") else {
            continue;
        };
        let (kind, value) = lines[i + 1]
            .split_once(": ")
            .expect("a value after the name");
        env.push((
            format!("SESSION_ROUTER__{name}"),
            kind.to_owned(),
            value.to_owned(),
        ));
    }
    env
}

/// The template's router environment, with its parameters at their defaults and samples for
/// the private-preview values, is a configuration the router accepts; the grant secret comes
/// only from a secret store, the JWKS either inline or from one.
#[test]
fn template_environment_is_a_valid_router_configuration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template =
        std::fs::read_to_string(root.join("deploy/cloudformation.yaml")).expect("template");
    let keys = std::process::Command::new(common::bin())
        .args(["keys", "--kid", "editor-1"])
        .output()
        .expect("keys");
    let key: serde_json::Value = serde_json::from_slice(&keys.stdout).expect("keys JSON");
    let jwks = serde_json::json!({ "keys": [key["jwk"]] }).to_string();
    let secret = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01";

    let mut parameters = parameter_defaults(&template);
    parameters.push(("AccessJwks".into(), jwks.clone()));
    let parameter = |name: &str| {
        parameters
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no parameter {name}"))
    };
    let env = router_environment(&template);
    let mut resolved = Vec::new();
    for (name, kind, value) in &env {
        let value = match (kind.as_str(), value.split_once(' ')) {
            ("ValueFrom", _) if name == "SESSION_ROUTER__ACCESS__GRANT_SECRET" => secret.to_owned(),
            ("ValueFrom", _) if name == "SESSION_ROUTER__ACCESS__JWKS" => jwks.clone(),
            ("Value", Some(("!Ref", param))) => parameter(param),
            ("Value", Some(("!Sub", text))) => {
                let mut text = scalar(text);
                while let Some((before, rest)) = text.split_once("${") {
                    let (param, after) = rest.split_once('}').expect("closed ${");
                    text = format!("{before}{}{after}", parameter(param));
                }
                text
            }
            // `!If [Condition, "when true", "when false"]`: the condition's true branch.
            ("Value", Some(("!If", choice))) => {
                let branches: Vec<&str> = choice.trim_matches(['[', ']']).split(',').collect();
                scalar(branches.get(1).expect("a true branch").trim())
            }
            ("Value", _) if !value.starts_with('!') => scalar(value),
            _ => panic!("{name}: {kind} {value} has no sample in this test"),
        };
        resolved.push((name.as_str(), value));
    }

    let has = |name: &str, kind: &str| env.iter().any(|(n, k, _)| n == name && k == kind);
    assert!(has("SESSION_ROUTER__ACCESS__DEFAULT", "Value"));
    assert!(has("SESSION_ROUTER__ACCESS__JWKS", "Value"), "inline JWKS");
    assert!(
        has("SESSION_ROUTER__ACCESS__JWKS", "ValueFrom"),
        "JWKS from a store"
    );
    assert!(has("SESSION_ROUTER__ACCESS__GRANT_SECRET", "ValueFrom"));
    assert!(
        !has("SESSION_ROUTER__ACCESS__GRANT_SECRET", "Value"),
        "the grant secret is never a plain value"
    );
    assert_eq!(parameter("AccessDefault"), "private");

    // Once with the JWKS inline, once from the secret store; the secret always from it.
    for from_store in [false, true] {
        let mut cmd = std::process::Command::new(common::bin());
        cmd.arg("-t");
        let mut jwks_set = false;
        for ((name, value), (_, kind, _)) in resolved.iter().zip(&env) {
            if *name == "SESSION_ROUTER__ACCESS__JWKS" {
                if (kind == "ValueFrom") != from_store {
                    continue;
                }
                jwks_set = true;
            }
            cmd.env(name, value);
        }
        assert!(jwks_set);
        let out = cmd.output().expect("-t");
        assert!(
            out.status.success(),
            "the template's environment is refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
