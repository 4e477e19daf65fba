//! The in-memory route table: an immutable snapshot of the store swapped in whole by the refresh
//! task, read without locks or awaits on the request path, with a read-through cache behind it for
//! sessions the snapshot does not know yet.

mod refresh;
mod resolver;

use std::collections::HashMap;

pub use refresh::Refresher;
pub use resolver::{Resolution, Resolver, ResolverSettings};

use crate::store::{ContainerRecord, SessionRecord, StoreSnapshot};

/// One loaded version of the store. Never mutated after it is built.
#[derive(Debug, Default)]
pub struct RouteTable {
    sessions: HashMap<Box<str>, SessionRecord>,
    containers: HashMap<Box<str>, ContainerRecord>,
}

impl RouteTable {
    pub fn session(&self, key: &str) -> Option<&SessionRecord> {
        self.sessions.get(key)
    }

    pub fn container(&self, id: &str) -> Option<&ContainerRecord> {
        self.containers.get(id)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn container_count(&self) -> usize {
        self.containers.len()
    }
}

impl From<StoreSnapshot> for RouteTable {
    fn from(s: StoreSnapshot) -> Self {
        RouteTable {
            sessions: s.sessions,
            containers: s.containers,
        }
    }
}
