//! How the table changes: full loads reconciled into it and pushed changes applied to it, each
//! published as one new version, with every cache and heal that could hold an older word on a
//! changed record cleared.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Healed, Resolver};
use crate::store::{Change, StoreSnapshot};
use crate::table::{Corrections, RouteTable};

impl Resolver {
    /// Makes the table say what a full load that started at `load_started` found, changing only
    /// what differs, with `replay` (the changes pushed while it ran) applied again over it, and
    /// publishes the result at once. Read-through entries are dropped: the table is at least as
    /// fresh as they are, and a deleted session must not survive in them. Heals newer than the
    /// load stay.
    pub fn reconcile(
        &self,
        loaded: Arc<StoreSnapshot>,
        load_started: Instant,
        replay: &[Change],
    ) -> Corrections {
        let mut table = RouteTable::clone(&self.table.load());
        let corrections = table.reconcile(loaded);
        table.apply_all(replay);
        self.publish(table);
        self.sessions.invalidate_all();
        self.containers.invalidate_all();
        self.healed.rcu(|healed| {
            healed
                .iter()
                .filter(|(_, h)| h.at > load_started)
                .map(|(k, h)| (k.clone(), h.clone()))
                .collect::<HashMap<_, _>>()
        });
        self.mark_current(load_started);
        corrections
    }

    /// Applies changes the store pushed, all in one new version of the table, and makes sure no
    /// cache or heal holds an older word on any of their records. Returns how many changed the
    /// table.
    pub async fn apply(&self, changes: &[Change]) -> usize {
        let mut table = RouteTable::clone(&self.table.load());
        let applied = table.apply_all(changes);
        if applied > 0 {
            self.publish(table);
        }
        for change in changes {
            self.forget_older(change).await;
        }
        applied
    }

    async fn forget_older(&self, change: &Change) {
        match change {
            Change::Session { key, record } => {
                match record {
                    Some(_) => self.sessions.forget(key).await,
                    None => self.sessions.remember_absent(key).await,
                }
                self.drop_heals(|k, _| k == &**key);
            }
            Change::Container { id, record } => {
                match record {
                    Some(_) => self.containers.forget(id).await,
                    None => self.containers.remember_absent(id).await,
                }
                self.drop_heals(|_, h| *h.session.container_id == **id);
            }
        }
    }

    /// Drops the heals `stale` picks: a change pushed after a heal is newer than it.
    fn drop_heals(&self, stale: impl Fn(&str, &Healed) -> bool) {
        if !self.healed.load().iter().any(|(k, h)| stale(k, h)) {
            return;
        }
        self.healed.rcu(|healed| {
            healed
                .iter()
                .filter(|(k, h)| !stale(k, h))
                .map(|(k, h)| (k.clone(), h.clone()))
                .collect::<HashMap<_, _>>()
        });
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Swaps in a new version of the table. Only the refresh task writes the table, so no
    /// change can be lost between its load and its store.
    fn publish(&self, table: RouteTable) {
        self.metrics
            .table_sessions
            .set(table.session_count() as i64);
        self.metrics
            .table_containers
            .set(table.container_count() as i64);
        let replaced = self.table.swap(Arc::new(table));
        self.version.fetch_add(1, Ordering::Release);
        self.retire(replaced);
    }

    /// Keeps a replaced version until no request holds it, then frees it here: a version may be
    /// the last holder of a whole loaded table, and freeing a large one takes long enough to show
    /// in the latency of a request that happened to let go of it last. Requests hold a
    /// version for one lookup, so few are ever kept.
    fn retire(&self, replaced: Arc<RouteTable>) {
        if let Ok(mut retired) = self.retired.lock() {
            retired.push(replaced);
            retired.retain(|version| Arc::strong_count(version) > 1);
        }
    }

    /// Frees the replaced versions no request holds any more.
    pub fn free_retired(&self) {
        if let Ok(mut retired) = self.retired.lock() {
            retired.retain(|version| Arc::strong_count(version) > 1);
        }
    }
}
