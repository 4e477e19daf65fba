use std::time::Duration;

use super::*;
use crate::access::mint::{self, Link};

const SECRET: &[u8] = b"a grant secret of at least thirty-two bytes";

fn cookies() -> OwnCookies {
    OwnCookies::new("sr_session", "sr_grant")
}

struct Setup {
    gate: Gate,
    private_key: String,
}

fn setup(default: ShareLevel) -> Setup {
    setup_signing_with(default, SECRET)
}

fn setup_signing_with(default: ShareLevel, secret: &[u8]) -> Setup {
    let key = mint::new_key("k1").unwrap();
    let jwks = serde_json::json!({"keys": [key["jwk"]]}).to_string();
    let verifier = Verifier::from_jwks(&jwks, "session-router").unwrap();
    let grants = Grants::new(secret, Duration::from_secs(3600)).unwrap();
    Setup {
        gate: Gate::new(default, Some(verifier), grants, cookies()),
        private_key: key["private_key"].as_str().unwrap().to_owned(),
    }
}

fn token(s: &Setup, thread: &str, gen: u64) -> String {
    let link = Link {
        audience: "session-router",
        client: "acme",
        thread,
        ttl: Duration::from_secs(300),
        gen,
    };
    mint::token(&s.private_key, "k1", &link).unwrap()
}

fn private(generation: u64) -> SessionAccess {
    SessionAccess {
        level: Some(ShareLevel::Private),
        generation,
    }
}

const PUBLIC: SessionAccess = SessionAccess {
    level: Some(ShareLevel::Public),
    generation: 0,
};

fn with(token: Option<&str>, grant: Option<&str>) -> Presented<'static> {
    let leak = |s: &str| &*Box::leak(s.to_owned().into_boxed_str());
    Presented {
        token: token.map(leak),
        grant: grant.map(leak),
    }
}

/// The grant a valid token is exchanged for.
fn exchanged(verdict: Verdict) -> String {
    match verdict {
        Verdict::Exchange {
            grant: Some(g),
            result: AccessResult::Token,
        } => g,
        other => panic!("expected an exchange, got {other:?}"),
    }
}

#[test]
fn a_public_session_is_open_without_anything() {
    let s = setup(ShareLevel::Private);
    let v = s.gate.check(PUBLIC, "acme", "t1", Presented::default());
    assert_eq!(v, Verdict::Open(AccessResult::Public));
}

#[test]
fn a_session_that_does_not_say_takes_the_default() {
    let unset = SessionAccess::default();
    let private = setup(ShareLevel::Private);
    let v = private
        .gate
        .check(unset, "acme", "t1", Presented::default());
    assert_eq!(v, Verdict::Denied(AccessResult::Missing));
    let public = setup(ShareLevel::Public);
    let v = public.gate.check(unset, "acme", "t1", Presented::default());
    assert_eq!(v, Verdict::Open(AccessResult::Public));
}

#[test]
fn a_valid_token_becomes_a_grant_for_its_own_session_only() {
    let s = setup(ShareLevel::Private);
    let link = token(&s, "t1", 0);
    let grant = exchanged(
        s.gate
            .check(private(0), "acme", "t1", with(Some(&link), None)),
    );
    let g = with(None, Some(&grant));
    assert_eq!(
        s.gate.check(private(0), "acme", "t1", g),
        Verdict::Open(AccessResult::Grant)
    );
    assert_eq!(
        s.gate.check(private(0), "acme", "t2", g),
        Verdict::Denied(AccessResult::Invalid),
        "a grant opens no other session"
    );
    assert_eq!(
        s.gate
            .check(private(0), "acme", "t2", with(Some(&link), None)),
        Verdict::Denied(AccessResult::Invalid),
        "nor does the token"
    );
}

#[test]
fn raising_the_generation_revokes_grants_and_older_tokens() {
    let s = setup(ShareLevel::Private);
    let grant = exchanged(s.gate.check(
        private(1),
        "acme",
        "t1",
        with(Some(&token(&s, "t1", 1)), None),
    ));
    let g = with(None, Some(&grant));
    assert_eq!(
        s.gate.check(private(1), "acme", "t1", g),
        Verdict::Open(AccessResult::Grant)
    );
    assert_eq!(
        s.gate.check(private(2), "acme", "t1", g),
        Verdict::Denied(AccessResult::Revoked)
    );
    let old_link = token(&s, "t1", 1);
    assert_eq!(
        s.gate
            .check(private(2), "acme", "t1", with(Some(&old_link), None)),
        Verdict::Denied(AccessResult::Revoked)
    );
    let new_link = token(&s, "t1", 2);
    exchanged(
        s.gate
            .check(private(2), "acme", "t1", with(Some(&new_link), None)),
    );
}

#[test]
fn tampered_and_foreign_grants_are_invalid() {
    let s = setup(ShareLevel::Private);
    let grant = exchanged(s.gate.check(
        private(0),
        "acme",
        "t1",
        with(Some(&token(&s, "t1", 0)), None),
    ));
    let mut tampered = grant.clone();
    tampered.replace_range(grant.len() - 3..grant.len() - 2, "A");
    let tampered = if tampered == grant {
        grant.replace('A', "B")
    } else {
        tampered
    };
    assert_eq!(
        s.gate
            .check(private(0), "acme", "t1", with(None, Some(&tampered))),
        Verdict::Denied(AccessResult::Invalid)
    );
    let other = setup_signing_with(
        ShareLevel::Private,
        b"another secret of thirty-two bytes or more",
    );
    let foreign = exchanged(other.gate.check(
        private(0),
        "acme",
        "t1",
        with(Some(&token(&other, "t1", 0)), None),
    ));
    assert_eq!(
        s.gate
            .check(private(0), "acme", "t1", with(None, Some(&foreign))),
        Verdict::Denied(AccessResult::Invalid),
        "a grant signed with another secret"
    );
    assert_eq!(
        s.gate.check(
            private(0),
            "acme",
            "t1",
            with(Some(&token(&other, "t1", 0)), None)
        ),
        Verdict::Denied(AccessResult::Invalid),
        "a token signed with a key not in the JWKS"
    );
}

#[test]
fn a_bad_token_on_a_public_session_is_dropped_without_a_grant() {
    let s = setup(ShareLevel::Private);
    let v = s
        .gate
        .check(PUBLIC, "acme", "t1", with(Some("garbage"), None));
    assert_eq!(
        v,
        Verdict::Exchange {
            grant: None,
            result: AccessResult::Public
        }
    );
}

#[test]
fn without_a_jwks_no_token_is_accepted() {
    let grants = Grants::new(SECRET, Duration::from_secs(60)).unwrap();
    let gate = Gate::new(ShareLevel::Private, None, grants, cookies());
    let s = setup(ShareLevel::Private);
    let v = gate.check(
        private(0),
        "acme",
        "t1",
        with(Some(&token(&s, "t1", 0)), None),
    );
    assert_eq!(v, Verdict::Denied(AccessResult::Invalid));
}

#[test]
fn revocation_closes_what_the_session_no_longer_lets_in() {
    let s = setup(ShareLevel::Private);
    assert!(!s.gate.revokes(private(3), Admitted::Grant(3)));
    assert!(s.gate.revokes(private(4), Admitted::Grant(3)));
    assert!(s.gate.revokes(private(0), Admitted::Public), "made private");
    assert!(!s.gate.revokes(PUBLIC, Admitted::Public));
    assert!(!s.gate.revokes(PUBLIC, Admitted::Grant(0)), "made public");
}
