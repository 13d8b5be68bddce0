//! Hot reload: the serving [`PolicySet`] is an immutable snapshot swapped atomically when a
//! module or settings file changes. A version that fails to load never serves; the last good
//! one stays, and the failure is kept for the status endpoint.

use super::host::{Host, LoadError, ModuleSource, PolicySpec};
use super::pulled::Pulled;
use super::{LoadedPolicy, PolicySet};
use crate::watch::{FileWatcher, Fingerprint, fingerprints};
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// The configured policies and the set currently serving.
pub struct Policies {
    host: Host,
    specs: Vec<PolicySpec>,
    current: ArcSwap<PolicySet>,
    errors: Mutex<Vec<Option<String>>>,
    reloading: Mutex<()>,
    /// The files' fingerprints just before the first load read them.
    read_as: Vec<Fingerprint>,
}

/// What the status endpoint reports of one policy.
#[derive(Debug, Clone)]
pub struct PolicyStatus {
    /// The configured name.
    pub name: String,
    /// The module file, or the OCI reference.
    pub module: PathBuf,
    /// For a module pulled from a registry: what serves and what the last look found.
    pub pulled: Option<Arc<Pulled>>,
    /// `sha256:<hex>` of the module serving.
    pub digest: String,
    /// `sha256:<hex>` of the settings serving.
    pub settings_digest: String,
    /// When the serving version was loaded.
    pub loaded_at: SystemTime,
    /// The policy world of its module.
    pub world: &'static str,
    /// Why the last reload failed, while the failure is not yet fixed.
    pub last_error: Option<String>,
}

impl Policies {
    /// Loads every policy; at start-up any failure is fatal (there is no good version yet).
    pub fn load(host: Host, specs: Vec<PolicySpec>) -> Result<Policies, LoadError> {
        let read_as = fingerprints(&watched_files(&specs));
        let loaded = specs
            .iter()
            .map(|spec| host.load(spec, spec.read()?).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policies {
            host,
            errors: Mutex::new(vec![None; specs.len()]),
            specs,
            current: ArcSwap::from_pointee(PolicySet::new(loaded)),
            reloading: Mutex::new(()),
            read_as,
        })
    }

    /// The set serving now. Cheap: callers take it once per request.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Re-reads every module and settings file and swaps in the policies whose bytes changed.
    /// Returns the failures; the policies that failed keep their last good version.
    pub fn reload(&self) -> Vec<LoadError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let serving = self.current.load_full();
        let mut next: Vec<Arc<LoadedPolicy>> = Vec::with_capacity(self.specs.len());
        let mut failures = Vec::new();
        let mut changed = false;
        for (i, (spec, old)) in self.specs.iter().zip(serving.policies()).enumerate() {
            let outcome = spec.read().and_then(|source| {
                if source.digest == old.digest() && source.settings_digest == old.settings_digest()
                {
                    Ok(None)
                } else {
                    self.host.load(spec, source).map(Some)
                }
            });
            match outcome {
                Ok(Some(policy)) => {
                    tracing::info!(policy = %spec.name, digest = policy.digest(), "policy reloaded");
                    next.push(Arc::new(policy));
                    changed = true;
                    self.set_error(i, None);
                }
                Ok(None) => {
                    next.push(old.clone());
                    self.set_error(i, None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "policy reload failed; the last good version keeps serving");
                    next.push(old.clone());
                    self.set_error(i, Some(e.to_string()));
                    failures.push(e);
                }
            }
        }
        if changed {
            self.current.store(Arc::new(PolicySet::new(next)));
        }
        failures
    }

    /// Each policy's serving version and last reload error, in config order.
    pub fn status(&self) -> Vec<PolicyStatus> {
        let serving = self.current.load_full();
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        self.specs
            .iter()
            .zip(serving.policies())
            .zip(errors.iter())
            .map(|((spec, policy), error)| PolicyStatus {
                name: spec.name.clone(),
                module: spec.module.shown(),
                pulled: match &spec.module {
                    ModuleSource::Pulled(pulled) => Some(pulled.clone()),
                    ModuleSource::File(_) => None,
                },
                digest: policy.digest().to_string(),
                settings_digest: policy.settings_digest().to_string(),
                loaded_at: policy.loaded_at(),
                world: policy.world(),
                last_error: error.clone(),
            })
            .collect()
    }

    fn set_error(&self, index: usize, error: Option<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = errors.get_mut(index) {
            *slot = error;
        }
    }

    /// Reloads whenever a module or settings file changes, until the watcher is dropped;
    /// `observe` sees the failures of each reload (none when all went well).
    pub fn watch(
        self: &Arc<Self>,
        observe: impl Fn(&[LoadError]) + Send + 'static,
    ) -> Result<FileWatcher, notify::Error> {
        let policies = Arc::downgrade(self);
        crate::watch::watch(
            "policy",
            &watched_files(&self.specs),
            self.read_as.clone(),
            move || {
                if let Some(policies) = policies.upgrade() {
                    observe(&policies.reload());
                }
            },
        )
    }
}

/// Every module and settings file, in config order.
fn watched_files(specs: &[PolicySpec]) -> Vec<&Path> {
    specs.iter().flat_map(PolicySpec::watched_files).collect()
}
