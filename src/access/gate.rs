//! The access decision both engines call: given a session's share level and access generation
//! and what the request presents (a link token, a grant cookie), whether it may see the preview.
//! Pure and synchronous: no store read, no await; a public session costs one comparison.

use std::time::Duration;

use super::{Grants, TokenError, Verifier};
use crate::access::GrantError;
use crate::headers::OwnCookies;
use crate::store::{SessionAccess, ShareLevel};

/// How an access decision went: the `result` label of `session_router_access_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessResult {
    Public,
    Token,
    Grant,
    Missing,
    Invalid,
    Expired,
    Revoked,
}

impl AccessResult {
    pub const ALL: [AccessResult; 7] = [
        Self::Public,
        Self::Token,
        Self::Grant,
        Self::Missing,
        Self::Invalid,
        Self::Expired,
        Self::Revoked,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Token => "token",
            Self::Grant => "grant",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl From<TokenError> for AccessResult {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => AccessResult::Expired,
            _ => AccessResult::Invalid,
        }
    }
}

impl From<GrantError> for AccessResult {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Expired => AccessResult::Expired,
            GrantError::Revoked => AccessResult::Revoked,
            GrantError::Invalid | GrantError::WrongSession => AccessResult::Invalid,
        }
    }
}

/// What a request presents: the `sr_token` of its query, and the grant cookie of its thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub token: Option<&'a str>,
    pub grant: Option<&'a str>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// In, forwarded as it is: a public session, or a valid grant.
    Open(AccessResult),
    /// The request carried a link token: 303 to the same URL without it, setting this grant
    /// when the token was valid. A public session's bad token is dropped the same way.
    Exchange {
        grant: Option<String>,
        result: AccessResult,
    },
    /// `access_denied`, for this reason.
    Denied(AccessResult),
}

impl Verdict {
    pub fn result(&self) -> AccessResult {
        match self {
            Verdict::Open(r) | Verdict::Denied(r) => *r,
            Verdict::Exchange { result, .. } => *result,
        }
    }
}

/// Decides access for every request of a known session.
pub struct Gate {
    default: ShareLevel,
    /// Names the grant cookie of each thread.
    cookies: OwnCookies,
    /// `None` when no JWKS is configured: no link token is ever accepted.
    verifier: Option<Verifier>,
    grants: Grants,
}

impl Gate {
    pub fn new(
        default: ShareLevel,
        verifier: Option<Verifier>,
        grants: Grants,
        cookies: OwnCookies,
    ) -> Self {
        Gate {
            default,
            cookies,
            verifier,
            grants,
        }
    }

    /// The share level in force for a session.
    pub fn level(&self, session: SessionAccess) -> ShareLevel {
        session.level.unwrap_or(self.default)
    }

    pub fn cookies(&self) -> &OwnCookies {
        &self.cookies
    }

    pub fn grant_ttl(&self) -> Duration {
        self.grants.ttl()
    }

    /// Whether a request presenting `presented` may see session (client, thread).
    pub fn check(
        &self,
        session: SessionAccess,
        client: &str,
        thread: &str,
        presented: Presented<'_>,
    ) -> Verdict {
        let level = self.level(session);
        if let Some(token) = presented.token {
            return match self.exchange(token, client, thread, session.generation) {
                Ok(grant) => Verdict::Exchange {
                    grant: Some(grant),
                    result: AccessResult::Token,
                },
                Err(_) if level == ShareLevel::Public => Verdict::Exchange {
                    grant: None,
                    result: AccessResult::Public,
                },
                Err(refused) => Verdict::Denied(refused),
            };
        }
        if level == ShareLevel::Public {
            return Verdict::Open(AccessResult::Public);
        }
        let Some(cookie) = presented.grant else {
            return Verdict::Denied(AccessResult::Missing);
        };
        match self
            .grants
            .check(cookie, client, thread, session.generation)
        {
            Ok(_) => Verdict::Open(AccessResult::Grant),
            Err(e) => Verdict::Denied(e.into()),
        }
    }

    /// Whether a connection let in under a grant or as public, for a session now at `session`,
    /// must be closed: its generation was raised past `admitted_gen`, or it was let in as public
    /// and the session is private now.
    pub fn revokes(&self, session: SessionAccess, admitted: Admitted) -> bool {
        match admitted {
            Admitted::Public => self.level(session) == ShareLevel::Private,
            Admitted::Grant(generation) => {
                self.level(session) == ShareLevel::Private && session.generation > generation
            }
        }
    }

    /// A grant for a valid token. A token minted below the session's access generation is
    /// revoked (one without `gen` is of generation 0).
    fn exchange(
        &self,
        token: &str,
        client: &str,
        thread: &str,
        current_gen: u64,
    ) -> Result<String, AccessResult> {
        let verifier = self.verifier.as_ref().ok_or(AccessResult::Invalid)?;
        let claims = verifier.verify(token, client, thread)?;
        if claims.gen < current_gen {
            return Err(AccessResult::Revoked);
        }
        Ok(self
            .grants
            .issue(client, thread, current_gen.max(claims.gen)))
    }
}

/// How an open connection was let in, so revocation knows whether it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Public,
    /// Under a grant of this access generation.
    Grant(u64),
}

#[cfg(test)]
mod tests;
