//! Watching files for hot reload: the directories holding them are watched (Kubernetes swaps a
//! symlink beside ConfigMap files; editors rename over them), events are debounced, and a
//! callback re-reads whatever it needs, once one of the files really changed. Storage that
//! raises no events for a change made elsewhere (NFS, EFS, CephFS, FUSE: a write from another
//! node) is covered by polling: the files' fingerprints are compared every [`POLL`] too.
//! Dropping the [`FileWatcher`] stops it.

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

/// Quiet time after the last event before reloading: one change often makes several events,
/// and a half-written file should be read once, complete.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a change waits for quiet: a busy neighbour (a decision log written on every
/// request) would otherwise keep the directory from ever going quiet, and a removed user
/// would never be reloaded.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// How often the files are looked at when no event came: the bound on how late a change
/// made where no event reaches us (another node's write to a shared volume) is acted on. A
/// look is a `stat` of each file, nothing is read unless one changed.
pub const POLL: Duration = Duration::from_secs(2);

/// Keeps a watch alive.
pub struct FileWatcher {
    _watcher: RecommendedWatcher,
}

/// Calls `on_change` (on a thread of its own) after one of `files` changes from `read_as`,
/// their fingerprints taken just before they were last read: an edit that lands between that
/// read and this call is acted on at once, not lost. Other files in their directories (a
/// decision log, a neighbour's settings) make events too, and are told apart by the files'
/// fingerprints.
pub fn watch<F>(
    name: &str,
    files: &[&Path],
    read_as: Vec<Fingerprint>,
    on_change: F,
) -> Result<FileWatcher, notify::Error>
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
    let files: Vec<PathBuf> = files.iter().map(|f| f.to_path_buf()).collect();
    let mut seen = read_as;
    let mut on_real_change = move || {
        let now = fingerprints(&files);
        if now != seen {
            seen = now;
            on_change();
        }
    };
    thread::Builder::new()
        .name(format!("{name}-reload"))
        .spawn(move || {
            // Whatever changed since the files were read, before this watch began.
            on_real_change();
            loop {
                match received.recv_timeout(POLL) {
                    Ok(()) => {}
                    // No event: storage that raises none for a change made elsewhere.
                    Err(RecvTimeoutError::Timeout) => {
                        on_real_change();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let first = Instant::now();
                loop {
                    match received.recv_timeout(DEBOUNCE) {
                        Ok(()) if first.elapsed() < MAX_DELAY => continue,
                        Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                        // The watcher was dropped (replaced by a newer one) after this change
                        // arrived, maybe before the newer one saw it: act on it, then stop.
                        Err(RecvTimeoutError::Disconnected) => {
                            on_real_change();
                            return;
                        }
                    }
                }
                on_real_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(FileWatcher { _watcher: watcher })
}

/// Device, inode, size and modification time (seconds, nanoseconds) of what a path names;
/// `None` for a missing file. A write or a rename over the file changes it; reading does not.
pub type Fingerprint = Option<(u64, u64, u64, i64, i64)>;

/// The fingerprints of what the paths name now, symlinks followed (a ConfigMap swap changes
/// the target). Taken before a file is read, they let [`watch`] see what changed since.
pub fn fingerprints<P: AsRef<Path>>(files: &[P]) -> Vec<Fingerprint> {
    files
        .iter()
        .map(|file| {
            let now = std::fs::metadata(file).ok()?;
            Some((
                now.dev(),
                now.ino(),
                now.len(),
                now.mtime(),
                now.mtime_nsec(),
            ))
        })
        .collect()
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How many times the callback ran once `DEBOUNCE` and some slack have passed.
    fn calls_after(calls: &AtomicUsize) -> usize {
        thread::sleep(DEBOUNCE * 5);
        calls.load(Ordering::SeqCst)
    }

    #[test]
    fn only_changes_to_the_watched_files_call_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = dir.path().join("htpasswd");
        let neighbour = dir.path().join("decisions.jsonl");
        std::fs::write(&watched, "alice:x\n").expect("write");
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let _watch = watch(
            "test",
            &[watched.as_path()],
            fingerprints(&[&watched]),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        )
        .expect("watches");
        for line in 0..5 {
            std::fs::write(&neighbour, format!("line {line}\n")).expect("write");
            let _ = std::fs::read(&watched).expect("read");
        }
        assert_eq!(
            calls_after(&calls),
            0,
            "a neighbour's writes and reads are no change"
        );
        std::fs::write(&watched, "alice:y\nbob:z\n").expect("write");
        assert_eq!(calls_after(&calls), 1, "a write in place is");
        let replacement = dir.path().join("htpasswd.new");
        std::fs::write(&replacement, "alice:y\nbob:z\n").expect("write");
        std::fs::rename(&replacement, &watched).expect("rename");
        assert_eq!(
            calls_after(&calls),
            2,
            "so is a rename over it, same size or not"
        );
        std::fs::remove_file(&watched).expect("remove");
        assert_eq!(calls_after(&calls), 3, "and its removal");
    }

    /// A counter of callbacks and a watch of `file` that counts, started from `read_as`.
    fn counted_watch(file: &Path, read_as: Vec<Fingerprint>) -> (Arc<AtomicUsize>, FileWatcher) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let watcher = watch("test", &[file], read_as, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .expect("watches");
        (calls, watcher)
    }

    #[test]
    fn an_edit_between_the_read_and_the_watch_is_acted_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = dir.path().join("htpasswd");
        std::fs::write(&watched, "alice:x\nbob:y\n").expect("write");
        let read_as = fingerprints(&[&watched]);
        let _ = std::fs::read(&watched).expect("the load reads it");
        // A Secret updated together with the config: the edit lands while it loads.
        std::fs::write(&watched, "alice:x\n").expect("write");
        let (calls, _watch) = counted_watch(&watched, read_as);
        assert_eq!(calls_after(&calls), 1);
    }

    /// Issue 25: a change that raises no event here (written through a hard link in another
    /// directory, as another node's write to a shared volume raises none) is seen by polling.
    #[test]
    fn a_change_without_events_is_seen_within_the_poll() {
        let watched_dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let watched = watched_dir.path().join("revoked");
        std::fs::write(&watched, "").expect("write");
        let other_name = elsewhere.path().join("same-file");
        std::fs::hard_link(&watched, &other_name).expect("a hard link");
        let (calls, _watch) = counted_watch(&watched, fingerprints(&[&watched]));
        assert_eq!(calls_after(&calls), 0);
        std::fs::write(&other_name, "an id\n").expect("write elsewhere");
        let started = Instant::now();
        while calls.load(Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < POLL * 2,
                "not seen within {:?}",
                started.elapsed()
            );
            thread::sleep(DEBOUNCE);
        }
    }

    #[test]
    fn a_busy_neighbour_does_not_hold_a_change_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = dir.path().join("htpasswd");
        std::fs::write(&watched, "alice:x\n").expect("write");
        let (calls, _watch) = counted_watch(&watched, fingerprints(&[&watched]));
        let busy = std::sync::atomic::AtomicBool::new(true);
        std::thread::scope(|scope| {
            // A decision log beside it, written more often than the debounce's quiet time.
            scope.spawn(|| {
                let log = dir.path().join("decisions.jsonl");
                while busy.load(Ordering::SeqCst) {
                    std::fs::write(&log, "line\n").expect("write");
                    thread::sleep(DEBOUNCE / 4);
                }
            });
            std::fs::write(&watched, "").expect("write");
            thread::sleep(MAX_DELAY + DEBOUNCE * 5);
            let seen = calls.load(Ordering::SeqCst);
            busy.store(false, Ordering::SeqCst);
            // A check may land between the truncation and the mtime update the kernel makes
            // of one write, and see two changes: a reload too many, never one too few.
            assert!(seen >= 1, "the change waited for the neighbour to go quiet");
        });
    }
}
