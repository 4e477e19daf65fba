//! Turning DynamoDB items into route records. Pure functions: a malformed item is an error that
//! names its key, so the refresh can skip and count it without losing the rest.

use std::collections::HashMap;
use std::net::IpAddr;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::store::{ContainerRecord, ContainerStatus, SessionAccess, SessionRecord, ShareLevel};

pub type Item = HashMap<String, AttributeValue>;

/// Attribute names of the two tables that are not configurable key names.
pub const CONTAINER_ID: &str = "containerId";
pub const CLIENT_ID: &str = "clientId";
pub const EXPIRES_AT: &str = "expiresAt";
pub const TTL: &str = "ttl";
pub const CONTAINER_IP: &str = "containerIp";
pub const CONTAINER_PORT: &str = "containerPort";
pub const STATUS: &str = "status";
pub const ACCESS: &str = "access";
pub const ACCESS_GENERATION: &str = "accessGeneration";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {key}: {reason}")]
pub struct DecodeError {
    /// The item's key, or `<no key>` when even that is missing.
    pub key: String,
    pub reason: String,
}

fn string<'i>(item: &'i Item, attr: &str) -> Result<Option<&'i str>, String> {
    match item.get(attr) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{attr}` is not a string")),
    }
}

fn number<T: std::str::FromStr>(item: &Item, attr: &str) -> Result<Option<T>, String> {
    match item.get(attr) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(n)) => n
            .parse()
            .map(Some)
            .map_err(|_| format!("`{attr}` = {n} is out of range")),
        Some(_) => Err(format!("`{attr}` is not a number")),
    }
}

fn key_of(item: &Item, key_attr: &str) -> Result<String, DecodeError> {
    match string(item, key_attr) {
        Ok(Some(k)) if !k.is_empty() => Ok(k.to_owned()),
        Ok(_) => Err(DecodeError {
            key: "<no key>".to_owned(),
            reason: format!("missing key attribute `{key_attr}`"),
        }),
        Err(reason) => Err(DecodeError {
            key: "<no key>".to_owned(),
            reason,
        }),
    }
}

/// A sessions-table item: key, `containerId`, optional `clientId` and `expiresAt`/`ttl`.
pub fn session(item: &Item, key_attr: &str) -> Result<(String, SessionRecord), DecodeError> {
    let key = key_of(item, key_attr)?;
    let fail = |reason: String| DecodeError {
        key: key.clone(),
        reason,
    };
    let container_id = string(item, CONTAINER_ID)
        .map_err(fail)?
        .ok_or_else(|| fail(format!("missing `{CONTAINER_ID}`")))?;
    let client_id = string(item, CLIENT_ID).map_err(fail)?;
    let expires_at = match number::<u64>(item, EXPIRES_AT).map_err(fail)? {
        Some(t) => Some(t),
        None => number::<u64>(item, TTL).map_err(fail)?,
    };
    let level = match string(item, ACCESS).map_err(fail)? {
        None => None,
        Some(level) => Some(ShareLevel::parse(level).ok_or_else(|| {
            fail(format!(
                "`{ACCESS}` = {level:?} is neither \"private\" nor \"public\""
            ))
        })?),
    };
    let generation = number::<u64>(item, ACCESS_GENERATION).map_err(fail)?;
    let record = SessionRecord {
        container_id: container_id.into(),
        client_id: client_id.map(Into::into),
        expires_at,
        access: SessionAccess {
            level,
            generation: generation.unwrap_or(0),
        },
    };
    Ok((key, record))
}

/// A containers-table item: key, optional `containerIp`, `containerPort` and `status`.
pub fn container(item: &Item, key_attr: &str) -> Result<(String, ContainerRecord), DecodeError> {
    let key = key_of(item, key_attr)?;
    let fail = |reason: String| DecodeError {
        key: key.clone(),
        reason,
    };
    let ip = match string(item, CONTAINER_IP).map_err(fail)? {
        Some(s) => Some(
            s.parse::<IpAddr>()
                .map_err(|_| fail(format!("`{CONTAINER_IP}` = {s:?} is not an IP address")))?,
        ),
        None => None,
    };
    let port = number::<u16>(item, CONTAINER_PORT).map_err(fail)?;
    let status = match string(item, STATUS).map_err(fail)? {
        Some(s) => {
            ContainerStatus::parse(s).ok_or_else(|| fail(format!("unknown status {s:?}")))?
        }
        None => ContainerStatus::default(),
    };
    Ok((key, ContainerRecord { ip, port, status }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.into())
    }

    #[test]
    fn decodes_a_full_session() {
        let i = item(&[
            ("sessionId", s("acme-t1")),
            ("containerId", s("c1")),
            ("clientId", s("acme")),
            ("ttl", n("1700000000")),
        ]);
        let (key, rec) = session(&i, "sessionId").unwrap();
        assert_eq!(key, "acme-t1");
        assert_eq!(&*rec.container_id, "c1");
        assert_eq!(rec.client_id.as_deref(), Some("acme"));
        assert_eq!(rec.expires_at, Some(1_700_000_000));
    }

    #[test]
    fn session_errors_name_the_key() {
        let i = item(&[("sessionId", s("acme-t1")), ("containerId", n("5"))]);
        let err = session(&i, "sessionId").unwrap_err();
        assert_eq!(err.key, "acme-t1");
        assert!(err.reason.contains("containerId"));
        let i = item(&[("containerId", s("c1"))]);
        assert_eq!(session(&i, "sessionId").unwrap_err().key, "<no key>");
    }

    #[test]
    fn decodes_containers_in_every_state() {
        let i = item(&[
            ("containerId", s("c1")),
            ("containerIp", s("10.0.0.7")),
            ("containerPort", n("4000")),
            ("status", s("running")),
        ]);
        let (_, rec) = container(&i, "containerId").unwrap();
        assert_eq!(rec.ip, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(rec.port, Some(4000));
        let (_, rec) = container(&item(&[("containerId", s("c2"))]), "containerId").unwrap();
        assert_eq!(
            (rec.ip, rec.port, rec.status),
            (None, None, ContainerStatus::Running)
        );
    }

    #[test]
    fn bad_containers_are_errors() {
        for bad in [
            ("containerIp", s("not-an-ip")),
            ("containerPort", n("70000")),
            ("containerPort", s("4321")),
            ("status", s("zombie")),
        ] {
            let i = item(&[("containerId", s("c1")), bad.clone()]);
            assert!(container(&i, "containerId").is_err(), "{bad:?}");
        }
    }
}
