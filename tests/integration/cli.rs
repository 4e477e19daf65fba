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

/// The operator's recipe end to end: `keys` makes a pair, `token` signs with its private half
/// from the environment, and the router's verifier accepts the token with the public JWK.
#[test]
fn keys_and_token_subcommands_make_a_link_the_router_accepts() {
    let keys = Command::new(common::bin())
        .args(["keys", "--kid", "k1"])
        .output()
        .unwrap();
    assert!(keys.status.success(), "{}", stderr(&keys));
    let key: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    let token = Command::new(common::bin())
        .args([
            "token", "--client", "acme", "--thread", "t1", "--kid", "k1", "--gen", "4",
        ])
        .env(
            "SESSION_ROUTER_SIGNING_KEY",
            key["private_key"].as_str().unwrap(),
        )
        .output()
        .unwrap();
    assert!(token.status.success(), "{}", stderr(&token));
    let token = String::from_utf8(token.stdout).unwrap();
    let jwks = serde_json::json!({"keys": [key["jwk"]]}).to_string();
    let verifier = session_router::access::Verifier::from_jwks(&jwks, "session-router").unwrap();
    let claims = verifier.verify(token.trim(), "acme", "t1").unwrap();
    assert_eq!(claims.gen, 4);
    assert!(verifier.verify(token.trim(), "acme", "t2").is_err());
}

#[test]
fn token_without_a_signing_key_says_which_variable_to_set() {
    let out = Command::new(common::bin())
        .args(["token", "--client", "acme", "--thread", "t1", "--kid", "k1"])
        .env_remove("SESSION_ROUTER_SIGNING_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("SESSION_ROUTER_SIGNING_KEY"),
        "{}",
        stderr(&out)
    );
}

/// `--help` describes every flag as this program uses it, Pingora's included.
#[test]
fn help_describes_the_router_not_the_library() {
    let out = Command::new(common::bin())
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--upgrade",
        "--daemon",
        "--test",
        "--conf",
        "--config",
        "--probe",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    assert!(help.contains("Take over the listening sockets"), "{help}");
    assert!(!help.contains("pingora-based service"), "{help}");
    assert!(!help.contains("nocapture"), "{help}");
}
