//! Watching files for hot reload: the directories holding them are watched (Kubernetes swaps a
//! symlink beside ConfigMap files; editors rename over them), events are debounced, and a
//! callback re-reads whatever it needs. Dropping the [`FileWatcher`] stops it.

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::thread;
use std::time::Duration;

/// Quiet time after the last event before reloading: one change often makes several events,
/// and a half-written file should be read once, complete.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Keeps a watch alive.
pub struct FileWatcher {
    _watcher: RecommendedWatcher,
}

/// Calls `on_change` (on a thread of its own) after files in the directories of `files` change.
pub fn watch<F>(name: &str, files: &[&Path], on_change: F) -> Result<FileWatcher, notify::Error>
where
    F: Fn() + Send + 'static,
{
    let (events, received) = channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        // Reading a file is an event too: reacting to it would make every reload trigger the
        // next one.
        if event.is_ok_and(|e| !matches!(e.kind, EventKind::Access(_))) {
            // The receiver is gone only while shutting down.
            let _ = events.send(());
        }
    })?;
    let dirs: BTreeSet<PathBuf> = files.iter().map(|f| parent_dir(f)).collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    thread::Builder::new()
        .name(format!("{name}-reload"))
        .spawn(move || {
            while received.recv().is_ok() {
                loop {
                    match received.recv_timeout(DEBOUNCE) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        // The watcher was dropped (replaced by a newer one) after this change
                        // arrived, maybe before the newer one saw it: act on it, then stop.
                        Err(RecvTimeoutError::Disconnected) => {
                            on_change();
                            return;
                        }
                    }
                }
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(FileWatcher { _watcher: watcher })
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
