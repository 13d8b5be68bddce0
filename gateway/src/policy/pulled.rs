//! A policy module that comes from a registry rather than a file: the verified bytes the
//! artifact puller (`crate::artifacts`) last handed over, and what its last look found. The
//! policy host reads only what was verified; it never sees an unverified digest.

use arc_swap::ArcSwapOption;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// The module of one `[[policy]]` with `oci`.
#[derive(Debug)]
pub struct Pulled {
    reference: String,
    verified: ArcSwapOption<Module>,
    looked: Mutex<Look>,
}

/// A module whose signature verified.
#[derive(Debug)]
pub struct Module {
    /// The component's bytes.
    pub bytes: Arc<Vec<u8>>,
    /// The digest of the artifact's manifest (what the signature covers).
    pub manifest: String,
    /// The key (`[signatures] keys`) whose signature verified.
    pub key: String,
    /// True when it was read back from `[cache] dir` because the registry could not be.
    pub from_cache: bool,
}

/// What the last look at the registry found.
#[derive(Debug, Clone, Default)]
pub struct Look {
    /// When it was made.
    pub at: Option<SystemTime>,
    /// Why its result does not serve (unreachable, unsigned, tampered, ...), if it does not.
    pub error: Option<String>,
}

impl Pulled {
    /// Nothing verified yet for `reference`.
    pub fn new(reference: &str) -> Pulled {
        Pulled {
            reference: reference.to_string(),
            verified: ArcSwapOption::empty(),
            looked: Mutex::new(Look::default()),
        }
    }

    /// The OCI reference, as configured.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The module verified last, if any.
    pub fn verified(&self) -> Option<Arc<Module>> {
        self.verified.load_full()
    }

    /// Hands over a newly verified module (the next reload serves it).
    pub fn set_verified(&self, module: Module) {
        self.verified.store(Some(Arc::new(module)));
    }

    /// What the last look found.
    pub fn look(&self) -> Look {
        self.looked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a look and its failure, if it failed.
    pub fn looked(&self, error: Option<String>) {
        *self.looked.lock().unwrap_or_else(PoisonError::into_inner) = Look {
            at: Some(SystemTime::now()),
            error,
        };
    }
}
