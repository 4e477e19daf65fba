//! The file backend: `sessions.toml` holds the same two hops as the DynamoDB tables. Reloaded
//! when its modification time or size changes; a bad edit is an error that keeps the old table.

mod document;
mod reader;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::{ContainerRecord, RouteStore, SessionRecord, Stamp, StoreError, StoreSnapshot};
use async_trait::async_trait;

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
    /// notice a change; misses and loads that arrive meanwhile wait for its parse and share it.
    async fn current(&self) -> Result<Parsed, StoreError> {
        let fingerprint = self.fingerprint().await?;
        let mut slot = self.parsed.lock().await;
        if let Some(parsed) = slot.as_ref().filter(|p| p.fingerprint == fingerprint) {
            return Ok(parsed.clone());
        }
        let parsed = self.read_and_parse(fingerprint).await?;
        *slot = Some(parsed.clone());
        Ok(parsed)
    }

    /// Reads and parses the file off the async threads: for a large file both take a while.
    async fn read_and_parse(&self, fingerprint: Fingerprint) -> Result<Parsed, StoreError> {
        let (path, shown) = (self.path.clone(), self.display());
        let snapshot = tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(&path).map_err(|source| StoreError::Io {
                path: shown.clone(),
                source,
            })?;
            parse(&text).map_err(|reason| StoreError::Parse {
                path: shown,
                reason,
            })
        })
        .await
        .map_err(|_| StoreError::Unavailable("the parsing thread failed".into()))??;
        Ok(Parsed {
            fingerprint,
            snapshot: Arc::new(snapshot),
        })
    }
}

#[async_trait]
impl RouteStore for FileStore {
    async fn load_all(&self) -> Result<Option<Arc<StoreSnapshot>>, StoreError> {
        let parsed = self.current().await?;
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
        Ok(self.current().await?.snapshot.sessions.get(key).cloned())
    }

    async fn get_container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        Ok(self.current().await?.snapshot.containers.get(id).cloned())
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
        if !self.current().await?.snapshot.sessions.contains_key(key) {
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

/// Parses a whole file. The event reader takes the files it fully understands; whatever it does
/// not, valid or not, goes through serde, which also words every error.
fn parse(text: &str) -> Result<StoreSnapshot, String> {
    match reader::read(text) {
        Some(snapshot) => Ok(snapshot),
        None => document::parse_any_shape(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_load_is_shared_with_the_misses_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.toml");
        std::fs::write(&path, "[sessions.acme-t1]\ncontainer_id = \"c1\"\n").unwrap();
        let store = FileStore::new(path);
        let loaded = store.load_all().await.unwrap().unwrap();
        let seen_by_miss = store.current().await.unwrap().snapshot;
        assert!(
            Arc::ptr_eq(&loaded, &seen_by_miss),
            "parsed once, not twice"
        );
        assert!(store.load_all().await.unwrap().is_none());
        assert!(store.get_session("acme-t1").await.unwrap().is_some());
    }
}
