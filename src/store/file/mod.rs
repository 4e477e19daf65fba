//! The file backend: `sessions.toml` holds the same two hops as the DynamoDB tables. Reloaded
//! when its modification time or size changes; a bad edit is an error that keeps the old table.

mod document;
mod reader;
mod watch;

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::{
    ContainerRecord, RouteStore, SessionRecord, Stamp, StoreError, StoreSnapshot, TableSizes,
};
use crate::background::{run_on_own_thread, Priority, Yielder};
use async_trait::async_trait;

/// A table miss has a request waiting on it: its parse must progress however busy the machine.
const MISS: Priority = Priority::Low;

/// What identifies one version of the file without reading it.
type Fingerprint = (SystemTime, u64);

/// The last version of the file that parsed, shared with the route table built from it.
#[derive(Clone)]
struct Parsed {
    fingerprint: Fingerprint,
    snapshot: Arc<StoreSnapshot>,
}

pub struct FileStore {
    path: PathBuf,
    /// Parsed once per version of the file: a table miss looks the session up here instead of
    /// parsing the whole file again, so unknown sessions cost a `stat`, not a parse.
    /// Held while parsing, so callers that arrive meanwhile wait and share the one parse.
    parsed: tokio::sync::Mutex<Option<Parsed>>,
    /// Fingerprint of the version the last full load returned.
    loaded: Mutex<Option<Fingerprint>>,
    /// Activity and wake stamps, which this store keeps in memory rather than in the file.
    stamps: Mutex<HashMap<(Box<str>, Stamp), u64>>,
    /// Started on first use, inside the server's runtime: the watch runs a thread, which must
    /// not exist before a daemonizing fork. `None` inside when it could not start.
    watch: OnceLock<Option<watch::FileWatch>>,
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        FileStore {
            path,
            parsed: tokio::sync::Mutex::new(None),
            loaded: Mutex::new(None),
            stamps: Mutex::new(HashMap::new()),
            watch: OnceLock::new(),
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

    /// The file as it is now, parsed at most once per version. A table miss may be the one to
    /// notice a change; misses that arrive meanwhile wait for its parse and share it.
    async fn current(&self, priority: Priority) -> Result<Parsed, StoreError> {
        let fingerprint = self.fingerprint().await?;
        let slot = self.parsed.lock().await;
        if let Some(parsed) = slot.as_ref().filter(|p| p.fingerprint == fingerprint) {
            return Ok(parsed.clone());
        }
        // A background parse (idle class or nice 19) can take long on a busy machine: it runs
        // without the lock, so that no table miss queues behind it (a miss parses for itself).
        let expected = slot
            .as_ref()
            .map(|p| p.snapshot.sizes())
            .unwrap_or_default();
        let held = priority.may_be_awaited().then_some(slot);
        let parsed = self.read_and_parse(fingerprint, expected, priority).await?;
        let mut slot = match held {
            Some(slot) => slot,
            None => self.parsed.lock().await,
        };
        if slot.as_ref().map(|p| p.fingerprint) != Some(fingerprint) {
            *slot = Some(parsed.clone());
        }
        Ok(parsed)
    }

    /// The file as a table miss sees it: current, parsed at the priority a waiting request
    /// needs.
    async fn for_miss(&self) -> Result<Arc<StoreSnapshot>, StoreError> {
        Ok(self.current(MISS).await?.snapshot)
    }

    /// Reads and parses the file on a thread of its own at `priority`: for a large file both
    /// take a while. `expected` sizes the tables (the last version's).
    async fn read_and_parse(
        &self,
        fingerprint: Fingerprint,
        expected: TableSizes,
        priority: Priority,
    ) -> Result<Parsed, StoreError> {
        let (path, shown) = (self.path.clone(), self.display());
        let snapshot = run_on_own_thread("table parse", priority, move |yielder| {
            let text = read_text(&path, yielder).map_err(|source| StoreError::Io {
                path: shown.clone(),
                source,
            })?;
            document::parse(&text, expected, yielder).map_err(|reason| StoreError::Parse {
                path: shown,
                reason,
            })
        })
        .await
        .ok_or_else(|| StoreError::Unavailable("the parsing thread failed".into()))??;
        Ok(Parsed {
            fingerprint,
            snapshot: Arc::new(snapshot),
        })
    }
}

/// What a parse nobody waits for any more ends with.
const ABANDONED: &str = "abandoned: the load was given up on";

/// Bytes read at a time: one read of a large file is a long stretch in the kernel, where the
/// thread cannot be preempted. 64 KiB copy in about as long as the work between pauses.
const READ_CHUNK: u64 = 64 << 10;

/// Reads the whole file in chunks, offering the core back between them; stops early if the
/// reader was abandoned.
fn read_text(path: &Path, yielder: &mut Yielder) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let size = file.metadata().map_or(0, |m| m.len() as usize);
    let mut bytes = Vec::with_capacity(size);
    while (&mut file).take(READ_CHUNK).read_to_end(&mut bytes)? > 0 {
        yielder.pause();
        if yielder.abandoned() {
            return Err(std::io::Error::new(ErrorKind::Interrupted, ABANDONED));
        }
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

#[async_trait]
impl RouteStore for FileStore {
    async fn load_all(&self, priority: Priority) -> Result<Option<Arc<StoreSnapshot>>, StoreError> {
        let parsed = self.current(priority).await?;
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| StoreError::Unavailable("file store state poisoned".into()))?;
        if *loaded == Some(parsed.fingerprint) {
            return Ok(None);
        }
        *loaded = Some(parsed.fingerprint);
        Ok(Some(parsed.snapshot))
    }

    async fn get_session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.for_miss().await?.sessions.get(key).cloned())
    }

    async fn get_container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        Ok(self.for_miss().await?.containers.get(id).cloned())
    }

    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        let watch = self.watch.get_or_init(|| {
            watch::watch(&self.path)
                .inspect_err(|e| {
                    log::warn!(
                        "not watching {}: {e}; edits are seen at each refresh",
                        self.display()
                    )
                })
                .ok()
        });
        watch.as_ref().map(|w| w.changed.clone())
    }

    /// Kept in memory: the file is the platform's to write, and one router is its only reader.
    async fn stamp(
        &self,
        key: &str,
        stamp: Stamp,
        value: u64,
        below: u64,
    ) -> Result<bool, StoreError> {
        if !self.for_miss().await?.sessions.contains_key(key) {
            return Ok(false);
        }
        let mut stamps = self
            .stamps
            .lock()
            .map_err(|_| StoreError::Unavailable("file store state poisoned".into()))?;
        let slot = (Box::from(key), stamp);
        if stamps.get(&slot).is_some_and(|&at| at >= below) {
            return Ok(false);
        }
        stamps.insert(slot, value);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_class_load_is_shared_with_the_misses_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.toml");
        std::fs::write(&path, "[sessions.acme-t1]\ncontainer_id = \"c1\"\n").unwrap();
        let store = FileStore::new(path);
        let loaded = store.load_all(Priority::Idle).await.unwrap().unwrap();
        let seen_by_miss = store.current(MISS).await.unwrap().snapshot;
        assert!(
            Arc::ptr_eq(&loaded, &seen_by_miss),
            "parsed once, not twice"
        );
        assert!(store.load_all(Priority::Idle).await.unwrap().is_none());
    }

    /// A `sessions.toml` of `count` sessions in a new directory (kept while the first is held).
    fn sessions_file(count: usize) -> (tempfile::TempDir, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.toml");
        let text: String = (0..count)
            .map(|i| format!("[sessions.acme-t{i}]\ncontainer_id = \"c{i}\"\n"))
            .collect();
        std::fs::write(&path, &text).unwrap();
        (dir, path, text)
    }

    #[tokio::test]
    async fn misses_do_not_queue_behind_a_background_parse() {
        let (_dir, path, _) = sessions_file(50_000);
        let store = Arc::new(FileStore::new(path));
        for priority in [Priority::Idle, Priority::Least] {
            let loading = tokio::spawn({
                let store = store.clone();
                async move { store.current(priority).await.map(|p| p.snapshot.sizes()) }
            });
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!loading.is_finished(), "{priority:?}: still parsing");
            assert!(
                store.parsed.try_lock().is_ok(),
                "{priority:?}: the parse does not hold the lock"
            );
            assert_eq!(loading.await.unwrap().unwrap().sessions, 50_000);
            *store.parsed.lock().await = None;
        }
    }

    #[test]
    fn a_parse_given_up_on_stops_instead_of_finishing() {
        let (_dir, path, text) = sessions_file(5_000);
        let expected = TableSizes::default();
        let parsed = document::parse(&text, expected, &mut Yielder::new()).unwrap();
        assert_eq!(parsed.sessions.len(), 5_000, "whole when waited for");

        let given_up = || Yielder::new().watching(Arc::new(true.into()));
        let err = document::parse(&text, expected, &mut given_up()).unwrap_err();
        assert_eq!(err, ABANDONED, "not the general parse's verdict");
        let err = read_text(&path, &mut given_up()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Interrupted);
    }
}
