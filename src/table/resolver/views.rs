//! What the resolver holds about a session, read without deciding a request: where its requests
//! would go now (for the upgrade watcher) and its records with their source and age (for the
//! admin listener).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Resolver;
use crate::store::{ContainerRecord, SessionAccess, SessionRecord, StoreError};

/// Where a session's requests would go now, as far as memory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub container_id: Arc<str>,
    pub addr: Option<SocketAddr>,
    pub access: SessionAccess,
}

/// A session's records as the router holds them, and where they came from.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub session: SessionRecord,
    pub container: Option<ContainerRecord>,
    /// `table` (the last full load), `healed` (re-read after a failed connect or while someone
    /// waits) or `store` (read now, not in memory).
    pub source: &'static str,
    /// How old that copy is.
    pub age: Option<Duration>,
}

impl Resolver {
    /// Where a session's requests would go now, from memory only: its container id, the
    /// address when the table or a heal states one, and its access settings. `None` when
    /// nothing definite is known.
    pub fn current(&self, key: &str) -> Option<Current> {
        let addr = |c: &ContainerRecord| c.ip.map(|ip| self.container_addr(c, ip));
        if let Some(h) = self.healed.load().get(key) {
            return Some(Current {
                container_id: h.session.container_id.clone(),
                addr: h.container.as_ref().and_then(addr),
                access: h.session.access,
            });
        }
        let table = self.table.load();
        let session = table.session(key)?;
        let container = table.container(&session.container_id);
        Some(Current {
            container_id: session.container_id.clone(),
            addr: container.and_then(addr),
            access: session.access,
        })
    }

    /// What the router holds about a session, for the admin listener: from a heal, the table,
    /// or (when memory has nothing) a read of the store. `None` when the store has no such
    /// session.
    pub async fn inspect(&self, key: &str) -> Result<Option<Inspection>, StoreError> {
        if let Some(h) = self.healed.load().get(key) {
            return Ok(Some(Inspection {
                session: h.session.clone(),
                container: h.container.clone(),
                source: "healed",
                age: Some(h.at.elapsed()),
            }));
        }
        let table = self.table.load();
        if let Some(session) = table.session(key) {
            return Ok(Some(Inspection {
                session: session.clone(),
                container: table.container(&session.container_id).cloned(),
                source: "table",
                age: self.table_age(),
            }));
        }
        let Some(session) = self.store.get_session(key).await? else {
            return Ok(None);
        };
        let container = self.store.get_container(&session.container_id).await?;
        Ok(Some(Inspection {
            session,
            container,
            source: "store",
            age: Some(Duration::ZERO),
        }))
    }
}
