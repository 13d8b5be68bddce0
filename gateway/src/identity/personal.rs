//! Personal tokens: passwords a signed-in person makes in the console for `docker login`
//! and every other client, each with a name, an end, and optionally fewer repositories and
//! actions than its owner has. They are stateless: the token itself is sealed with the
//! shared session key and says everything; revoking one writes its id to a file every
//! replica watches. A token works only while its owner still does (still in the htpasswd,
//! still in the directory, still known to the SSO provider), and the policies decide every
//! request made with it as for its owner.

use super::oidc::glob;
use super::{InvalidFile, LoginError, Principal, unix_now};
use crate::seal::{Purpose, SealKeys, TAG_BYTES};
use arc_swap::ArcSwap;
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What every personal token starts with, so that clients, logs and secret scanners can
/// tell it from a password.
pub const PREFIX: &str = "pcp_";
/// Random bytes in a token's id.
const ID_BYTES: usize = 12;
/// Repository patterns a token may be narrowed to at most.
pub const MAX_REPOSITORIES: usize = 32;
/// A token's name is at most this long.
pub const MAX_NAME: usize = 64;

/// What a personal token holds (sealed: its holder can neither read nor alter it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Personal {
    /// Its id: what revokes it.
    #[serde(rename = "i")]
    pub id: String,
    /// The owner's account name.
    #[serde(rename = "u")]
    pub user: String,
    /// Where the owner comes from: `htpasswd`, `ldap`, or the SSO issuer.
    #[serde(rename = "s")]
    pub source: String,
    /// A directory owner's entry (what `still_holds` checks).
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// An SSO owner's groups and claims at creation (the provider is not asked for them).
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// See `groups`.
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<(String, String)>,
    /// An SSO owner's refresh token at the provider: asking it again tells whether the
    /// owner is still there.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub provider_refresh: Option<String>,
    /// The name its owner gave it.
    #[serde(rename = "n")]
    pub name: String,
    /// Unix time it was made.
    #[serde(rename = "t")]
    pub issued: u64,
    /// Unix time it ends.
    #[serde(rename = "e")]
    pub expires: u64,
    /// What it is narrowed to.
    #[serde(rename = "l", default)]
    pub limit: Limit,
}

/// What a personal token is narrowed to: it grants what the policies grant its owner, and
/// only within this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Repository patterns (`*` any run of characters, `?` one); empty: every repository.
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Actions; empty: every action.
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

impl Limit {
    /// Whether the limit lets `action` on the resource through. A narrowed token reaches
    /// repositories only (no catalog).
    pub fn allows(&self, resource_type: &str, name: &str, action: &str) -> bool {
        let action_ok = self.actions.is_empty() || self.actions.iter().any(|a| a == action);
        let resource_ok = if resource_type == "repository" {
            self.repositories.is_empty() || self.repositories.iter().any(|p| glob(p, name))
        } else {
            self.repositories.is_empty() && self.actions.is_empty()
        };
        action_ok && resource_ok
    }

    /// True when nothing is narrowed.
    pub fn is_open(&self) -> bool {
        self.repositories.is_empty() && self.actions.is_empty()
    }
}

/// Revoked token ids, as the revocation file lists them.
#[derive(Debug, Default)]
pub struct Revoked {
    ids: HashSet<String>,
}

impl Revoked {
    /// Reads the file: one id per line, first on the line (a `#` comment may follow); blank
    /// and `#` lines are skipped. A missing file revokes nothing.
    pub fn load(path: &Path) -> Result<Revoked, InvalidFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(InvalidFile {
                    file: path.display().to_string(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
            }
        };
        let mut ids = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = line.split_whitespace().next().unwrap_or_default();
            if !is_id(id) {
                return Err(InvalidFile {
                    file: path.display().to_string(),
                    line: i + 1,
                    message: format!(
                        "{id:?} is not a personal token's id (the console shows ids when it \
                         makes tokens)"
                    ),
                });
            }
            ids.insert(id.to_string());
        }
        Ok(Revoked { ids })
    }

    /// How many ids are revoked.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A token that will not log in, and why (said to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token of ours, or altered: said like a wrong password.
    Unknown,
    /// Ours, but not good any more.
    Ended(String),
}

/// The personal tokens of one config: the keys they are sealed with (shared with the
/// console's sessions) and the revoked ids.
pub struct PersonalTokens {
    keys: Arc<ArcSwap<SealKeys>>,
    revoked: ArcSwap<Revoked>,
    revoked_file: PathBuf,
    max_age: Duration,
}

impl PersonalTokens {
    /// Tokens sealed with `keys`, revoked by `revoked_file`, none living longer than
    /// `max_days` (a lowered maximum applies to the tokens already out).
    pub fn new(
        keys: Arc<ArcSwap<SealKeys>>,
        revoked_file: &Path,
        max_days: u64,
    ) -> Result<PersonalTokens, InvalidFile> {
        Ok(PersonalTokens {
            keys,
            revoked: ArcSwap::from_pointee(Revoked::load(revoked_file)?),
            revoked_file: revoked_file.to_path_buf(),
            max_age: Duration::from_secs(max_days.saturating_mul(24 * 3600)),
        })
    }

    /// The revocation file changed.
    pub fn set_revoked(&self, revoked: Revoked) {
        self.revoked.store(Arc::new(revoked));
    }

    /// The revoked ids.
    pub fn revoked(&self) -> Arc<Revoked> {
        self.revoked.load_full()
    }

    /// The revocation file.
    pub fn revoked_file(&self) -> &Path {
        &self.revoked_file
    }

    /// The longest a token may live.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// A new id for a token of `user`: random, with a tag binding it to them, so that a
    /// person can revoke their own tokens by id and nobody else's.
    pub fn new_id(&self, user: &str) -> Result<String, String> {
        let mut random = [0u8; ID_BYTES];
        getrandom::fill(&mut random).map_err(|e| format!("no random source: {e}"))?;
        let mut id = random.to_vec();
        id.extend(self.keys.load().tag(&owned(user, &random)));
        Ok(BASE64URL_NOPAD.encode(&id))
    }

    /// Whether `id` is one `user` was given.
    pub fn owns(&self, user: &str, id: &str) -> bool {
        let Ok(bytes) = BASE64URL_NOPAD.decode(id.as_bytes()) else {
            return false;
        };
        if bytes.len() != ID_BYTES + TAG_BYTES {
            return false;
        }
        let (random, tag) = bytes.split_at(ID_BYTES);
        self.keys.load().tag_matches(&owned(user, random), tag)
    }

    /// The token's text: [`PREFIX`] and the sealed `personal`.
    pub fn seal(&self, personal: &Personal) -> Result<String, String> {
        Ok(format!(
            "{PREFIX}{}",
            self.keys.load().seal(Purpose::Personal, personal)?
        ))
    }

    /// What a token says, if it is one of ours, alive, not revoked and `user`'s (any name
    /// when `user` is empty: a token pasted into the console's revoke form).
    pub fn open(&self, user: &str, token: &str) -> Result<Personal, Refusal> {
        let sealed = token.strip_prefix(PREFIX).ok_or(Refusal::Unknown)?;
        let personal: Personal = self
            .keys
            .load()
            .open(Purpose::Personal, sealed)
            .ok_or(Refusal::Unknown)?;
        if !user.is_empty() && personal.user != user {
            return Err(Refusal::Ended(format!(
                "this personal token is {:?}'s: log in with that name",
                personal.user
            )));
        }
        let now = unix_now();
        if personal.expires <= now {
            return Err(Refusal::Ended(format!(
                "the personal token {:?} has expired",
                personal.name
            )));
        }
        if personal.issued.saturating_add(self.max_age.as_secs()) <= now {
            return Err(Refusal::Ended(format!(
                "the personal token {:?} is older than tokens may now live ([console] \
                 token_max_days)",
                personal.name
            )));
        }
        if self.revoked.load().ids.contains(&personal.id) {
            return Err(Refusal::Ended(format!(
                "the personal token {:?} was revoked",
                personal.name
            )));
        }
        Ok(personal)
    }

    /// Revokes `id` here at once, and for every replica by appending it to the file they
    /// watch, with `note` as a comment.
    pub fn revoke(&self, id: &str, note: &str) -> Result<(), String> {
        if !is_id(id) {
            return Err(format!("{id:?} is not a personal token's id"));
        }
        let note = note.replace(['\n', '\r'], " ");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.revoked_file)
            .map_err(|e| {
                format!(
                    "cannot write {}: {e}. Add the line `{id}` to it on every replica by hand",
                    self.revoked_file.display()
                )
            })?;
        // One write of one line: appends from several replicas do not interleave.
        file.write_all(format!("{id}  # {note}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", self.revoked_file.display()))?;
        let mut ids = self.revoked.load().ids.clone();
        ids.insert(id.to_string());
        self.revoked.store(Arc::new(Revoked { ids }));
        Ok(())
    }
}

impl Personal {
    /// The owner as the policies see them, for an SSO owner (others are looked up again).
    pub fn sso_principal(&self) -> Principal {
        Principal {
            name: self.user.clone(),
            groups: self.groups.clone(),
            origin: super::Origin::Oidc(self.source.clone()),
            claims: self.claims.clone(),
        }
    }
}

/// What an id's tag vouches for: the owner and the id's random part.
fn owned(user: &str, random: &[u8]) -> Vec<u8> {
    let mut data = format!("personal token of {user}\0").into_bytes();
    data.extend_from_slice(random);
    data
}

/// Whether `id` is shaped like a token id.
fn is_id(id: &str) -> bool {
    BASE64URL_NOPAD
        .decode(id.as_bytes())
        .is_ok_and(|bytes| bytes.len() == ID_BYTES + TAG_BYTES)
}

/// The error a login with a refused personal token gets.
pub fn refused(refusal: Refusal) -> LoginError {
    match refusal {
        Refusal::Unknown => LoginError::Wrong,
        Refusal::Ended(why) => LoginError::Refused(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(dir: &Path) -> PersonalTokens {
        let keys = SealKeys::from_secrets(&[vec![3; 32]]).expect("keys");
        PersonalTokens::new(
            Arc::new(ArcSwap::from_pointee(keys)),
            &dir.join("revoked"),
            90,
        )
        .expect("tokens")
    }

    fn personal(tokens: &PersonalTokens, user: &str) -> Personal {
        Personal {
            id: tokens.new_id(user).expect("id"),
            user: user.into(),
            source: "htpasswd".into(),
            credential: None,
            groups: Vec::new(),
            claims: Vec::new(),
            provider_refresh: None,
            name: "ci".into(),
            issued: unix_now(),
            expires: unix_now() + 3600,
            limit: Limit::default(),
        }
    }

    #[test]
    fn a_token_opens_for_its_owner_until_it_ends_or_is_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = tokens(dir.path());
        let made = personal(&tokens, "alice");
        let token = tokens.seal(&made).expect("sealed");
        assert!(token.starts_with(PREFIX) && !token.contains("alice"));
        assert_eq!(tokens.open("alice", &token), Ok(made.clone()));
        assert_eq!(tokens.open("", &token), Ok(made.clone()));
        assert!(
            matches!(tokens.open("bob", &token), Err(Refusal::Ended(w)) if w.contains("alice"))
        );
        assert_eq!(tokens.open("alice", "pcp_nonsense"), Err(Refusal::Unknown));
        assert_eq!(tokens.open("alice", "a password"), Err(Refusal::Unknown));
        let ended = tokens
            .seal(&Personal {
                expires: unix_now() - 1,
                ..made.clone()
            })
            .expect("sealed");
        assert!(
            matches!(tokens.open("alice", &ended), Err(Refusal::Ended(w)) if w.contains("expired"))
        );
        let ancient = tokens
            .seal(&Personal {
                issued: unix_now() - 91 * 24 * 3600,
                ..made.clone()
            })
            .expect("sealed");
        assert!(
            matches!(tokens.open("alice", &ancient), Err(Refusal::Ended(w)) if w.contains("token_max_days"))
        );

        tokens
            .revoke(&made.id, "revoked by alice")
            .expect("revoked");
        assert!(
            matches!(tokens.open("alice", &token), Err(Refusal::Ended(w)) if w.contains("revoked"))
        );
        // Another replica reads the same file.
        let other = Revoked::load(&dir.path().join("revoked")).expect("loads");
        assert!(other.ids.contains(&made.id));
        assert!(tokens.revoke("not an id", "x").is_err());
    }

    #[test]
    fn ids_are_their_owners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = tokens(dir.path());
        let id = tokens.new_id("alice").expect("id");
        assert!(tokens.owns("alice", &id));
        assert!(!tokens.owns("bob", &id));
        assert!(!tokens.owns("alice", "AAAAAAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!tokens.owns("alice", "!"));
    }

    #[test]
    fn a_limit_narrows_repositories_and_actions() {
        let open = Limit::default();
        assert!(
            open.allows("repository", "a/b", "push") && open.allows("registry", "catalog", "*")
        );
        let narrow = Limit {
            repositories: vec!["team/*".into()],
            actions: vec!["pull".into()],
        };
        assert!(narrow.allows("repository", "team/app", "pull"));
        assert!(!narrow.allows("repository", "team/app", "push"));
        assert!(!narrow.allows("repository", "other/app", "pull"));
        assert!(!narrow.allows("registry", "catalog", "*"));
    }

    #[test]
    fn the_revocation_file_is_read_strictly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("revoked");
        assert!(Revoked::load(&path).expect("missing is empty").is_empty());
        let id = tokens(dir.path()).new_id("a").expect("id");
        std::fs::write(&path, format!("# revoked\n{id}  # by admin\n\n")).expect("write");
        assert_eq!(Revoked::load(&path).expect("loads").len(), 1);
        std::fs::write(&path, format!("{id}\nnot-an-id\n")).expect("write");
        assert_eq!(Revoked::load(&path).err().map(|e| e.line), Some(2));
    }
}
