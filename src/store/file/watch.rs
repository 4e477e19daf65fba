//! Edits of the sessions file noticed as they happen (inotify, through `notify`), so the table
//! follows an edit at once rather than at the next poll. The poll stays as the fallback: a
//! watch that cannot start, or an event that never comes (some network file systems), only
//! delays an edit until then.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// A running watch of one file; dropping it stops the watch.
pub(super) struct FileWatch {
    _watcher: RecommendedWatcher,
    pub changed: Arc<Notify>,
}

/// Watches the file's directory, not the file: a platform that replaces the file by renaming a
/// new one over it (as it should, so no reader sees half a file) gives it a new inode, which a
/// watch of the old one would never report.
pub(super) fn watch(path: &Path) -> notify::Result<FileWatch> {
    let changed = Arc::new(Notify::new());
    let name: Option<OsString> = path.file_name().map(ToOwned::to_owned);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let signal = changed.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        let about_file = event.paths.iter().any(|p| p.file_name() == name.as_deref());
        if about_file && !matches!(event.kind, EventKind::Access(_)) {
            // One stored permit however many events: a burst wakes the refresh once.
            signal.notify_one();
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(FileWatch {
        _watcher: watcher,
        changed,
    })
}
