//! Keys and tokens for operators and tests: a new Ed25519 key pair with its public JWK, and a
//! link token signed with a private key, as the editing app mints them. The router itself only
//! ever holds public keys; these run as subcommands and exit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MintError {
    #[error("could not make a key pair")]
    KeyGen,
    #[error("the private key is not base64 of an Ed25519 PKCS#8 document")]
    PrivateKey,
    #[error("could not sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The RFC 8410 PKCS#8 (v1) prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new key pair: the private key (base64 DER PKCS#8, for the editing app's secret store) and
/// the public JWK to add to the router's JWKS file. The private key is written in the RFC 8410
/// v1 form, the one OpenSSL, Node's `crypto` and Python's `cryptography` load; `ring` makes the
/// v2 form, which also holds the public key and which they refuse.
pub fn new_key(kid: &str) -> Result<Value, MintError> {
    let v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| MintError::KeyGen)?;
    let pair = Ed25519KeyPair::from_pkcs8(v2.as_ref()).map_err(|_| MintError::KeyGen)?;
    let seed = v2
        .as_ref()
        .get(PKCS8_V1_PREFIX.len()..PKCS8_V1_PREFIX.len() + 32)
        .ok_or(MintError::KeyGen)?;
    let v1: Vec<u8> = PKCS8_V1_PREFIX.iter().chain(seed).copied().collect();
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&v1)
        .ok()
        .filter(|again| again.public_key().as_ref() == pair.public_key().as_ref())
        .ok_or(MintError::KeyGen)?;
    Ok(json!({
        "kid": kid,
        "private_key": STANDARD.encode(&v1),
        "jwk": public_jwk(kid, pair.public_key().as_ref()),
    }))
}

fn public_jwk(kid: &str, public: &[u8]) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(public)})
}

/// What a link token says.
pub struct Link<'a> {
    pub audience: &'a str,
    pub client: &'a str,
    pub thread: &'a str,
    pub ttl: Duration,
    pub gen: u64,
}

/// A link token for `link`, signed with `private_key` (base64 PKCS#8) and naming key `kid`.
pub fn token(private_key: &str, kid: &str, link: &Link<'_>) -> Result<String, MintError> {
    let pkcs8 = STANDARD
        .decode(private_key.trim())
        .map_err(|_| MintError::PrivateKey)?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|_| MintError::PrivateKey)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = json!({"aud": link.audience, "client": link.client, "thread": link.thread,
        "iat": now, "exp": now + link.ttl.as_secs(), "gen": link.gen});
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ed_der(&pkcs8),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Verifier;

    #[test]
    fn a_minted_token_passes_the_router_with_the_new_keys_jwk() {
        let key = new_key("k1").unwrap();
        let jwks = json!({"keys": [key["jwk"]]}).to_string();
        let verifier = Verifier::from_jwks(&jwks, "session-router").unwrap();
        let link = Link {
            audience: "session-router",
            client: "acme",
            thread: "t1",
            ttl: Duration::from_secs(300),
            gen: 1,
        };
        let private = key["private_key"].as_str().unwrap();
        let token = token(private, "k1", &link).unwrap();
        assert_eq!(verifier.verify(&token, "acme", "t1").unwrap().gen, 1);
    }

    #[test]
    fn the_private_key_is_the_standard_pkcs8_form() {
        let key = new_key("k1").unwrap();
        let der = STANDARD
            .decode(key["private_key"].as_str().unwrap())
            .unwrap();
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], PKCS8_V1_PREFIX);
    }

    #[test]
    fn a_bad_private_key_is_named() {
        let link = Link {
            audience: "a",
            client: "c",
            thread: "t",
            ttl: Duration::from_secs(1),
            gen: 0,
        };
        let err = token("bm90IGEga2V5", "k1", &link).unwrap_err();
        assert!(err.to_string().contains("PKCS#8"), "{err}");
    }
}
