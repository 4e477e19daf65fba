//! The in-memory route table: the last full load, with the records changed since (by the store's
//! change feed) on top, read without locks or awaits on the request path and changed only by the
//! refresh task; a read-through cache behind it serves sessions the table does not know yet.

mod miss_limit;
mod ownership;
mod read_through;
mod refresh;
mod resolver;

use std::sync::Arc;

pub use miss_limit::{MissBudget, MissLimits, MissScope};
pub use refresh::Refresher;
pub use resolver::{Current, Inspection, Resolution, Resolved, Resolver, ResolverSettings};

use crate::store::{Change, ContainerRecord, SessionRecord, StoreSnapshot, TableMap};

/// Changed records past which they are folded into a new base: lookups stay one probe of a
/// small map, and a change copies at most this many entries.
const FOLD_AT: usize = 4096;

/// One version of the table. Cheap to clone: the base is shared with the load it came from, and
/// the changes since are a small map copied when a new version changes them. Readers hold a
/// version that never changes under them.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    base: Arc<StoreSnapshot>,
    changed: Arc<Changed>,
    sessions: usize,
    containers: usize,
}

/// Records changed since the base was loaded: a new value, or `None` once removed.
#[derive(Debug, Clone, Default)]
struct Changed {
    sessions: TableMap<Option<SessionRecord>>,
    containers: TableMap<Option<ContainerRecord>>,
}

impl Changed {
    fn len(&self) -> usize {
        self.sessions.len() + self.containers.len()
    }
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
        look_up(&self.changed.sessions, &self.base.sessions, key)
    }

    pub fn container(&self, id: &str) -> Option<&ContainerRecord> {
        look_up(&self.changed.containers, &self.base.containers, id)
    }

    pub fn session_count(&self) -> usize {
        self.sessions
    }

    pub fn container_count(&self) -> usize {
        self.containers
    }

    /// Applies one change; false if the table already said the same.
    pub fn apply(&mut self, change: &Change) -> bool {
        match change {
            Change::Session { key, record } => {
                let was = self.session(key);
                if was == record.as_ref() {
                    return false;
                }
                let existed = was.is_some();
                recount(&mut self.sessions, existed, record.is_some());
                let changed = Arc::make_mut(&mut self.changed);
                changed.sessions.insert(key.clone(), record.clone());
            }
            Change::Container { id, record } => {
                let was = self.container(id);
                if was == record.as_ref() {
                    return false;
                }
                let existed = was.is_some();
                recount(&mut self.containers, existed, record.is_some());
                let changed = Arc::make_mut(&mut self.changed);
                changed.containers.insert(id.clone(), record.clone());
            }
        }
        if self.changed.len() >= FOLD_AT {
            self.fold();
        }
        true
    }

    /// Applies changes in order; returns how many changed the table.
    pub fn apply_all(&mut self, changes: &[Change]) -> usize {
        changes.iter().filter(|c| self.apply(c)).count()
    }

    /// Makes `loaded` the base, counting what it says differently from this table.
    pub fn reconcile(&mut self, loaded: Arc<StoreSnapshot>) -> Corrections {
        let mut corrections = Corrections::default();
        count_differences(
            &mut corrections,
            &loaded.sessions,
            |k| self.session(k),
            self.sessions,
        );
        count_differences(
            &mut corrections,
            &loaded.containers,
            |k| self.container(k),
            self.containers,
        );
        *self = RouteTable::from(loaded);
        corrections
    }

    /// Folds the changed records into a new base, so the changes map stays small.
    fn fold(&mut self) {
        let mut base = StoreSnapshot::clone(&self.base);
        merge(&mut base.sessions, &self.changed.sessions);
        merge(&mut base.containers, &self.changed.containers);
        self.base = Arc::new(base);
        self.changed = Arc::default();
    }
}

impl From<Arc<StoreSnapshot>> for RouteTable {
    fn from(base: Arc<StoreSnapshot>) -> Self {
        RouteTable {
            sessions: base.sessions.len(),
            containers: base.containers.len(),
            base,
            changed: Arc::default(),
        }
    }
}

fn look_up<'t, V>(
    changed: &'t TableMap<Option<V>>,
    base: &'t TableMap<V>,
    key: &str,
) -> Option<&'t V> {
    if !changed.is_empty() {
        if let Some(value) = changed.get(key) {
            return value.as_ref();
        }
    }
    base.get(key)
}

fn recount(count: &mut usize, was: bool, is: bool) {
    match (was, is) {
        (false, true) => *count += 1,
        (true, false) => *count = count.saturating_sub(1),
        _ => {}
    }
}

fn merge<V: Clone>(base: &mut TableMap<V>, changed: &TableMap<Option<V>>) {
    for (key, value) in changed {
        match value {
            Some(v) => {
                base.insert(key.clone(), v.clone());
            }
            None => {
                base.remove(key);
            }
        }
    }
}

/// Adds to `corrections` the records of `loaded` that `current` says otherwise, and those
/// `current` holds that `loaded` does not (of its `held` records).
fn count_differences<'t, V: PartialEq + 't>(
    corrections: &mut Corrections,
    loaded: &TableMap<V>,
    current: impl Fn(&str) -> Option<&'t V>,
    held: usize,
) {
    let mut in_both = 0;
    for (key, value) in loaded {
        match current(key) {
            Some(now) if now == value => in_both += 1,
            Some(_) => {
                in_both += 1;
                corrections.changed += 1;
            }
            None => corrections.changed += 1,
        }
    }
    corrections.removed += held.saturating_sub(in_both);
}

#[cfg(test)]
mod tests;
