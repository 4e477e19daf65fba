//! The in-memory route table: an immutable snapshot of the store swapped in whole by the refresh
//! task, read without locks or awaits on the request path, with a read-through cache behind it for
//! sessions the snapshot does not know yet.

mod refresh;
mod resolver;

use std::sync::Arc;

pub use refresh::Refresher;
pub use resolver::{Resolution, Resolver, ResolverSettings};

use crate::store::{ContainerRecord, SessionRecord, StoreSnapshot};

/// One loaded version of the store. Never mutated after it is built.
#[derive(Debug, Default)]
pub struct RouteTable {
    loaded: Arc<StoreSnapshot>,
}

impl RouteTable {
    pub fn session(&self, key: &str) -> Option<&SessionRecord> {
        self.loaded.sessions.get(key)
    }

    pub fn container(&self, id: &str) -> Option<&ContainerRecord> {
        self.loaded.containers.get(id)
    }

    pub fn session_count(&self) -> usize {
        self.loaded.sessions.len()
    }

    pub fn container_count(&self) -> usize {
        self.loaded.containers.len()
    }
}

impl From<Arc<StoreSnapshot>> for RouteTable {
    fn from(loaded: Arc<StoreSnapshot>) -> Self {
        RouteTable { loaded }
    }
}

impl From<StoreSnapshot> for RouteTable {
    fn from(s: StoreSnapshot) -> Self {
        RouteTable::from(Arc::new(s))
    }
}
