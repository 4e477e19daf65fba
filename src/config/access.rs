//! The `[access]` section validated: share level by default, where the editing app's public keys
//! come from, and how grant cookies are signed and named.

use std::time::Duration;

use super::model::AccessSection;
use super::ConfigError;
use crate::access::{grant, Verifier};
use crate::store::ShareLevel;

/// Private-preview settings, checked: the JWKS parses into Ed25519 keys, the secret is long
/// enough, the cookie name is a plain token.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub default: ShareLevel,
    pub audience: String,
    /// The JWKS text, read from `jwks_path` or given inline; `None` accepts no link at all.
    pub jwks: Option<String>,
    pub grant_ttl: Duration,
    pub grant_cookie: String,
    /// `None`: each process makes up its own, so a grant is good only on the router that issued
    /// it.
    pub grant_secret: Option<String>,
}

impl AccessConfig {
    /// The verifier of preview-link tokens, `None` when no JWKS is configured. Validation
    /// already parsed the same text, so this does not fail in practice.
    pub fn verifier(&self) -> Result<Option<Verifier>, crate::access::KeysError> {
        self.jwks
            .as_deref()
            .map(|jwks| Verifier::from_jwks(jwks, &self.audience))
            .transpose()
    }
}

pub(super) fn validate_access(section: AccessSection) -> Result<AccessConfig, ConfigError> {
    let default = ShareLevel::parse(&section.default).ok_or_else(|| {
        ConfigError::invalid("access.default", "must be \"private\" or \"public\"")
    })?;
    if section.audience.is_empty() {
        return Err(ConfigError::invalid("access.audience", "must not be empty"));
    }
    let jwks = match (section.jwks_path, section.jwks) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "access.jwks",
                "set jwks_path or jwks, not both",
            ))
        }
        (Some(path), None) => Some(std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::invalid("access.jwks_path", format!("{}: {e}", path.display()))
        })?),
        (None, jwks) => jwks.filter(|j| !j.trim().is_empty()),
    };
    if let Some(text) = &jwks {
        Verifier::from_jwks(text, &section.audience)
            .map_err(|e| ConfigError::invalid("access.jwks", e.to_string()))?;
    }
    if section.grant_ttl.is_zero() {
        return Err(ConfigError::invalid(
            "access.grant_ttl",
            "must be above zero",
        ));
    }
    super::check_cookie_name("access.grant_cookie", &section.grant_cookie)?;
    if let Some(secret) = &section.grant_secret {
        if secret.len() < grant::MIN_SECRET_BYTES {
            return Err(ConfigError::invalid(
                "access.grant_secret",
                format!("must be at least {} bytes", grant::MIN_SECRET_BYTES),
            ));
        }
    }
    Ok(AccessConfig {
        default,
        audience: section.audience,
        jwks,
        grant_ttl: section.grant_ttl,
        grant_cookie: section.grant_cookie,
        grant_secret: section.grant_secret,
    })
}
