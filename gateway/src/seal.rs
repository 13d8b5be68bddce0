//! Sealed values: what Portcullis hands out and must get back unaltered and unread (console
//! sessions, sign-in flows, personal tokens), encrypted and authenticated with AES-256-GCM
//! under keys every replica shares (`[console] session_key`), so that no replica keeps
//! state. Each purpose seals with a key of its own, derived from the file's: a session
//! cookie never opens as a personal token.

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use data_encoding::BASE64URL_NOPAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Keys a file may hold at most: the current one and those being rotated out.
const MAX_KEYS: usize = 8;
/// The nonce AES-GCM takes (96 bits, random per value).
const NONCE_BYTES: usize = 12;
/// Tags are this long: enough that guessing one is hopeless, short enough to read aloud.
pub const TAG_BYTES: usize = 8;

/// What a sealed value is for; each has its own derived key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A console session cookie.
    Session,
    /// A sign-in in progress (its CSRF token; an SSO login's state, nonce and verifier).
    Flow,
    /// A personal token, the password a user gives `docker login`.
    Personal,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"portcullis seal v1: console session",
            Purpose::Flow => b"portcullis seal v1: sign-in flow",
            Purpose::Personal => b"portcullis seal v1: personal token",
        }
    }
}

/// A session key file that cannot be used: which file, which line, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct KeyFileError {
    /// The file.
    pub file: String,
    /// 1-based line (0: the whole file).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The keys of a session key file: the first seals, every one opens (a rotation adds a new
/// first line; what the old key sealed keeps opening until its line is deleted).
pub struct SealKeys {
    /// One entry per key: the key of each purpose.
    keys: Vec<Vec<(Purpose, RandomizedNonceKey)>>,
    /// One per key: the key short tags are made with ([`SealKeys::tag`]).
    tags: Vec<hmac::Key>,
}

/// Every purpose [`SealKeys`] derives a key for.
const PURPOSES: [Purpose; 3] = [Purpose::Session, Purpose::Flow, Purpose::Personal];
/// What the tagging key is derived with.
const TAG_LABEL: &[u8] = b"portcullis seal v1: tags";

impl SealKeys {
    /// Reads a key file: one key per line, 64 hex digits (`portcullis keygen --session`),
    /// blank lines and `#` comments ignored.
    pub fn load(path: &Path) -> Result<SealKeys, KeyFileError> {
        let error = |line: usize, message: String| KeyFileError {
            file: path.display().to_string(),
            line,
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| error(0, format!("cannot read: {e}")))?;
        let mut secrets = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let secret = hex::decode(line)
                .ok()
                .filter(|bytes| bytes.len() == 32)
                .ok_or_else(|| {
                    error(
                        i + 1,
                        "not a key: 64 hex digits expected (`portcullis keygen --session` \
                         writes one)"
                            .into(),
                    )
                })?;
            secrets.push(secret);
        }
        if secrets.is_empty() {
            return Err(error(
                0,
                "no key in the file: `portcullis keygen --session` writes one".into(),
            ));
        }
        if secrets.len() > MAX_KEYS {
            return Err(error(
                0,
                format!("more than {MAX_KEYS} keys: delete the oldest (last) lines"),
            ));
        }
        SealKeys::from_secrets(&secrets).map_err(|message| error(0, message))
    }

    /// Keys from raw 32-byte secrets, the first sealing.
    pub fn from_secrets(secrets: &[Vec<u8>]) -> Result<SealKeys, String> {
        let tags = secrets
            .iter()
            .map(|secret| {
                let master = hmac::Key::new(hmac::HMAC_SHA256, secret);
                hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&master, TAG_LABEL).as_ref())
            })
            .collect();
        let keys = secrets
            .iter()
            .map(|secret| {
                let master = hmac::Key::new(hmac::HMAC_SHA256, secret);
                PURPOSES
                    .iter()
                    .map(|purpose| {
                        let derived = hmac::sign(&master, purpose.label());
                        RandomizedNonceKey::new(&AES_256_GCM, derived.as_ref())
                            .map(|key| (*purpose, key))
                            .map_err(|_| "cannot make an AES-256-GCM key".to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SealKeys { keys, tags })
    }

    /// A short tag of `data` by the current key: `data` was vouched for by us.
    pub fn tag(&self, data: &[u8]) -> Vec<u8> {
        self.tags
            .first()
            .map(|key| hmac::sign(key, data).as_ref()[..TAG_BYTES].to_vec())
            .unwrap_or_default()
    }

    /// Whether `tag` is the tag of `data` by any of the keys.
    pub fn tag_matches(&self, data: &[u8], tag: &[u8]) -> bool {
        self.tags.iter().any(|key| {
            let made = hmac::sign(key, data);
            aws_lc_rs::constant_time::verify_slices_are_equal(&made.as_ref()[..TAG_BYTES], tag)
                .is_ok()
        })
    }

    /// A new key file's line: 32 random bytes, hex.
    pub fn generate_line() -> Result<String, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("no random source: {e}"))?;
        Ok(hex::encode(secret))
    }

    /// `value` as JSON, sealed for `purpose` with the current key: base64url text.
    pub fn seal<T: Serialize>(&self, purpose: Purpose, value: &T) -> Result<String, String> {
        let key = self
            .keys
            .first()
            .and_then(|keys| key_for(keys, purpose))
            .ok_or("no sealing key")?;
        let mut bytes =
            serde_json::to_vec(value).map_err(|e| format!("cannot encode the value: {e}"))?;
        let nonce = key
            .seal_in_place_append_tag(Aad::from(purpose.label()), &mut bytes)
            .map_err(|_| "cannot seal".to_string())?;
        let mut sealed = nonce.as_ref().to_vec();
        sealed.extend_from_slice(&bytes);
        Ok(BASE64URL_NOPAD.encode(&sealed))
    }

    /// The value sealed in `text` for `purpose` by any of the keys, or None when it was
    /// sealed by no key of ours, for another purpose, altered, or is not a `T`.
    pub fn open<T: DeserializeOwned>(&self, purpose: Purpose, text: &str) -> Option<T> {
        let sealed = BASE64URL_NOPAD.decode(text.as_bytes()).ok()?;
        if sealed.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.keys.iter().find_map(|keys| {
            let key = key_for(keys, purpose)?;
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut bytes = ciphertext.to_vec();
            let plain = key
                .open_in_place(nonce, Aad::from(purpose.label()), &mut bytes)
                .ok()?;
            serde_json::from_slice(plain).ok()
        })
    }
}

fn key_for(
    keys: &[(Purpose, RandomizedNonceKey)],
    purpose: Purpose,
) -> Option<&RandomizedNonceKey> {
    keys.iter().find(|(p, _)| *p == purpose).map(|(_, key)| key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secrets: &[u8]) -> SealKeys {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|b| vec![*b; 32]).collect();
        SealKeys::from_secrets(&secrets).expect("keys")
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_purpose_and_unaltered() {
        let keys = keys(&[1]);
        let sealed = keys.seal(Purpose::Session, &("alice", 7)).expect("seals");
        assert_eq!(
            keys.open::<(String, u32)>(Purpose::Session, &sealed),
            Some(("alice".to_string(), 7))
        );
        assert!(!sealed.contains("alice"), "sealed values are not readable");
        assert_eq!(keys.open::<(String, u32)>(Purpose::Personal, &sealed), None);
        // Flip each byte in turn: nothing altered opens.
        let raw = BASE64URL_NOPAD
            .decode(sealed.as_bytes())
            .expect("base64url");
        for i in 0..raw.len() {
            let mut altered = raw.clone();
            altered[i] ^= 0x01;
            let text = BASE64URL_NOPAD.encode(&altered);
            assert_eq!(
                keys.open::<(String, u32)>(Purpose::Session, &text),
                None,
                "byte {i}"
            );
        }
        for junk in ["", "x", "!!!!", &sealed[..sealed.len() / 2]] {
            assert_eq!(keys.open::<(String, u32)>(Purpose::Session, junk), None);
        }
        assert_ne!(
            keys.seal(Purpose::Session, &1).expect("seals"),
            keys.seal(Purpose::Session, &1).expect("seals"),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn a_rotated_file_opens_what_the_old_key_sealed_and_seals_with_the_new() {
        let old = keys(&[1]);
        let rotated = keys(&[2, 1]);
        let by_old = old.seal(Purpose::Session, &"x").expect("seals");
        assert_eq!(
            rotated.open::<String>(Purpose::Session, &by_old).as_deref(),
            Some("x")
        );
        let by_new = rotated.seal(Purpose::Session, &"y").expect("seals");
        assert_eq!(old.open::<String>(Purpose::Session, &by_new), None);
        assert_eq!(keys(&[2]).open::<String>(Purpose::Session, &by_old), None);
    }

    #[test]
    fn tags_vouch_for_their_data_under_any_key_of_the_file() {
        let rotated = keys(&[2, 1]);
        let tag = keys(&[1]).tag(b"alice");
        assert_eq!(tag.len(), TAG_BYTES);
        assert!(rotated.tag_matches(b"alice", &tag));
        assert!(!rotated.tag_matches(b"alicf", &tag));
        assert!(!keys(&[2]).tag_matches(b"alice", &tag));
        assert!(!rotated.tag_matches(b"alice", &tag[..4]));
    }

    #[test]
    fn key_files_are_read_strictly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("session.key");
        let line = SealKeys::generate_line().expect("random");
        std::fs::write(&path, format!("# rotated in on Monday\n{line}\n\n")).expect("write");
        assert!(SealKeys::load(&path).is_ok());
        std::fs::write(&path, format!("{line}\nnot-hex\n")).expect("write");
        let error = SealKeys::load(&path).err().expect("refused");
        assert_eq!(error.line, 2, "{error}");
        std::fs::write(&path, "# only a comment\n").expect("write");
        assert!(SealKeys::load(&path).is_err_and(|e| e.message.contains("no key")));
        std::fs::write(&path, "abcd\n").expect("write");
        assert!(SealKeys::load(&path).is_err_and(|e| e.message.contains("64 hex")));
        assert!(SealKeys::load(&dir.path().join("missing")).is_err());
    }
}
