use std::io::Write;

use super::*;

fn load_str(toml: &str) -> Result<Config, ConfigError> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    Config::load_with_env(
        ConfigSource::File(f.path()),
        Env::prefixed("SR_TEST_UNSET__"),
    )
}

#[test]
fn embedded_default_is_valid() {
    let cfg =
        Config::load_with_env(ConfigSource::Embedded, Env::prefixed("SR_TEST_UNSET__")).unwrap();
    assert_eq!(cfg.store.kind, StoreKind::File);
    assert_eq!(
        cfg.routing.hosts.path_hosts[0].as_str(),
        "edit.{client}.localhost"
    );
}

#[test]
fn unknown_key_is_named() {
    let err = load_str("[routing]\npath_host = []\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("path_host"), "{err}");
}

#[test]
fn malformed_duration_is_named() {
    let err = load_str("[store]\nrefresh_interval = \"5 parsecs\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("refresh_interval"), "{err}");
}

#[test]
fn semantic_errors_name_the_key() {
    let err = load_str("[upstream]\nallowed_cidrs = [\"10.0.0.0/33\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("key `upstream.allowed_cidrs`"), "{err}");
    let err = load_str("[routing]\nsession_key = \"{client}\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("key `routing.session_key`"), "{err}");
}

#[test]
fn miss_budgets_take_whole_or_fractional_rates_above_zero() {
    let cfg = load_str("[store]\nmiss_rate_per_client = 2\nmiss_rate_total = 0.5\n").unwrap();
    let limits = cfg.store.miss_limits();
    assert_eq!(limits.per_client.per_second, 2.0);
    assert_eq!(limits.total.per_second, 0.5);
    assert_eq!((limits.per_client.burst, limits.total.burst), (20, 200));
    for (toml, key) in [
        ("miss_rate_per_client = 0", "store.miss_rate_per_client"),
        ("miss_rate_total = -1.0", "store.miss_rate_total"),
        ("miss_burst_per_client = 0", "store.miss_burst_per_client"),
        ("miss_burst_total = 0", "store.miss_burst_total"),
    ] {
        let err = load_str(&format!("[store]\n{toml}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("key `{key}`")), "{err}");
    }
}

#[test]
fn allowlist_entries_that_admit_nothing_are_refused() {
    for entry in [
        "169.254.0.0/16",
        "fd00:ec2::/32",
        "64:ff9b::/96",
        "::ffff:169.254.0.0/112",
    ] {
        let err = load_str(&format!("[upstream]\nallowed_cidrs = [\"{entry}\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("key `upstream.allowed_cidrs`"), "{err}");
        assert!(err.contains("always refused"), "{err}");
    }
}

#[test]
fn mapped_and_wide_allowlist_entries_are_accepted() {
    let toml =
        "[upstream]\nallowed_cidrs = [\"::ffff:10.0.0.0/104\", \"::ffff:0:0/96\", \"::/0\"]\n";
    let cfg = load_str(toml).unwrap();
    assert_eq!(cfg.upstream.allowed_cidrs.len(), 3);
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's own error type
fn env_overrides_file() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("r.toml", "[store]\nkind = \"file\"\n")?;
        jail.set_env("SESSION_ROUTER__STORE__NEGATIVE_TTL", "7s");
        jail.set_env(
            "SESSION_ROUTER__ROUTING__PATH_HOSTS",
            "[\"e.{client}.test\"]",
        );
        let cfg = Config::load(ConfigSource::File(Path::new("r.toml"))).unwrap();
        assert_eq!(cfg.store.negative_ttl, Duration::from_secs(7));
        assert_eq!(cfg.routing.hosts.path_hosts[0].as_str(), "e.{client}.test");
        Ok(())
    });
}

#[test]
fn key_template_renders() {
    let t = SessionKeyTemplate::parse("{client}-{thread}").unwrap();
    assert_eq!(t.render("acme", "t1"), "acme-t1");
    assert!(t.includes_client());
    let t = SessionKeyTemplate::parse("thread#{thread}").unwrap();
    assert_eq!(t.render("acme", "t1"), "thread#t1");
    assert!(!t.includes_client());
    assert!(SessionKeyTemplate::parse("{client}-{nope}").is_err());
    assert!(SessionKeyTemplate::parse("{thread").is_err());
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's own error type
fn secrets_from_the_environment_are_taken_verbatim() {
    let jwks = crate::access::mint::new_key("k1").unwrap();
    let jwks = format!("{{\n  \"keys\": [{}]\n}}\n", jwks["jwk"]);
    for secret in [
        "\"a quoted secret of at least 32 bytes\"",
        "  spaces around a secret of 32 bytes  ",
        "12345678901234567890123456789012",
        "[a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p]",
        "{a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8}",
    ] {
        let jwks = jwks.clone();
        figment::Jail::expect_with(move |jail| {
            jail.set_env("SESSION_ROUTER__ACCESS__GRANT_SECRET", secret);
            jail.set_env("SESSION_ROUTER__ACCESS__JWKS", &jwks);
            jail.set_env("SESSION_ROUTER__ACCESS__DEFAULT", "public");
            let cfg = Config::load(ConfigSource::Embedded).unwrap();
            assert_eq!(cfg.access.grant_secret.as_deref(), Some(secret));
            assert_eq!(cfg.access.jwks.as_deref(), Some(jwks.as_str()));
            assert_eq!(cfg.access.default, crate::store::ShareLevel::Public);
            Ok(())
        });
    }
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's own error type
fn the_wake_secret_from_the_environment_is_taken_verbatim() {
    for secret in [
        "\"a quoted wake secret\"",
        "  spaces around a wake secret  ",
        "12345678901234567890123456789012",
        "[a,b,c,d,e,f,g,h]",
        "{a=1,b=2,c=3,d=4}",
    ] {
        figment::Jail::expect_with(move |jail| {
            jail.set_env("SESSION_ROUTER__WAKE__KIND", "http");
            jail.set_env("SESSION_ROUTER__WAKE__URL", "https://platform.test/wake");
            jail.set_env("SESSION_ROUTER__WAKE__SECRET", secret);
            let cfg = Config::load(ConfigSource::Embedded).unwrap();
            assert_eq!(cfg.wake.kind, WakeKind::Http);
            assert_eq!(cfg.wake.secret.as_deref(), Some(secret));
            Ok(())
        });
    }
}
