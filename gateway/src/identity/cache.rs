//! Verified credentials, remembered so that a repeat login costs a hash, not a bcrypt.

use super::Htpasswd;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Verified credentials remembered at most; past this the least used are forgotten.
const CACHE_CAPACITY: usize = 10_000;

/// Remembers credentials bcrypt already accepted. Keys are salted SHA-256 hashes of the user,
/// the htpasswd entry they were checked against and the password (never the password
/// itself); the salt is random per process, so a dump of the cache is useless elsewhere.
/// Since the entry is part of the key, a check that finishes after the htpasswd changed
/// remembers nothing the new file would accept, and a removed user or changed password
/// stops working at once without clearing anyone else's.
pub struct CredentialCache {
    salt: [u8; 32],
    verified: quick_cache::sync::Cache<[u8; 32], ()>,
    /// One bcrypt per credentials at a time: a burst of requests with the same new
    /// credentials (a client's first parallel layer pulls) waits for the first check.
    checking: Mutex<HashMap<[u8; 32], Arc<Mutex<()>>>>,
}

impl CredentialCache {
    /// An empty cache with a fresh random salt.
    pub fn new() -> Result<CredentialCache, getrandom::Error> {
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt)?;
        Ok(CredentialCache {
            salt,
            verified: quick_cache::sync::Cache::new(CACHE_CAPACITY),
            checking: Mutex::new(HashMap::new()),
        })
    }

    /// The key of `user`'s credentials as `users` lists them; None for an unknown user.
    pub(super) fn key(&self, users: &Htpasswd, user: &str, password: &str) -> Option<[u8; 32]> {
        let entry = users.entry(user)?;
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        // Lengths first, so that no two (user, entry, password) triples hash the same input.
        for field in [user, entry] {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
        hasher.update(password.as_bytes());
        Some(hasher.finalize().into())
    }

    /// True when these credentials were verified against `user`'s entry in `users`: the
    /// microsecond check callers try before handing bcrypt to a blocking thread.
    pub fn remembers(&self, users: &Htpasswd, user: &str, password: &str) -> bool {
        self.key(users, user, password)
            .is_some_and(|key| self.verified.get(&key).is_some())
    }

    /// Checks the credentials against `users`: from the cache when they were verified
    /// before, else with bcrypt (and remembered when right).
    pub fn verify(&self, users: &Htpasswd, user: &str, password: &str) -> bool {
        let Some(key) = self.key(users, user, password) else {
            // Unknown: the decoy check, so that it takes as long as a wrong password.
            return users.verify(user, password);
        };
        if self.verified.get(&key).is_some() {
            return true;
        }
        let gate = self
            .checking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let ok = {
            let _turn = gate.lock().unwrap_or_else(PoisonError::into_inner);
            // Whoever held the gate before may have verified these very credentials.
            self.verified.get(&key).is_some() || users.verify(user, password)
        };
        if ok {
            self.verified.insert(key, ());
        }
        self.checking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        ok
    }
}
