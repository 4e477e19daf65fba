//! The command line: `-t` validates both config files and names what is wrong.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

fn check(router_toml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.toml");
    std::fs::write(&path, router_toml).unwrap();
    Command::new(common::bin())
        .arg("--config")
        .arg(&path)
        .arg("-t")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_key_is_rejected_by_name() {
    let out = check("[routing]\npath_hosts = [\"edit.{client}.x\"]\ncontainer_prot = 4321\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("container_prot"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn malformed_duration_is_rejected_by_name() {
    let out = check("[upstream]\nconnect_timeout = \"2 fortnights\"\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("connect_timeout"), "{err}");
}

#[test]
fn bad_host_pattern_is_rejected_with_reason() {
    let out = check("[routing]\npath_hosts = [\"edit.example.com\"]\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("routing.path_hosts") && err.contains("{client}"),
        "{err}"
    );
}

#[test]
fn environment_overrides_are_validated_too() {
    let out = Command::new(common::bin())
        .arg("-t")
        .env("SESSION_ROUTER__STORE__NEGATIVE_TTL", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).to_lowercase().contains("negative_ttl"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_config_file_is_an_error() {
    let out = Command::new(common::bin())
        .args(["--config", "/nonexistent/router.toml", "-t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/router.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_shipped_config_validates() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let yaml = conf.join("pingora.yaml");
    let mut checked = 0;
    for entry in std::fs::read_dir(&conf).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("router") || path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = Command::new(common::bin())
            .arg("--config")
            .arg(&path)
            .arg("-c")
            .arg(&yaml)
            .arg("-t")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        checked += 1;
    }
    assert!(checked >= 1);
    let out = Command::new(common::bin()).arg("-t").output().unwrap();
    assert!(out.status.success(), "embedded default: {}", stderr(&out));
}
