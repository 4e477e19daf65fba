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

/// A new key pair: the private key (base64 PKCS#8, for the editing app's secret store) and the
/// public JWK to add to the router's JWKS file.
pub fn new_key(kid: &str) -> Result<Value, MintError> {
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| MintError::KeyGen)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| MintError::KeyGen)?;
    Ok(json!({
        "kid": kid,
        "private_key": STANDARD.encode(pkcs8.as_ref()),
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
    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| MintError::PrivateKey)?;
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
