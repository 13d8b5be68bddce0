//! Who the users are: the htpasswd file (bcrypt only), the Apache-style groups file, and a
//! bounded cache of verified credentials so that a repeat login costs a hash, not a bcrypt.

mod throttle;

pub use throttle::Throttle;

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// Verified credentials remembered at most; past this the least used are forgotten.
const CACHE_CAPACITY: usize = 10_000;

/// A file that cannot be used, naming the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct InvalidFile {
    /// The file, as configured.
    pub file: String,
    /// 1-based line number (0 when the file could not be read at all).
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// The users of an htpasswd file.
#[derive(Debug, Default)]
pub struct Htpasswd {
    hashes: HashMap<String, String>,
    /// The file's highest bcrypt cost: every wrong password costs as much bcrypt work as one
    /// check at this cost, whoever's it is, so timing tells no user from another, nor known
    /// users from unknown ones.
    max_cost: u32,
}

impl Htpasswd {
    /// Parses `user:hash` lines as `htpasswd -B` writes them. Blank lines and `#` comments
    /// are skipped; any hash other than bcrypt (`$2y$`, `$2b$`, `$2a$`) is refused.
    pub fn parse(file: &str, text: &str) -> Result<Htpasswd, InvalidFile> {
        let mut hashes = HashMap::new();
        let mut lines_of: HashMap<String, usize> = HashMap::new();
        let mut max_cost = 0u32;
        for (i, line) in text.lines().enumerate() {
            let invalid = |message: String| InvalidFile {
                file: file.to_string(),
                line: i + 1,
                message,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| invalid("expected `user:hash`".into()))?;
            if user.is_empty() {
                return Err(invalid("the user name is empty".into()));
            }
            let cost = bcrypt_cost(hash).ok_or_else(|| {
                invalid(format!(
                    "user `{user}` has a {} hash; only bcrypt is accepted: \
                     recreate it with `htpasswd -B` or `portcullis passwd`",
                    hash_kind(hash)
                ))
            })?;
            if cost > MAX_BCRYPT_COST {
                return Err(invalid(format!(
                    "user `{user}` has a bcrypt cost of {cost}, above the {MAX_BCRYPT_COST} \
                     `htpasswd -C` allows: each step doubles the time of every login; \
                     recreate it with a lower cost (10 is usual)"
                )));
            }
            if let Some(first) = lines_of.insert(user.to_string(), i + 1) {
                return Err(invalid(format!(
                    "user `{user}` is already defined on line {first}"
                )));
            }
            max_cost = max_cost.max(cost);
            hashes.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd { hashes, max_cost })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Htpasswd, InvalidFile> {
        Htpasswd::parse(&path.display().to_string(), &read(path)?)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// True when `user` is listed (refresh tokens stop working once a user is removed).
    pub fn contains(&self, user: &str) -> bool {
        self.hashes.contains_key(user)
    }

    /// A digest of `user`'s entry: it changes with the password (a new hash has a new
    /// salt), so a token bound to it dies with a password change. None for unknown users.
    pub fn credential_id(&self, user: &str) -> Option<String> {
        let hash = self.hashes.get(user)?;
        let mut hasher = Sha256::new();
        hasher.update(b"portcullis credential\0");
        hasher.update(user.as_bytes());
        hasher.update(b"\0");
        hasher.update(hash.as_bytes());
        Some(data_encoding::BASE64URL_NOPAD.encode(&hasher.finalize()[..16]))
    }

    /// Checks a password with bcrypt. A wrong one always costs the work of one check at the
    /// file's highest cost: an unknown user is checked against a decoy of that cost, and a
    /// user of a lower cost `c` is topped up with decoys of costs `c` to `max - 1`, since
    /// 2^c + (2^c + ... + 2^(max-1)) = 2^max.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (cost, known) = match self.hashes.get(user) {
            Some(hash) => {
                if bcrypt::verify(password, hash).unwrap_or(false) {
                    return true;
                }
                (bcrypt_cost(hash).unwrap_or(self.max_cost), true)
            }
            None => (self.max_cost, false),
        };
        let top_up = if known {
            cost..self.max_cost
        } else {
            cost..cost + 1
        };
        for cost in top_up.filter(|c| *c >= MIN_BCRYPT_COST) {
            let _ = bcrypt::verify(password, &decoy(cost));
        }
        false
    }
}

/// The lowest cost bcrypt (and `htpasswd -C`) allows.
const MIN_BCRYPT_COST: u32 = 4;

/// A well-formed bcrypt hash of `cost` that no password matches: checking against it costs
/// what a real check of that cost does. Made by rewriting the cost of a fixed hash, since
/// hashing a decoy at a high cost would take as long as the check itself.
fn decoy(cost: u32) -> String {
    const SALT_AND_HASH: &str = "S3kZDh1j6yH6kZAClVXT8Ob2hPeKyRIHZaShL7JRAYpFfv2uZn/ay";
    format!("$2b${cost:02}${SALT_AND_HASH}")
}

/// The highest bcrypt cost accepted, as Apache's `htpasswd -C`: each step doubles the time of
/// a login (17 takes seconds), and 31 would take days, a hang for every login.
pub const MAX_BCRYPT_COST: u32 = 17;

/// The cost of a bcrypt hash, or None if it is not one.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2y$", "$2b$", "$2a$"]
        .iter()
        .find_map(|prefix| hash.strip_prefix(prefix))?;
    let (cost, salt_and_hash) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok()?;
    let valid = (4..=31).contains(&cost)
        && salt_and_hash.len() == 53
        && salt_and_hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    valid.then_some(cost)
}

fn hash_kind(hash: &str) -> &'static str {
    if hash.starts_with("$apr1$") {
        "MD5 (`$apr1$`)"
    } else if hash.starts_with("{SHA}") {
        "SHA-1 (`{SHA}`)"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "SHA-crypt"
    } else if hash.starts_with("$2") {
        "malformed bcrypt"
    } else {
        "crypt or plain-text"
    }
}

/// Group memberships from an Apache `AuthGroupFile`: `group: user user ...` per line.
#[derive(Debug, Default)]
pub struct Groups {
    by_user: HashMap<String, Vec<String>>,
}

impl Groups {
    /// Parses the file. Blank lines and `#` comments are skipped; a group may span several
    /// lines, and members are separated by whitespace.
    pub fn parse(file: &str, text: &str) -> Result<Groups, InvalidFile> {
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (group, members) = line.split_once(':').ok_or_else(|| InvalidFile {
                file: file.to_string(),
                line: i + 1,
                message: "expected `group: user user ...`".into(),
            })?;
            let group = group.trim();
            if group.is_empty() || group.contains(char::is_whitespace) {
                return Err(InvalidFile {
                    file: file.to_string(),
                    line: i + 1,
                    message: format!("{group:?} is not a group name"),
                });
            }
            for user in members.split_whitespace() {
                if seen.insert((user.to_string(), group.to_string())) {
                    by_user
                        .entry(user.to_string())
                        .or_default()
                        .push(group.to_string());
                }
            }
        }
        Ok(Groups { by_user })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Groups, InvalidFile> {
        Groups::parse(&path.display().to_string(), &read(path)?)
    }

    /// The groups of `user`, in file order.
    pub fn of(&self, user: &str) -> &[String] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }
}

fn read(path: &Path) -> Result<String, InvalidFile> {
    std::fs::read_to_string(path).map_err(|e| InvalidFile {
        file: path.display().to_string(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

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
    fn key(&self, users: &Htpasswd, user: &str, password: &str) -> Option<[u8; 32]> {
        let entry = users.hashes.get(user)?;
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

#[cfg(test)]
mod tests;
