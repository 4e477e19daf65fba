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
        "session_router_stream_records_total",
        "session_router_stream_lag_seconds",
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

/// One router variable of the task definition: `Value` or `ValueFrom`, the value as written, and
/// the condition of the `!If` that sets it, if any.
struct Variable {
    name: String,
    kind: String,
    value: String,
    condition: Option<String>,
}

/// The router's environment in the task definition: every `SESSION_ROUTER__` variable.
fn router_environment(template: &str) -> Vec<Variable> {
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
        // `- !If`, `- Condition`, then the variable.
        let condition = (i >= 2 && lines[i - 2] == "- !If")
            .then(|| lines[i - 1].trim_start_matches("- ").to_owned());
        env.push(Variable {
            name: format!("SESSION_ROUTER__{name}"),
            kind: kind.to_owned(),
            value: value.to_owned(),
            condition,
        });
    }
    env
}

/// The template's conditions that guard router variables, for a set of parameters.
fn condition(name: &str, parameter: &dyn Fn(&str) -> String) -> bool {
    let given = |p: &str| !parameter(p).is_empty();
    match name {
        "UseTls" => given("CertificateArn"),
        "HasInlineJwks" => given("AccessJwks"),
        "HasJwksArn" => given("AccessJwksArn"),
        "WakeViaSqs" => parameter("WakeKind") == "sqs",
        "WakeViaHttp" => parameter("WakeKind") == "http",
        "HasWakeSecret" => parameter("WakeKind") == "http" && given("WakeSecretArn"),
        other => panic!("condition {other} has no meaning in this test"),
    }
}

/// The template's router environment, with its parameters at their defaults and samples for the
/// private-preview and wake values, is a configuration the router accepts: with the JWKS inline
/// or from a secret store, and with each waker. Secrets (the grant secret, the wake secret) come
/// only from a secret store.
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
    let grant_secret = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01";
    // All digits: taken as a number if it were not read verbatim.
    let wake_secret = "01234567890123456789";

    let env = router_environment(&template);
    let has = |name: &str, kind: &str, condition: Option<&str>| {
        env.iter()
            .any(|v| v.name == name && v.kind == kind && v.condition.as_deref() == condition)
    };
    assert!(has("SESSION_ROUTER__ACCESS__DEFAULT", "Value", None));
    assert!(has(
        "SESSION_ROUTER__ACCESS__JWKS",
        "Value",
        Some("HasInlineJwks")
    ));
    assert!(has(
        "SESSION_ROUTER__ACCESS__JWKS",
        "ValueFrom",
        Some("HasJwksArn")
    ));
    assert!(has(
        "SESSION_ROUTER__ACCESS__GRANT_SECRET",
        "ValueFrom",
        None
    ));
    assert!(has("SESSION_ROUTER__WAKE__KIND", "Value", None));
    assert!(has(
        "SESSION_ROUTER__STORE__DYNAMODB__STREAMS",
        "Value",
        None
    ));
    assert!(has(
        "SESSION_ROUTER__STORE__DYNAMODB__STREAM_POLL_INTERVAL",
        "Value",
        None
    ));
    assert!(has(
        "SESSION_ROUTER__WAKE__QUEUE_URL",
        "Value",
        Some("WakeViaSqs")
    ));
    assert!(has(
        "SESSION_ROUTER__WAKE__URL",
        "Value",
        Some("WakeViaHttp")
    ));
    assert!(has(
        "SESSION_ROUTER__WAKE__SECRET",
        "ValueFrom",
        Some("HasWakeSecret")
    ));
    for secret in ["ACCESS__GRANT_SECRET", "WAKE__SECRET"] {
        let name = format!("SESSION_ROUTER__{secret}");
        assert!(
            !env.iter().any(|v| v.name == name && v.kind == "Value"),
            "{name} is never a plain value"
        );
    }

    let defaults = parameter_defaults(&template);
    let default = |name: &str| defaults.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    assert_eq!(
        default("AccessDefault").map(String::as_str),
        Some("private")
    );
    assert_eq!(default("WakeKind").map(String::as_str), Some("none"));
    assert_eq!(default("Streams").map(String::as_str), Some("true"));

    let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/session-wakes.fifo";
    let secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:wake-AbCdEf";
    let jwks_arn = "arn:aws:ssm:us-east-1:123456789012:parameter/session-router/jwks";
    let certificate = "arn:aws:acm:us-east-1:123456789012:certificate/sample";
    let scenarios: [&[(&str, &str)]; 5] = [
        &[("AccessJwks", &jwks)],
        &[
            ("AccessJwks", &jwks),
            ("Streams", "false"),
            ("StreamPollInterval", "500ms"),
        ],
        &[("AccessJwksArn", jwks_arn), ("CertificateArn", certificate)],
        &[
            ("AccessJwks", &jwks),
            ("WakeKind", "sqs"),
            ("WakeQueueUrl", queue),
        ],
        &[
            ("AccessJwksArn", jwks_arn),
            ("WakeKind", "http"),
            ("WakeUrl", "https://platform.example.com/session-wake"),
            ("WakeSecretArn", secret_arn),
        ],
    ];
    for given in scenarios {
        let parameter = |name: &str| {
            given
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| default(name).cloned())
                .unwrap_or_else(|| panic!("no parameter {name}"))
        };
        let mut resolved = Vec::new();
        for v in &env {
            if let Some(c) = &v.condition {
                if !condition(c, &parameter) {
                    continue;
                }
            }
            let value = match (v.kind.as_str(), v.value.split_once(' ')) {
                ("ValueFrom", _) => match v.name.as_str() {
                    "SESSION_ROUTER__ACCESS__GRANT_SECRET" => grant_secret.to_owned(),
                    "SESSION_ROUTER__ACCESS__JWKS" => jwks.clone(),
                    "SESSION_ROUTER__WAKE__SECRET" => wake_secret.to_owned(),
                    name => panic!("{name}: no sample secret in this test"),
                },
                ("Value", Some(("!Ref", param))) => parameter(param),
                ("Value", Some(("!Sub", text))) => {
                    let mut text = scalar(text);
                    while let Some((before, rest)) = text.split_once("${") {
                        let (param, after) = rest.split_once('}').expect("closed ${");
                        text = format!("{before}{}{after}", parameter(param));
                    }
                    text
                }
                // `!If [Condition, then, else]` of two plain scalars.
                ("Value", Some(("!If", arms))) => {
                    let arms = arms.trim_start_matches('[').trim_end_matches(']');
                    let arms: Vec<&str> = arms.split(", ").collect();
                    let [c, then, otherwise] = arms[..] else {
                        panic!("{}: {} is not a plain !If", v.name, v.value);
                    };
                    scalar(if condition(c, &parameter) {
                        then
                    } else {
                        otherwise
                    })
                }
                ("Value", _) if !v.value.starts_with('!') => scalar(&v.value),
                _ => panic!(
                    "{}: {} {} has no sample in this test",
                    v.name, v.kind, v.value
                ),
            };
            resolved.push((v.name.as_str(), value));
        }
        let run = |skip: &str| {
            let mut cmd = std::process::Command::new(common::bin());
            cmd.arg("-t");
            for (name, value) in resolved.iter().filter(|(n, _)| *n != skip) {
                cmd.env(name, value);
            }
            cmd.output().expect("-t")
        };
        let out = run("");
        assert!(
            out.status.success(),
            "the template's environment with {given:?} is refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let set = |name: &str| resolved.iter().any(|(n, _)| *n == name);
        assert!(set("SESSION_ROUTER__ACCESS__JWKS"));
        // The wake secret's wiring is what lets an http waker start at all.
        if parameter("WakeKind") == "http" {
            assert!(set("SESSION_ROUTER__WAKE__SECRET"));
            let out = run("SESSION_ROUTER__WAKE__SECRET");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("wake.secret"),
                "{stderr}"
            );
        }
    }
}

/// The statements of the template's policy `name`: each one's actions and resources as written
/// (`!Sub` kept, quotes removed).
fn policy_statements(template: &str, name: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let start = template
        .find(&format!("PolicyName: {name}\n"))
        .unwrap_or_else(|| panic!("no policy {name}"));
    let body = &template[start + 1..];
    let end = ["PolicyName: ", "- !Ref AWS::NoValue", "\n\n"]
        .iter()
        .filter_map(|stop| body.find(stop))
        .min()
        .unwrap_or(body.len());
    let mut statements = Vec::new();
    for statement in body[..end].split("- Effect: Allow").skip(1) {
        // [actions, resources], and which of the two a `- item` line belongs to.
        let mut lists: [Vec<String>; 2] = Default::default();
        let mut current: Option<usize> = None;
        for line in statement.lines().map(str::trim) {
            if let Some(item) = line.strip_prefix("- ") {
                if let Some(i) = current {
                    lists[i].push(scalar(item));
                }
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            current = match key {
                "Action" => Some(0),
                "Resource" => Some(1),
                _ => None,
            };
            if let (Some(i), false) = (current, value.trim().is_empty()) {
                lists[i].push(scalar(value));
            }
        }
        let [actions, resources] = lists;
        statements.push((actions, resources));
    }
    statements
}

/// With `Streams` on, the task role may follow both tables' streams: DescribeTable (the latest
/// stream's ARN) on the tables, DescribeStream, GetShardIterator and GetRecords on any stream of
/// either table, and ListStreams, which takes no resource. The template names the tables rather
/// than creating them, so deploy/README.md enables their NEW_AND_OLD_IMAGES streams.
#[test]
fn task_role_follows_both_tables_streams() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template =
        std::fs::read_to_string(root.join("deploy/cloudformation.yaml")).expect("template");
    assert!(
        template.contains("UseStreams: !Equals [!Ref Streams, \"true\"]"),
        "the stream policy follows the Streams parameter"
    );
    assert!(template.contains("- UseStreams\n          - PolicyName: follow-route-streams\n"));
    let statements = policy_statements(&template, "follow-route-streams");
    let grants = |action: &str, resource: &str| {
        statements.iter().any(|(actions, resources)| {
            actions.iter().any(|a| a == action) && resources.iter().any(|r| r.ends_with(resource))
        })
    };
    for table in ["${SessionsTableName}", "${ContainersTableName}"] {
        assert!(
            grants("dynamodb:DescribeTable", &format!(":table/{table}")),
            "DescribeTable on {table}: {statements:?}"
        );
        for action in [
            "dynamodb:DescribeStream",
            "dynamodb:GetShardIterator",
            "dynamodb:GetRecords",
        ] {
            assert!(
                grants(action, &format!(":table/{table}/stream/*")),
                "{action} on {table}'s streams: {statements:?}"
            );
        }
    }
    assert!(
        statements.iter().any(|(actions, resources)| {
            actions.iter().any(|a| a == "dynamodb:ListStreams")
                && resources.len() == 1
                && resources[0] == "*"
        }),
        "ListStreams on *: {statements:?}"
    );
    // Granted only what the router calls: no stream action on a table ARN, none elsewhere.
    for (actions, resources) in &statements {
        for action in actions {
            assert!(action.starts_with("dynamodb:"), "{action}");
        }
        if actions.iter().any(|a| a == "dynamodb:GetRecords") {
            assert!(resources.iter().all(|r| r.ends_with("/stream/*")));
        }
    }

    // The tables' streams: one update-table command per table, NEW_AND_OLD_IMAGES.
    let readme = std::fs::read_to_string(root.join("deploy/README.md")).expect("deploy README");
    let commands: Vec<String> = readme
        .replace("\\\n", " ")
        .lines()
        .filter(|l| l.trim_start().starts_with("aws dynamodb update-table "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let enable = "--stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES";
    let defaults = parameter_defaults(&template);
    for parameter in ["SessionsTableName", "ContainersTableName"] {
        let table = &defaults
            .iter()
            .find(|(n, _)| n == parameter)
            .unwrap_or_else(|| panic!("no default for {parameter}"))
            .1;
        assert!(
            commands
                .iter()
                .any(|c| c.contains(&format!("--table-name {table} ")) && c.contains(enable)),
            "deploy/README.md enables no NEW_AND_OLD_IMAGES stream on {table}: {commands:?}"
        );
    }
}
