//! The file backend: `sessions.toml` holds the same two hops as the DynamoDB tables. Reloaded
//! when its modification time or size changes; a bad edit is an error that keeps the old table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    ContainerRecord, ContainerStatus, RouteStore, SessionRecord, StoreError, StoreSnapshot,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsFile {
    #[serde(default)]
    sessions: HashMap<String, SessionEntry>,
    #[serde(default)]
    containers: HashMap<String, ContainerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionEntry {
    container_id: String,
    client_id: Option<String>,
    expires_at: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerEntry {
    ip: Option<IpAddr>,
    port: Option<u16>,
    status: Option<String>,
}

/// What identifies one version of the file without reading it.
type Fingerprint = (SystemTime, u64);

pub struct FileStore {
    path: PathBuf,
    /// Fingerprint of the last file that loaded; only the refresh task touches it.
    last_loaded: Mutex<Option<Fingerprint>>,
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        FileStore {
            path,
            last_loaded: Mutex::new(None),
        }
    }

    fn display(&self) -> String {
        self.path.display().to_string()
    }

    async fn fingerprint(&self) -> Result<Fingerprint, StoreError> {
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|source| self.io_error(source))?;
        let modified = meta.modified().map_err(|source| self.io_error(source))?;
        Ok((modified, meta.len()))
    }

    fn io_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.display(),
            source,
        }
    }

    async fn read(&self) -> Result<StoreSnapshot, StoreError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| self.io_error(source))?;
        parse(&text).map_err(|reason| StoreError::Parse {
            path: self.display(),
            reason,
        })
    }
}

fn parse(text: &str) -> Result<StoreSnapshot, String> {
    let file: SessionsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let sessions = file
        .sessions
        .into_iter()
        .map(|(key, s)| {
            let record = SessionRecord {
                container_id: s.container_id.into(),
                client_id: s.client_id.map(Into::into),
                expires_at: s.expires_at,
            };
            (key.into_boxed_str(), record)
        })
        .collect();
    let containers = file
        .containers
        .into_iter()
        .map(|(id, c)| {
            let status = match c.status.as_deref() {
                None => ContainerStatus::default(),
                Some(s) => ContainerStatus::parse(s)
                    .ok_or_else(|| format!("container `{id}`: unknown status `{s}`"))?,
            };
            let record = ContainerRecord {
                ip: c.ip,
                port: c.port,
                status,
            };
            Ok((id.into_boxed_str(), record))
        })
        .collect::<Result<_, String>>()?;
    Ok(StoreSnapshot {
        sessions,
        containers,
        skipped: 0,
    })
}

#[async_trait]
impl RouteStore for FileStore {
    async fn load_all(&self) -> Result<Option<StoreSnapshot>, StoreError> {
        let before = self.fingerprint().await?;
        if self
            .last_loaded
            .lock()
            .map(|g| *g == Some(before))
            .unwrap_or(false)
        {
            return Ok(None);
        }
        let snapshot = self.read().await?;
        if let Ok(mut last) = self.last_loaded.lock() {
            *last = Some(before);
        }
        Ok(Some(snapshot))
    }

    async fn get_session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.read().await?.sessions.remove(key))
    }

    async fn get_container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        Ok(self.read().await?.containers.remove(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_hops() {
        let snap = parse(
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
        assert!(parse("[containers.c1]\nstatus = \"zombie\"\n")
            .unwrap_err()
            .contains("zombie"));
        assert!(parse("[sessions.a]\ncontainer = \"c\"\n").is_err());
    }
}
