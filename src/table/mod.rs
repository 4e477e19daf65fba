//! The in-memory route table: persistent maps read without locks or awaits on the request path,
//! changed one record at a time (a stream's change, or a full load's difference) by the refresh
//! task, with a read-through cache behind it for sessions the table does not know yet.

mod miss_limit;
mod ownership;
mod read_through;
mod refresh;
mod resolver;

pub use miss_limit::{MissBudget, MissLimits, MissScope};
pub use refresh::Refresher;
pub use resolver::{Current, Inspection, Resolution, Resolved, Resolver, ResolverSettings};

use crate::store::{Change, ContainerRecord, SessionRecord, StoreSnapshot, TableMap};

/// Records by store id. A persistent map: a changed copy shares every node but the changed
/// path with the version readers still hold, so a single change costs a few small allocations,
/// not a copy of the table. Only the store puts keys in, so the hash need not resist chosen keys.
type Records<V> = imbl::GenericHashMap<
    Box<str>,
    V,
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// One version of the table. Cheap to clone; readers hold a version that never changes under
/// them, and the writer publishes a changed clone.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    sessions: Records<SessionRecord>,
    containers: Records<ContainerRecord>,
}

/// How many records a full load found different from the table it was applied to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Corrections {
    pub changed: usize,
    pub removed: usize,
}

impl Corrections {
    pub fn total(&self) -> usize {
        self.changed + self.removed
    }
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

    /// Applies one change; false if the table already said the same.
    pub fn apply(&mut self, change: &Change) -> bool {
        match change {
            Change::Session { key, record } => set(&mut self.sessions, key, record.as_ref()),
            Change::Container { id, record } => set(&mut self.containers, id, record.as_ref()),
        }
    }

    /// Makes the table say what a full load says, changing only the records that differ, so a
    /// load that finds nothing new replaces nothing and readers keep sharing every node.
    pub fn reconcile(&mut self, loaded: &StoreSnapshot) -> Corrections {
        let sessions = converge(&mut self.sessions, &loaded.sessions);
        let containers = converge(&mut self.containers, &loaded.containers);
        Corrections {
            changed: sessions.changed + containers.changed,
            removed: sessions.removed + containers.removed,
        }
    }
}

fn set<V: Clone + PartialEq>(records: &mut Records<V>, key: &str, value: Option<&V>) -> bool {
    match value {
        Some(v) if records.get(key) == Some(v) => false,
        Some(v) => {
            records.insert(key.into(), v.clone());
            true
        }
        None => records.remove(key).is_some(),
    }
}

fn converge<V: Clone + PartialEq>(records: &mut Records<V>, loaded: &TableMap<V>) -> Corrections {
    let mut corrections = Corrections::default();
    for (key, value) in loaded {
        if set(records, key, Some(value)) {
            corrections.changed += 1;
        }
    }
    let gone: Vec<Box<str>> = records
        .keys()
        .filter(|key| !loaded.contains_key(*key))
        .cloned()
        .collect();
    for key in gone {
        records.remove(&key);
        corrections.removed += 1;
    }
    corrections
}

impl From<&StoreSnapshot> for RouteTable {
    fn from(loaded: &StoreSnapshot) -> Self {
        let mut table = RouteTable::default();
        table.reconcile(loaded);
        table
    }
}

#[cfg(test)]
mod tests;
