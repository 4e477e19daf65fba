//! The in-memory route table: an immutable snapshot of the store swapped in whole by the refresh
//! task, read without locks or awaits on the request path, with a read-through cache behind it for
//! sessions the snapshot does not know yet.

mod miss_limit;
mod ownership;
mod read_through;
mod refresh;
mod resolver;

use std::sync::Arc;

pub use miss_limit::{MissBudget, MissLimits, MissScope};
pub use refresh::Refresher;
pub use resolver::{Current, Inspection, Resolution, Resolved, Resolver, ResolverSettings};

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

    /// The records, if no one else holds this table or its snapshot any more.
    pub fn into_sole_snapshot(table: Arc<RouteTable>) -> Option<StoreSnapshot> {
        Arc::try_unwrap(Arc::try_unwrap(table).ok()?.loaded).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_no_one_else_holds_are_handed_over_to_be_freed() {
        let records = Arc::new(StoreSnapshot::default());
        let table = Arc::new(RouteTable::from(records.clone()));
        assert!(
            RouteTable::into_sole_snapshot(table.clone()).is_none(),
            "a request still holds the table"
        );
        let table = Arc::new(RouteTable::from(records.clone()));
        assert!(
            RouteTable::into_sole_snapshot(table).is_none(),
            "the store still holds the records"
        );
        drop(records);
        let sole = Arc::new(RouteTable::from(Arc::new(StoreSnapshot::default())));
        assert!(RouteTable::into_sole_snapshot(sole).is_some());
    }
}
