//! The htpasswd file: bcrypt entries only, a digest of each entry for binding tokens to it,
//! and decoy checks so that every wrong password costs the same.

use super::{InvalidFile, read};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// The users of an htpasswd file.
#[derive(Debug, Default)]
pub struct Htpasswd {
    hashes: HashMap<String, String>,
    /// Each user by their folded name ([`super::fold`]): how other sources' names are checked
    /// against these.
    folded: HashMap<String, String>,
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
        let mut folded: HashMap<String, String> = HashMap::new();
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
            if let Some(other) = folded.insert(super::fold(user), user.to_string()) {
                // Policies match names exactly: `Alice` would escape every rule about `alice`.
                return Err(invalid(format!(
                    "user `{user}` differs from `{other}` (line {}) only in case or spaces: \
                     one name, one account; rename or remove one",
                    lines_of.get(&other).copied().unwrap_or_default()
                )));
            }
            max_cost = max_cost.max(cost);
            hashes.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            hashes,
            folded,
            max_cost,
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Htpasswd, InvalidFile> {
        Htpasswd::parse(&path.display().to_string(), &read(path)?)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The users' names, in no order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hashes.keys().map(String::as_str)
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// `user`'s hash as the file lists it.
    pub(super) fn entry(&self, user: &str) -> Option<&str> {
        self.hashes.get(user).map(String::as_str)
    }

    /// True when `user` is listed (refresh tokens stop working once a user is removed).
    pub fn contains(&self, user: &str) -> bool {
        self.hashes.contains_key(user)
    }

    /// The user whose name is `name` but for case and spaces: another source may not hand
    /// out that name.
    pub fn holder_of(&self, name: &str) -> Option<&str> {
        self.folded.get(&super::fold(name)).map(String::as_str)
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
