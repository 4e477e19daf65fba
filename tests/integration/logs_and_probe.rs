//! Operations beside the request path: the start-up log, JSON log lines with their documented
//! fields, and the `--probe` health check the container image uses.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{one_session, Router, RouterOptions, Upstream};

#[tokio::test]
async fn json_log_lines_carry_the_documented_fields() {
    let up = Upstream::start("json").await;
    let router = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions {
            extra_toml: "[log]\nformat = \"json\"\n".into(),
            ..RouterOptions::default()
        },
    );
    let resp = router
        .client()
        .get(router.url("edit.acme.localhost", "/session/t1/page?secret=1"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let mut access = None;
    for _ in 0..100 {
        let log = router.log();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        for line in &lines {
            for key in ["ts", "level", "target", "msg"] {
                assert!(line[key].is_string(), "{key} in {line}");
            }
        }
        access = lines.into_iter().find(|l| l["target"] == "access");
        if access.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let access = access.expect("an access line");
    assert_eq!(access["msg"], "request");
    assert_eq!(access["outcome"], "routed");
    assert_eq!(access["status"], 200);
    assert_eq!(access["method"], "GET");
    assert_eq!(
        access["host"],
        format!("edit.acme.localhost:{}", router.proxy.port())
    );
    assert_eq!(access["path"], "/session/t1/page", "no query in the log");
    assert!(access["duration_ms"].is_f64(), "{access}");
    assert_eq!(access["upstream"], up.addr.to_string());
}

#[test]
fn unknown_log_format_is_rejected() {
    let out = Command::new(common::bin())
        .arg("-t")
        .env("SESSION_ROUTER__LOG__FORMAT", "xml")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("format") && err.contains("xml"),
        "{err}"
    );
}

fn probe(url: &str) -> bool {
    Command::new(common::bin())
        .args(["--probe", url])
        .status()
        .expect("run probe")
        .success()
}

#[tokio::test]
async fn probe_follows_readiness() {
    let up = Upstream::start("probe").await;
    let ready = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions::default(),
    );
    assert!(probe(&format!("http://{}/readyz", ready.admin)));
    assert!(!probe(&format!("http://{}/nothing-here", ready.admin)));

    // No sessions file: alive, never ready.
    let unready = Router::start_without_sessions(RouterOptions {
        wait_ready: false,
        ..RouterOptions::default()
    });
    assert!(probe(&format!("http://{}/healthz", unready.admin)));
    assert!(!probe(&format!("http://{}/readyz", unready.admin)));
}

/// The start-up log says where to send requests, where the admin listener is, and which store
/// the routes come from; the first load says how many sessions it found.
#[tokio::test]
async fn start_up_log_names_the_listeners_the_store_and_the_sessions() {
    let router = Router::start(
        &common::one_session(None, "running"),
        RouterOptions::default(),
    );
    let log = router.log();
    let sessions = router.sessions_path();
    for want in [
        format!("previews on http://{}", router.proxy),
        format!("admin on http://{}", router.admin),
        format!("store: file {}", sessions.display()),
        "route table loaded: sessions=1".to_owned(),
    ] {
        assert!(log.contains(&want), "{want:?} not in:\n{log}");
    }
}
