//! What `sessions.toml` may hold, and the one place its entries become table records, whichever
//! reader found them: the event reader for the shape the platform writes, serde (here) for any
//! other.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

use crate::store::{
    ContainerRecord, ContainerStatus, SessionAccess, SessionRecord, ShareLevel, StoreSnapshot,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsFile<'a> {
    #[serde(default, borrow)]
    sessions: HashMap<Cow<'a, str>, SessionEntry<'a>>,
    #[serde(default, borrow)]
    containers: HashMap<Cow<'a, str>, ContainerEntry<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionEntry<'a> {
    #[serde(borrow)]
    pub container_id: Cow<'a, str>,
    #[serde(borrow)]
    pub client_id: Option<Cow<'a, str>>,
    pub expires_at: Option<u64>,
    #[serde(borrow)]
    pub access: Option<Cow<'a, str>>,
    pub access_generation: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContainerEntry<'a> {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    #[serde(borrow)]
    pub status: Option<Cow<'a, str>>,
}

/// The general parse: any TOML that means the same tables, through the `toml` crate's document
/// tree.
pub(super) fn parse_any_shape(text: &str) -> Result<StoreSnapshot, String> {
    let file: SessionsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut table = TableBuilder::default();
    for (key, entry) in file.sessions {
        table.add_session(&key, entry)?;
    }
    for (id, entry) in file.containers {
        table.add_container(&id, entry)?;
    }
    Ok(table.finish())
}

/// Collects records. A client has many sessions, so each client id is stored once and shared.
#[derive(Default)]
pub(super) struct TableBuilder {
    snapshot: StoreSnapshot,
    clients: HashSet<Arc<str>>,
}

impl TableBuilder {
    pub fn add_session(&mut self, key: &str, entry: SessionEntry<'_>) -> Result<(), String> {
        let client_id = entry.client_id.map(|c| self.client(&c));
        let level = match entry.access.as_deref() {
            None => None,
            Some(level) => Some(ShareLevel::parse(level).ok_or_else(|| {
                format!(
                    "session `{key}`: access = \"{level}\" is neither \"private\" nor \"public\""
                )
            })?),
        };
        let record = SessionRecord {
            container_id: entry.container_id.into(),
            client_id,
            expires_at: entry.expires_at,
            access: SessionAccess {
                level,
                generation: entry.access_generation.unwrap_or(0),
            },
        };
        match self.snapshot.sessions.insert(key.into(), record) {
            None => Ok(()),
            Some(_) => Err(format!("session `{key}` is defined twice")),
        }
    }

    pub fn add_container(&mut self, id: &str, entry: ContainerEntry<'_>) -> Result<(), String> {
        let status = match entry.status.as_deref() {
            None => ContainerStatus::default(),
            Some(s) => ContainerStatus::parse(s)
                .ok_or_else(|| format!("container `{id}`: unknown status `{s}`"))?,
        };
        let record = ContainerRecord {
            ip: entry.ip,
            port: entry.port,
            status,
        };
        match self.snapshot.containers.insert(id.into(), record) {
            None => Ok(()),
            Some(_) => Err(format!("container `{id}` is defined twice")),
        }
    }

    fn client(&mut self, id: &str) -> Arc<str> {
        if let Some(shared) = self.clients.get(id) {
            return shared.clone();
        }
        let shared: Arc<str> = id.into();
        self.clients.insert(shared.clone());
        shared
    }

    pub fn finish(self) -> StoreSnapshot {
        self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_hops() {
        let snap = parse_any_shape(
            r#"
            [sessions.acme-t1]
            container_id = "c1"
            client_id = "acme"
            [containers.c1]
            ip = "10.0.0.5"
            port = 4000
            status = "running"
            [containers.c2]
            status = "starting"
            "#,
        )
        .unwrap();
        assert_eq!(&*snap.sessions["acme-t1"].container_id, "c1");
        assert_eq!(snap.containers["c1"].port, Some(4000));
        assert_eq!(snap.containers["c2"].ip, None);
        assert_eq!(snap.containers["c2"].status, ContainerStatus::Starting);
    }

    #[test]
    fn rejects_unknown_status_and_keys() {
        assert!(parse_any_shape("[containers.c1]\nstatus = \"zombie\"\n")
            .unwrap_err()
            .contains("zombie"));
        assert!(parse_any_shape("[sessions.a]\ncontainer = \"c\"\n").is_err());
    }

    #[test]
    fn sessions_of_one_client_share_its_id() {
        let snap = parse_any_shape(
            "[sessions.a]\ncontainer_id = \"c1\"\nclient_id = \"acme\"\n\
             [sessions.b]\ncontainer_id = \"c2\"\nclient_id = \"acme\"\n",
        )
        .unwrap();
        let (a, b) = (&snap.sessions["a"].client_id, &snap.sessions["b"].client_id);
        assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
    }
}
