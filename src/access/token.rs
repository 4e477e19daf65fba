//! Preview-link tokens: EdDSA (Ed25519) JWTs with a `kid`, checked against the public keys of a
//! JWKS (several at once, for rotation) by `jsonwebtoken`. A token is accepted only for the one
//! session it names, for the configured audience, and only while it is fresh.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

/// Clock difference tolerated between the editing app that mints and the router that checks.
const LEEWAY_SECONDS: u64 = 30;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub client: String,
    pub thread: String,
    pub exp: u64,
    pub iat: u64,
    /// The session's `accessGeneration` when minted; grants below the current one are revoked.
    #[serde(default)]
    pub gen: u64,
}

/// Why a JWKS cannot be used; stops start-up with the reason.
#[derive(Debug, Error)]
pub enum KeysError {
    #[error("not a JWKS: {0}")]
    Json(#[from] serde_json::Error),
    #[error("key `{kid}` is not an Ed25519 public key: {reason}")]
    Key { kid: String, reason: String },
    #[error("a key has no `kid`: tokens name their key by it")]
    NoKid,
    #[error("the JWKS holds no key")]
    Empty,
}

/// Why a token is refused. The `access_total` results `invalid` and `expired` come from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token names no key of the JWKS")]
    UnknownKey,
    #[error("token signature, algorithm or claims are invalid")]
    Invalid,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token has expired")]
    Expired,
    #[error("token is for another session")]
    WrongSession,
}

impl TokenError {
    /// The `result` label of `session_router_access_total`.
    pub fn result(self) -> &'static str {
        match self {
            TokenError::Expired => "expired",
            _ => "invalid",
        }
    }
}

/// Checks tokens against the public keys of a JWKS.
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&String> = self.keys.keys().collect();
        f.debug_struct("Verifier").field("kids", &kids).finish()
    }
}

impl Verifier {
    /// Reads a JWKS (JSON) of Ed25519 public keys, each with a `kid`, for tokens of `audience`.
    pub fn from_jwks(json: &str, audience: &str) -> Result<Verifier, KeysError> {
        let set: JwkSet = serde_json::from_str(json)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().ok_or(KeysError::NoKid)?;
            let key = DecodingKey::from_jwk(jwk)
                .ok()
                .filter(|_| is_ed25519(jwk))
                .ok_or_else(|| KeysError::Key {
                    kid: kid.clone(),
                    reason: "expected kty OKP, crv Ed25519".to_owned(),
                })?;
            keys.insert(kid, key);
        }
        if keys.is_empty() {
            return Err(KeysError::Empty);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        Ok(Verifier { keys, validation })
    }

    /// The token's claims when it is signed by a key of the JWKS with EdDSA, is for this
    /// audience, has not expired, was not issued in the future, and names this session.
    pub fn verify(&self, token: &str, client: &str, thread: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        if claims.iat > now() + LEEWAY_SECONDS {
            return Err(TokenError::Invalid);
        }
        if claims.client != client || claims.thread != thread {
            return Err(TokenError::WrongSession);
        }
        Ok(claims)
    }
}

fn is_ed25519(jwk: &jsonwebtoken::jwk::Jwk) -> bool {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    matches!(&jwk.algorithm, AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519)
}

fn refusal(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => TokenError::Malformed,
        _ => TokenError::Invalid,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
