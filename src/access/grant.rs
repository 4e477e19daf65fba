//! Grant cookies: what a valid preview-link token is exchanged for, so the link's token is used
//! once and every later request of that session (pages, root-absolute assets, the HMR socket)
//! passes on the cookie. A grant is a JWT the router signs itself (HS256, `jsonwebtoken`) with a
//! secret every router of the fleet shares, so any of them accepts it. Verified grants are
//! remembered, so a request pays a map lookup, not a MAC.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Audience of grants: never that of link tokens, so neither passes for the other.
const GRANT_AUDIENCE: &str = "session-router-grant";
/// Shortest secret accepted: an HMAC key as long as its hash.
pub const MIN_SECRET_BYTES: usize = 32;
/// Verified grants remembered at most; past it the least used are checked again.
const REMEMBERED: u64 = 100_000;
/// How long a verified grant is remembered before its MAC is checked again.
const REMEMBER_FOR: Duration = Duration::from_secs(300);

/// What a grant lets in: one session, from one access generation, until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub client: String,
    pub thread: String,
    pub gen: u64,
    pub exp: u64,
    aud: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GrantError {
    #[error("grant is not one this router signed")]
    Invalid,
    #[error("grant has expired")]
    Expired,
    #[error("grant is for another session")]
    WrongSession,
    #[error("grant was issued before the session's access was revoked")]
    Revoked,
}

impl GrantError {
    /// The `result` label of `session_router_access_total`.
    pub fn result(self) -> &'static str {
        match self {
            GrantError::Expired => "expired",
            GrantError::Revoked => "revoked",
            _ => "invalid",
        }
    }
}

#[derive(Debug, Error)]
#[error("the grant secret must be at least {MIN_SECRET_BYTES} bytes")]
pub struct ShortSecret;

/// Signs and checks grants.
pub struct Grants {
    signer: EncodingKey,
    checker: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// A hit hands out a pointer, not a copy of the grant's strings. Only grants whose MAC
    /// verified are inserted, so no one picks keys to collide: a fast hash will do (a remembered
    /// grant is hashed on every request, and it is a few hundred bytes long).
    verified: Cache<Box<str>, Arc<Grant>, foldhash::fast::RandomState>,
}

impl Grants {
    pub fn new(secret: &[u8], ttl: Duration) -> Result<Grants, ShortSecret> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ShortSecret);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[GRANT_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        // The router checks what it signed itself: no clock between two parties to allow for.
        validation.leeway = 0;
        Ok(Grants {
            signer: EncodingKey::from_secret(secret),
            checker: DecodingKey::from_secret(secret),
            validation,
            ttl,
            verified: Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(REMEMBER_FOR)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A grant for the session, from access generation `gen`, ending `ttl` from now: it
    /// outlives the link's short-lived token by design, and revocation ends it sooner.
    pub fn issue(&self, client: &str, thread: &str, gen: u64) -> String {
        let grant = Grant {
            client: client.to_owned(),
            thread: thread.to_owned(),
            gen,
            exp: now() + self.ttl.as_secs(),
            aud: GRANT_AUDIENCE.to_owned(),
        };
        // Encoding known claims with an HMAC key cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &grant, &self.signer)
            .unwrap_or_default()
    }

    /// Whether `cookie` lets a request into the session (client, thread) whose access
    /// generation is now `current_gen`.
    pub fn check(
        &self,
        cookie: &str,
        client: &str,
        thread: &str,
        current_gen: u64,
    ) -> Result<Arc<Grant>, GrantError> {
        let grant = match self.verified.get(cookie) {
            Some(grant) => grant,
            None => {
                let grant = jsonwebtoken::decode::<Grant>(cookie, &self.checker, &self.validation)
                    .map_err(|e| match e.kind() {
                        ErrorKind::ExpiredSignature => GrantError::Expired,
                        _ => GrantError::Invalid,
                    })?
                    .claims;
                let grant = Arc::new(grant);
                self.verified.insert(cookie.into(), grant.clone());
                grant
            }
        };
        if grant.exp <= now() {
            return Err(GrantError::Expired);
        }
        if grant.client != client || grant.thread != thread {
            return Err(GrantError::WrongSession);
        }
        if grant.gen < current_gen {
            return Err(GrantError::Revoked);
        }
        Ok(grant)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a shared secret of at least 32 bytes, for tests";

    fn grants() -> Grants {
        Grants::new(SECRET, Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn a_grant_opens_its_own_session_and_no_other() {
        let g = grants();
        let cookie = g.issue("acme", "t1", 3);
        assert_eq!(g.check(&cookie, "acme", "t1", 3).unwrap().gen, 3);
        assert_eq!(
            g.check(&cookie, "acme", "t2", 3),
            Err(GrantError::WrongSession)
        );
        assert_eq!(
            g.check(&cookie, "globex", "t1", 3),
            Err(GrantError::WrongSession)
        );
    }

    #[test]
    fn a_raised_generation_revokes_older_grants_even_when_remembered() {
        let g = grants();
        let cookie = g.issue("acme", "t1", 3);
        assert!(g.check(&cookie, "acme", "t1", 3).is_ok(), "now remembered");
        assert_eq!(g.check(&cookie, "acme", "t1", 4), Err(GrantError::Revoked));
    }

    #[test]
    fn tampered_foreign_and_expired_grants_are_refused() {
        let g = grants();
        let cookie = g.issue("acme", "t1", 0);
        let mut tampered = cookie.clone();
        tampered.insert(tampered.len() - 2, 'x');
        assert_eq!(
            g.check(&tampered, "acme", "t1", 0),
            Err(GrantError::Invalid)
        );
        let other = Grants::new(
            b"another secret, also at least 32 bytes",
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            g.check(&other.issue("acme", "t1", 0), "acme", "t1", 0),
            Err(GrantError::Invalid)
        );
        let expired = Grants::new(SECRET, Duration::ZERO).unwrap();
        assert_eq!(
            g.check(&expired.issue("acme", "t1", 0), "acme", "t1", 0),
            Err(GrantError::Expired)
        );
        assert_eq!(
            g.check("not a grant", "acme", "t1", 0),
            Err(GrantError::Invalid)
        );
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(Grants::new(b"short", Duration::from_secs(60)).is_err());
    }
}
