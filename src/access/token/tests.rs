use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;

use super::*;

/// An Ed25519 key pair: the private half as a signer, the public half as a JWK.
struct Key {
    kid: &'static str,
    signer: EncodingKey,
    jwk: serde_json::Value,
}

fn key(kid: &'static str) -> Key {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Key {
        kid,
        signer: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}),
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn claims(overrides: serde_json::Value) -> serde_json::Value {
    let now = now();
    let mut c = json!({"aud": "session-router", "client": "acme", "thread": "t1",
        "iat": now, "exp": now + 300, "gen": 2});
    for (k, v) in overrides.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn mint(key: &Key, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key.signer).unwrap()
}

fn verifier(keys: &[&Key]) -> Verifier {
    Verifier::from_jwks(&jwks(keys), "session-router").unwrap()
}

#[test]
fn a_fresh_token_for_its_session_is_accepted_with_its_claims() {
    let k = key("k1");
    let token = mint(&k, k.kid, &claims(json!({})));
    let got = verifier(&[&k]).verify(&token, "acme", "t1").unwrap();
    assert_eq!(
        (got.client.as_str(), got.thread.as_str(), got.gen),
        ("acme", "t1", 2)
    );
}

#[test]
fn every_key_of_the_set_is_accepted_for_rotation() {
    let (old, new) = (key("old"), key("new"));
    let v = verifier(&[&old, &new]);
    for k in [&old, &new] {
        assert!(v
            .verify(&mint(k, k.kid, &claims(json!({}))), "acme", "t1")
            .is_ok());
    }
}

#[test]
fn tokens_are_refused_for_what_is_wrong_with_them() {
    let (k, other) = (key("k1"), key("k2"));
    let v = verifier(&[&k]);
    let now = now();
    let cases = [
        (
            "expired",
            mint(&k, "k1", &claims(json!({"exp": now - 120}))),
            TokenError::Expired,
        ),
        (
            "wrong key",
            mint(&other, "k1", &claims(json!({}))),
            TokenError::Invalid,
        ),
        (
            "unknown kid",
            mint(&other, "k2", &claims(json!({}))),
            TokenError::UnknownKey,
        ),
        (
            "audience",
            mint(&k, "k1", &claims(json!({"aud": "other"}))),
            TokenError::WrongAudience,
        ),
        (
            "client",
            mint(&k, "k1", &claims(json!({"client": "globex"}))),
            TokenError::WrongSession,
        ),
        (
            "thread",
            mint(&k, "k1", &claims(json!({"thread": "t2"}))),
            TokenError::WrongSession,
        ),
        (
            "from the future",
            mint(&k, "k1", &claims(json!({"iat": now + 3600}))),
            TokenError::Invalid,
        ),
        ("garbage", "not.a.token".to_owned(), TokenError::Malformed),
    ];
    for (what, token, want) in cases {
        assert_eq!(v.verify(&token, "acme", "t1"), Err(want), "{what}");
    }
}

#[test]
fn a_token_within_the_clock_leeway_still_passes() {
    let k = key("k1");
    let token = mint(&k, "k1", &claims(json!({"exp": now() - 10})));
    assert!(verifier(&[&k]).verify(&token, "acme", "t1").is_ok());
}

#[test]
fn a_tampered_or_unsigned_token_is_refused() {
    let k = key("k1");
    let v = verifier(&[&k]);
    let token = mint(&k, "k1", &claims(json!({})));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged = claims(json!({"thread": "t2"})).to_string();
    parts[1] = URL_SAFE_NO_PAD.encode(forged);
    assert_eq!(
        v.verify(&parts.join("."), "acme", "t2"),
        Err(TokenError::Invalid)
    );
    // alg "none", and an HMAC token keyed with the public key, as confused verifiers accept.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
        parts[1]
    );
    assert!(v.verify(&none, "acme", "t2").is_err());
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".to_owned());
    let x = k.jwk["x"].as_str().unwrap().as_bytes();
    let hmac = jsonwebtoken::encode(&hs, &claims(json!({})), &EncodingKey::from_secret(x)).unwrap();
    assert_eq!(v.verify(&hmac, "acme", "t1"), Err(TokenError::Invalid));
}

#[test]
fn unusable_key_sets_stop_start_up_with_the_reason() {
    let k = key("k1");
    let mut no_kid = k.jwk.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let rsa = json!({"kty": "RSA", "n": "sXch", "e": "AQAB", "kid": "r1"});
    let cases = [
        ("{}".to_owned(), "not a JWKS"),
        (json!({"keys": []}).to_string(), "holds no key"),
        (json!({"keys": [no_kid]}).to_string(), "no `kid`"),
        (json!({"keys": [rsa]}).to_string(), "`r1` is not an Ed25519"),
    ];
    for (text, want) in cases {
        let err = Verifier::from_jwks(&text, "session-router")
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
}
