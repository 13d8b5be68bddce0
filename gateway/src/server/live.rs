//! The serving [`App`] and its replacement when the config file changes: the edited config is
//! loaded in full beside the running one (every file it names, every policy), and only if all
//! of it works is the new App swapped in; requests in flight finish on the old one. An edit
//! that fails keeps the running config and says exactly what is wrong (log, `/status`,
//! metrics).

use super::{App, StartError};
use crate::config::Config;
use crate::watch::{FileWatcher, Fingerprint, fingerprints};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The App serving now, the config file it came from, and the watchers that keep it fresh.
pub struct Live {
    path: PathBuf,
    current: ArcSwap<App>,
    /// The config file as last read; one reload at a time holds its lock.
    serving: Mutex<ConfigFile>,
    watchers: Mutex<Vec<FileWatcher>>,
}

/// The config file as last read.
struct ConfigFile {
    /// Its text, to tell an edit from events about other files.
    text: String,
    /// Its fingerprint just before that read, for the watcher to start from.
    read_as: Vec<Fingerprint>,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<ConfigFile, StartError> {
        let read_as = fingerprints(&[path]);
        let text = std::fs::read_to_string(path)
            .map_err(|e| StartError(format!("cannot read config {}: {e}", path.display())))?;
        Ok(ConfigFile { text, read_as })
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("config", &self.path).finish()
    }
}

impl Live {
    /// Builds the App for the config at `path` and starts watching its files and the config
    /// file itself.
    pub fn start(path: &Path) -> Result<Arc<Live>, StartError> {
        let file = ConfigFile::read(path)?;
        let config = Config::from_text(path, &file.text).map_err(|e| StartError(e.to_string()))?;
        let live = Arc::new(Live {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(App::new(config)?),
            serving: Mutex::new(file),
            watchers: Mutex::new(Vec::new()),
        });
        live.rewatch()
            .map_err(|e| StartError(format!("cannot watch the config's files: {e}")))?;
        Ok(live)
    }

    /// The App serving now; a request keeps the one it started with.
    pub fn current(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// Re-reads the config file; when its text changed, builds and swaps in a new App, or
    /// keeps the running one and records why not. Returns true when a new App serves.
    pub fn reload_config(self: &Arc<Self>) -> bool {
        // One reload at a time: the lock is held throughout.
        let mut serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
        let app = self.current();
        let file = match ConfigFile::read(&self.path) {
            Ok(file) if file.text == serving.text => return false,
            Ok(file) => file,
            Err(e) => {
                self.refuse(&app, e.to_string());
                return false;
            }
        };
        let next = Config::from_text(&self.path, &file.text)
            .map_err(|e| e.to_string())
            .and_then(|config| app.successor(config).map_err(|e| e.to_string()));
        match next {
            Ok(next) => {
                self.current.store(Arc::new(next));
                *serving = file;
                drop(serving);
                if let Err(e) = self.rewatch() {
                    tracing::error!(error = %e, "cannot watch the new config's files");
                }
                *app.config_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                app.metrics.reload("config", true);
                tracing::info!(config = %self.path.display(), "config reloaded");
                true
            }
            Err(message) => {
                self.refuse(&app, message);
                false
            }
        }
    }

    /// SIGHUP: the config file if it changed, else every file it names.
    pub fn reload(self: &Arc<Self>) {
        if !self.reload_config() {
            self.current().reload_all();
        }
    }

    fn refuse(&self, app: &App, message: String) {
        tracing::warn!(error = %message, "config edit refused; the running config keeps serving");
        *app.config_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
        app.metrics.reload("config", false);
    }

    /// Watches the serving App's files and the config file, replacing earlier watchers.
    fn rewatch(self: &Arc<Self>) -> Result<(), notify::Error> {
        let mut watchers = self.current().watch()?;
        let live = Arc::downgrade(self);
        let read_as = self
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_as
            .clone();
        watchers.push(crate::watch::watch(
            "config",
            &[&self.path],
            read_as,
            move || {
                if let Some(live) = live.upgrade() {
                    live.reload_config();
                }
            },
        )?);
        *self.watchers.lock().unwrap_or_else(PoisonError::into_inner) = watchers;
        Ok(())
    }
}

impl ResolvesServerCert for Live {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current().tls.as_ref().map(|tls| tls.certified())
    }
}
