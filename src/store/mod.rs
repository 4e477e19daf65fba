//! The route store: where sessions and containers come from. Defines the records, the
//! [`RouteStore`] trait every backend implements, and the backends themselves.

mod dynamodb;
mod feed;
mod file;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

pub use dynamodb::DynamoDbStore;
pub use feed::{Change, ChangeFeed, FeedEvent, FEED_QUEUE};
pub use file::FileStore;

/// A session: which container serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub container_id: Arc<str>,
    /// The owning client, when the store records it; checked against the request's host.
    pub client_id: Option<Arc<str>>,
    /// Epoch seconds after which the session no longer exists, whatever the store still holds.
    pub expires_at: Option<u64>,
    pub access: SessionAccess,
}

/// Who may open a session's preview: only holders of a grant, or anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareLevel {
    Private,
    Public,
}

impl ShareLevel {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "private" => Some(Self::Private),
            "public" => Some(Self::Public),
            _ => None,
        }
    }
}

/// A session's access settings as stored: its share level (`None`: the router's default) and
/// its access generation, below which grants are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionAccess {
    pub level: Option<ShareLevel>,
    pub generation: u64,
}

impl SessionRecord {
    pub fn is_expired(&self, now_epoch: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_epoch)
    }
}

/// Lifecycle state of a container as the platform records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainerStatus {
    Starting,
    #[default]
    Running,
    Stopping,
    Stopped,
}

impl ContainerStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => Self::Starting,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            _ => return None,
        })
    }
}

/// A container: its address (absent while it starts) and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub ip: Option<IpAddr>,
    /// The dev server's port; `None` means the configured default.
    pub port: Option<u16>,
    pub status: ContainerStatus,
}

/// A loaded table keyed by store ids. Only the store puts keys in, so the hash need not resist
/// chosen keys, and a fast one makes a full load noticeably cheaper.
pub type TableMap<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// Everything a store holds, as loaded by a full refresh.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    pub sessions: TableMap<SessionRecord>,
    pub containers: TableMap<ContainerRecord>,
    /// Items that could not be decoded and were left out.
    pub skipped: usize,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A time the router stamps on a sessions item, as epoch seconds or milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stamp {
    /// `lastActivityAt`, epoch seconds: when a request or WebSocket frame last used the session.
    LastActivity,
    /// `wakeRequestedAt`, epoch milliseconds: when a router last asked for the container.
    WakeRequested,
}

impl Stamp {
    pub fn attribute(self) -> &'static str {
        match self {
            Stamp::LastActivity => "lastActivityAt",
            Stamp::WakeRequested => "wakeRequestedAt",
        }
    }
}

/// A source of routes. Full loads feed the periodic refresh; single lookups serve table misses.
#[async_trait]
pub trait RouteStore: Send + Sync {
    /// Loads everything. `Ok(None)` means nothing changed since the last successful load. Shared,
    /// so a backend that keeps its last load (the file store) holds no second copy of it.
    async fn load_all(&self) -> Result<Option<Arc<StoreSnapshot>>, StoreError>;

    /// Looks one session up by its store key, bypassing any cache.
    async fn get_session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Looks one container up by id, bypassing any cache.
    async fn get_container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError>;

    /// Signalled when the store may have changed, for stores that can tell (the file store
    /// watches its file); the refresh then loads at once instead of at its next interval.
    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Starts following the store's changes record by record, for stores that can (DynamoDB
    /// with streams). The feed's first event is a [`FeedEvent::Gap`] once it is positioned, or
    /// [`FeedEvent::Lost`] if it cannot follow yet.
    async fn follow(&self, _metrics: Arc<crate::metrics::Metrics>) -> Option<ChangeFeed> {
        None
    }

    /// Sets `stamp` on an existing session to `value` if it is absent or below `below`, in one
    /// conditional write, so that routers racing for it never move it back and exactly one wins
    /// a claim. `Ok(false)`: the condition did not hold.
    async fn stamp(
        &self,
        key: &str,
        stamp: Stamp,
        value: u64,
        below: u64,
    ) -> Result<bool, StoreError>;
}

/// Records as tests write them.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{ContainerRecord, ContainerStatus, SessionAccess, SessionRecord};

    /// A session on `container`, with no owner, expiry or share level of its own.
    pub fn session(container: &str) -> SessionRecord {
        SessionRecord {
            container_id: container.into(),
            client_id: None,
            expires_at: None,
            access: SessionAccess::default(),
        }
    }

    /// A running container at `ip`, on the default port.
    pub fn running(ip: &str) -> ContainerRecord {
        ContainerRecord {
            ip: Some(ip.parse().expect("an address")),
            port: None,
            status: ContainerStatus::Running,
        }
    }
}
