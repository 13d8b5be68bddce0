//! Personal tokens: passwords a signed-in person makes in the console for `docker login`
//! and every other client, each with a name, an end, and optionally fewer repositories and
//! actions than its owner has. They are stateless: the token itself is sealed with the
//! shared session key and says everything; revoking one writes its id where every replica
//! reads it: a file they watch, or tags in a repository of the registry they front. A token works only while its owner still does (still in the htpasswd,
//! still in the directory, still known to the SSO provider), and the policies decide every
//! request made with it as for its owner.

use super::{InvalidFile, LoginError, Principal, unix_now};
use crate::glob::matches as glob;
use crate::seal::{Purpose, SealKeys, TAG_BYTES};
use arc_swap::ArcSwap;
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
    /// Repository patterns (globs as in `acl`: `*` within one `/` segment, `**` across
    /// them); empty: every repository.
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

/// Revoked token ids, as the revocation file lists them, and what was wrong with its lines.
#[derive(Debug, Default)]
pub struct Revoked {
    /// Each id, with the time after which its line may be dropped (None: never).
    ids: HashMap<String, Option<u64>>,
    problems: Vec<InvalidFile>,
    /// Not read yet (a registry not reached since the start): every token is refused, since
    /// any may have been revoked.
    unread: bool,
}

/// Where the revocations are kept, so that every replica reads the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStore {
    /// `[console] revoked_tokens`: a file every replica watches.
    File(PathBuf),
    /// `[console] revoked_tokens_repository`: one tag per id in this repository of the
    /// registry (no shared file system needed; polled).
    Registry(String),
}

impl std::fmt::Display for RevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevocationStore::File(path) => write!(f, "{}", path.display()),
            RevocationStore::Registry(repository) => {
                write!(f, "the registry's repository {repository}")
            }
        }
    }
}

/// The first step of a revocation.
#[derive(Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked already: nothing to write.
    Known,
    /// To be written, with the token's end when known.
    New {
        /// When the token ends anyway.
        until: Option<u64>,
    },
}

impl Revoked {
    /// Reads the file: one id per line, first on the line, optionally `until=<unix time>`
    /// (after which the token has ended anyway), then a `#` comment; blank and `#` lines are
    /// skipped. A bad line is reported and the rest kept: one typo must not revive every
    /// revoked token. Any id-shaped word elsewhere on a line is revoked too (two lines run
    /// together when one lacked its newline). A file that cannot be read is an error, so
    /// that the last good set stays.
    pub fn load(path: &Path) -> Result<Revoked, InvalidFile> {
        let text = std::fs::read_to_string(path).map_err(|e| InvalidFile {
            file: path.display().to_string(),
            line: 0,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "missing: the last revocations read stay in force. Restore the file (or \
                 mount it) on every replica"
                    .into()
            } else {
                format!("cannot read: {e}")
            },
        })?;
        Ok(Revoked::parse(&path.display().to_string(), &text))
    }

    /// Nothing read yet from `store`: every token is refused until it is.
    pub fn unread(store: &RevocationStore) -> Revoked {
        Revoked {
            unread: true,
            problems: vec![InvalidFile {
                file: store.to_string(),
                line: 0,
                message: "not read yet: personal tokens are refused until it is".into(),
            }],
            ..Revoked::default()
        }
    }

    /// The ids `names` carry (tags `r<id>`, as [`tag`] makes them), and the names that are
    /// no such tag, reported as problems of `store`.
    pub fn from_tags<'a>(
        store: &RevocationStore,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Revoked {
        let mut revoked = Revoked::default();
        for name in names {
            match name.strip_prefix('r').filter(|id| is_id(id)) {
                Some(id) => {
                    revoked.ids.insert(id.to_string(), expiry_of(id));
                }
                None => revoked.problems.push(InvalidFile {
                    file: store.to_string(),
                    line: 0,
                    message: format!(
                        "the tag {name:?} is not `r` and a personal token's id: it revokes nothing"
                    ),
                }),
            }
        }
        revoked
    }

    /// This set, kept after a read of `store` failed with `message` (as a missing file keeps
    /// the last set).
    pub fn kept_after(&self, store: &RevocationStore, message: String) -> Revoked {
        Revoked {
            ids: self.ids.clone(),
            problems: vec![InvalidFile {
                file: store.to_string(),
                line: 0,
                message,
            }],
            unread: self.unread,
        }
    }

    /// The ids whose tokens ended more than a day ago (the clocks of replicas differ): their
    /// revocations may go.
    pub fn ended(&self, now: u64) -> impl Iterator<Item = &str> {
        self.ids.iter().filter_map(move |(id, until)| {
            until
                .is_some_and(|u| u.saturating_add(DROP_AFTER) < now)
                .then_some(id.as_str())
        })
    }

    /// The ids of a revocation file's text, and its bad lines.
    pub fn parse(file: &str, text: &str) -> Revoked {
        let mut revoked = Revoked::default();
        for (i, line) in text.lines().enumerate() {
            let mut problem = |message: String| {
                revoked.problems.push(InvalidFile {
                    file: file.to_string(),
                    line: i + 1,
                    message,
                })
            };
            let (entry, comment) = line.split_once('#').unwrap_or((line, ""));
            let mut words = entry.split_whitespace();
            let Some(first) = words.next() else {
                continue;
            };
            let mut until = None;
            let mut ids = Vec::new();
            if is_id(first) {
                ids.push(first);
            } else {
                problem(format!(
                    "{first:?} is not a personal token's id (the console shows ids when it \
                     makes tokens)"
                ));
            }
            for word in words {
                match word.strip_prefix("until=").map(str::parse::<u64>) {
                    Some(Ok(time)) => until = Some(time),
                    _ if is_id(word) => ids.push(word),
                    _ => problem(format!(
                        "{word:?} is neither `until=<unix time>` nor an id: start a comment \
                         with `#`"
                    )),
                }
            }
            let hidden: Vec<&str> = comment.split_whitespace().filter(|w| is_id(w)).collect();
            if ids.len() + hidden.len() > 1 {
                problem(format!(
                    "{} ids on one line (a line that lacked its newline?): all are revoked; \
                     give each its own line",
                    ids.len() + hidden.len()
                ));
            }
            for id in ids.iter().chain(&hidden) {
                // Of one id listed twice, the later expiry counts (None: never).
                let line_until = if ids.len() == 1 && hidden.is_empty() {
                    until.or_else(|| expiry_of(id))
                } else {
                    None
                };
                revoked
                    .ids
                    .entry(id.to_string())
                    .and_modify(|u| *u = u.zip(line_until).map(|(a, b)| a.max(b)))
                    .or_insert(line_until);
            }
        }
        revoked
    }

    /// True until the store was read once (a registry store just after the start).
    pub fn is_unread(&self) -> bool {
        self.unread
    }

    /// How many ids are revoked.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// True when `id` is revoked, or when nothing could be read yet.
    pub fn contains(&self, id: &str) -> bool {
        self.unread || self.ids.contains_key(id)
    }

    /// The lines that could not be read as they should.
    pub fn problems(&self) -> &[InvalidFile] {
        &self.problems
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
    store: RevocationStore,
    max_age: Duration,
    rate: RevocationRate,
}

impl PersonalTokens {
    /// Tokens sealed with `keys`, revoked in `store`, none living longer than `max_days` (a
    /// lowered maximum applies to the tokens already out). A revocation file that is not
    /// there yet is made, empty: from then on, a missing file is a fault. A registry store
    /// starts with what `previous` (the tokens of the config before) read from the same
    /// repository, else unread until the first poll.
    pub fn new(
        keys: Arc<ArcSwap<SealKeys>>,
        store: RevocationStore,
        max_days: u64,
        previous: Option<&PersonalTokens>,
    ) -> Result<PersonalTokens, InvalidFile> {
        let revoked = match &store {
            RevocationStore::File(path) => Arc::new(PersonalTokens::open_file(path)?),
            RevocationStore::Registry(_) => previous
                .filter(|p| p.store == store)
                .map(PersonalTokens::revoked)
                .unwrap_or_else(|| Arc::new(Revoked::unread(&store))),
        };
        Ok(PersonalTokens {
            keys,
            revoked: ArcSwap::new(revoked),
            store,
            max_age: Duration::from_secs(max_days.saturating_mul(24 * 3600)),
            rate: RevocationRate::default(),
        })
    }

    /// The revocation file, made empty when it is not there yet.
    fn open_file(revoked_file: &Path) -> Result<Revoked, InvalidFile> {
        if !revoked_file.exists() {
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(revoked_file)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(std::fs::File::open(revoked_file)?),
                    _ => Err(e),
                })
                .map_err(|e| InvalidFile {
                    file: revoked_file.display().to_string(),
                    line: 0,
                    message: format!(
                        "cannot make the revocation file: {e}. Personal tokens are not issued \
                         without one"
                    ),
                })?;
        }
        Revoked::load(revoked_file)
    }

    /// The revocations were read again.
    pub fn set_revoked(&self, revoked: Revoked) {
        self.revoked.store(Arc::new(revoked));
    }

    /// The revoked ids.
    pub fn revoked(&self) -> Arc<Revoked> {
        self.revoked.load_full()
    }

    /// Where the revocations are kept.
    pub fn store(&self) -> &RevocationStore {
        &self.store
    }

    /// The longest a token may live.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// A new id for a token of `user` that ends at `expires`: random, with the end (so that
    /// its revocation can be dropped once it has ended) and a tag binding both to `user`, so
    /// that a person can revoke their own tokens by id and nobody else's.
    pub fn new_id(&self, user: &str, expires: u64) -> Result<String, String> {
        let mut random = [0u8; ID_BYTES];
        getrandom::fill(&mut random).map_err(|e| format!("no random source: {e}"))?;
        let mut id = random.to_vec();
        id.extend(expires.to_be_bytes());
        let tag = self.keys.load().tag(&owned(user, &id));
        id.extend(tag);
        Ok(BASE64URL_NOPAD.encode(&id))
    }

    /// Whether `id` is one `user` was given.
    pub fn owns(&self, user: &str, id: &str) -> bool {
        let Ok(bytes) = BASE64URL_NOPAD.decode(id.as_bytes()) else {
            return false;
        };
        if !ID_LENGTHS.contains(&bytes.len()) {
            return false;
        }
        let (data, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        self.keys.load().tag_matches(&owned(user, data), tag)
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
        if self.revoked.load().contains(&personal.id) {
            return Err(Refusal::Ended(format!(
                "the personal token {:?} was revoked",
                personal.name
            )));
        }
        Ok(personal)
    }

    /// The first step of revoking `id` (a token ending at `until`, when known), asked by
    /// `by`, who may revoke [`MAX_REVOCATIONS`] tokens an hour: [`Revocation::Known`] when
    /// it is revoked already. The caller then writes it to the store and calls
    /// [`PersonalTokens::remember`].
    pub fn admit(&self, id: &str, until: Option<u64>, by: &str) -> Result<Revocation, String> {
        if !is_id(id) {
            return Err(format!("{id:?} is not a personal token's id"));
        }
        let revoked = self.revoked.load();
        if revoked.ids.contains_key(id) {
            return Ok(Revocation::Known);
        }
        if revoked.unread {
            return Err(format!(
                "the revocations in {} could not be read yet: try again in a moment",
                self.store
            ));
        }
        self.rate.admit(by)?;
        Ok(Revocation::New {
            until: until.or_else(|| expiry_of(id)),
        })
    }

    /// `id` was written to the store: revoked here at once, before the next read.
    pub fn remember(&self, id: &str, until: Option<u64>) {
        self.revoked.rcu(|current| {
            let mut ids = current.ids.clone();
            ids.insert(id.to_string(), until);
            Revoked {
                ids,
                problems: current.problems.clone(),
                unread: current.unread,
            }
        });
    }
}

/// Writes `id`'s line to the revocation file at `path` with `note` as a comment, unless it
/// lists the id already (another replica revoked it); true when written.
pub fn write_to_file(
    path: &Path,
    id: &str,
    until: Option<u64>,
    note: &str,
) -> Result<bool, String> {
    RevocationFile(path).add(id, until, note)
}

/// The tag that revokes `id` in a registry store.
pub fn tag(id: &str) -> String {
    format!("r{id}")
}

/// Revocations one person may make in an hour, per replica: enough for any cleanup by hand,
/// and a bound on how fast one session can grow the file every replica re-reads.
pub const MAX_REVOCATIONS: u32 = 60;

/// Revocations per person in the current hour.
#[derive(Default)]
struct RevocationRate {
    counts: std::sync::Mutex<HashMap<String, (u32, std::time::Instant)>>,
}

impl RevocationRate {
    fn admit(&self, by: &str) -> Result<(), String> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hour = Duration::from_secs(3600);
        counts.retain(|_, (_, since)| since.elapsed() < hour);
        let (count, _) = counts
            .entry(super::fold(by))
            .or_insert((0, std::time::Instant::now()));
        if *count >= MAX_REVOCATIONS {
            return Err(format!(
                "{by:?} revoked {MAX_REVOCATIONS} tokens within the hour: try again later, or \
                 add the ids to the revocation file by hand"
            ));
        }
        *count += 1;
        Ok(())
    }
}

/// The revocation file as the console writes it: one line per id, never run into another
/// line; lines of tokens that have ended are dropped as new ones are added, so the file
/// does not only grow. Writers on every replica take a lock file beside it.
struct RevocationFile<'a>(&'a Path);

/// Clocks of replicas differ: a line is dropped only this long after its token ended.
const DROP_AFTER: u64 = 24 * 3600;

impl RevocationFile<'_> {
    /// Adds `id`'s line, unless the file lists it already (another replica revoked it);
    /// true when written.
    fn add(&self, id: &str, until: Option<u64>, note: &str) -> Result<bool, String> {
        let path = self.0;
        let cannot = |e: std::io::Error| {
            format!(
                "cannot write {}: {e}. Add the line `{id}` to it on every replica by hand",
                path.display()
            )
        };
        let lock = self.lock();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(cannot(e)),
        };
        if Revoked::parse("", &text).contains(id) {
            return Ok(false);
        }
        let note = note.replace(['\n', '\r'], " ");
        let line = match until {
            Some(until) => format!("{id} until={until}  # {note}\n"),
            None => format!("{id}  # {note}\n"),
        };
        let now = unix_now();
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| line_until(line).is_none_or(|u| u.saturating_add(DROP_AFTER) >= now))
            .collect();
        if kept.len() < text.lines().count() && lock.is_some() {
            // Rewritten whole and renamed into place: a reader sees the old file or the new.
            let mut whole = kept.join("\n");
            if !whole.is_empty() {
                whole.push('\n');
            }
            whole.push_str(&line);
            let temporary = path.with_extension("compacting");
            std::fs::write(&temporary, whole)
                .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, path))
                .map_err(cannot)?;
            return Ok(true);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(cannot)?;
        // A last line without its newline (a file written by `printf`, a ConfigMap
        // literal) would swallow this id into its comment: end it first. One write of the
        // whole: appends from several replicas do not interleave.
        let lead = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        file.write_all(format!("{lead}{line}").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(cannot)?;
        Ok(true)
    }

    /// The lock beside the file, when its directory lets us make one (else appends go
    /// unlocked, as one write each, and nothing is dropped).
    fn lock(&self) -> Option<std::fs::File> {
        let mut name = self.0.as_os_str().to_os_string();
        name.push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(name))
            .ok()?;
        file.lock().ok()?;
        Some(file)
    }
}

/// The `until=` of a line that revokes one id, if it says one.
fn line_until(line: &str) -> Option<u64> {
    let revoked = Revoked::parse("", line);
    if revoked.ids.len() != 1 || !revoked.problems.is_empty() {
        return None;
    }
    revoked.ids.values().next().copied().flatten()
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

/// The byte lengths of ids: random and tag, and (since ids carry it) the end in between.
const ID_LENGTHS: [usize; 2] = [ID_BYTES + TAG_BYTES, ID_BYTES + 8 + TAG_BYTES];

/// Whether `id` is shaped like a token id.
pub fn is_id(id: &str) -> bool {
    BASE64URL_NOPAD
        .decode(id.as_bytes())
        .is_ok_and(|bytes| ID_LENGTHS.contains(&bytes.len()))
}

/// When the token of `id` ends, if its id says (ids made before they carried it do not).
fn expiry_of(id: &str) -> Option<u64> {
    let bytes = BASE64URL_NOPAD.decode(id.as_bytes()).ok()?;
    let end: [u8; 8] = bytes.get(ID_BYTES..ID_BYTES + 8)?.try_into().ok()?;
    (bytes.len() == ID_LENGTHS[1]).then(|| u64::from_be_bytes(end))
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
            RevocationStore::File(dir.join("revoked")),
            90,
            None,
        )
        .expect("tokens")
    }

    /// A revocation as the server makes one with a file store.
    fn revoke(tokens: &PersonalTokens, id: &str, by: &str, note: &str) -> Result<bool, String> {
        let Revocation::New { until } = tokens.admit(id, None, by)? else {
            return Ok(false);
        };
        let RevocationStore::File(path) = tokens.store() else {
            unreachable!("a file store")
        };
        let written = write_to_file(path, id, until, note)?;
        tokens.remember(id, until);
        Ok(written)
    }

    fn personal(tokens: &PersonalTokens, user: &str) -> Personal {
        let expires = unix_now() + 3600;
        Personal {
            id: tokens.new_id(user, expires).expect("id"),
            user: user.into(),
            source: "htpasswd".into(),
            credential: None,
            groups: Vec::new(),
            claims: Vec::new(),
            provider_refresh: None,
            name: "ci".into(),
            issued: unix_now(),
            expires,
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
        // A token names its owner exactly: no other spelling opens it.
        assert!(matches!(
            tokens.open("Alice", &token),
            Err(Refusal::Ended(_))
        ));
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

        assert_eq!(revoke(&tokens, &made.id, "alice", "by alice"), Ok(true));
        assert!(
            matches!(tokens.open("alice", &token), Err(Refusal::Ended(w)) if w.contains("revoked"))
        );
        // Another replica reads the same file; the id's end is on its line.
        let text = std::fs::read_to_string(dir.path().join("revoked")).expect("file");
        assert!(text.contains(&format!("until={}", made.expires)), "{text}");
        let other = Revoked::load(&dir.path().join("revoked")).expect("loads");
        assert!(other.contains(&made.id) && other.problems().is_empty());
        assert!(revoke(&tokens, "not an id", "alice", "x").is_err());
    }

    #[test]
    fn ids_are_their_owners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = tokens(dir.path());
        let id = tokens.new_id("alice", 1_000).expect("id");
        assert!(tokens.owns("alice", &id));
        assert!(!tokens.owns("bob", &id));
        assert_eq!(expiry_of(&id), Some(1_000));
        assert!(!tokens.owns("alice", "AAAAAAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!tokens.owns("alice", "!"));
        // Ids made before they carried the end are still ids (and revocable).
        assert!(is_id("AAAAAAAAAAAAAAAAAAAAAAAAAAA"));
        assert_eq!(expiry_of("AAAAAAAAAAAAAAAAAAAAAAAAAAA"), None);
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
        // Globs as in acl: `team/*` is not `team/deep/app`.
        assert!(!narrow.allows("repository", "team/deep/app", "pull"));
    }

    /// Issue 19: one bad line must not revive every revoked token; a line run into another
    /// revokes both; a missing file is a fault, not an empty set.
    #[test]
    fn the_revocation_file_keeps_every_good_id_and_names_each_bad_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("revoked");
        let missing = Revoked::load(&path).expect_err("a missing file is a fault");
        assert!(
            missing.message.contains("last revocations read stay"),
            "{missing}"
        );
        let tokens = tokens(dir.path());
        assert!(Revoked::load(&path).expect("made at start").is_empty());
        let id = |n: u64| tokens.new_id("a", n).expect("id");
        let (a, b, c, d) = (id(1), id(2), id(3), id(4));
        std::fs::write(
            &path,
            format!("# revoked\n{a}  # by admin\n\nnot-an-id\n{b} until=5 oops\n{c}  # note {d}\n"),
        )
        .expect("write");
        let revoked = Revoked::load(&path).expect("loads");
        for id in [&a, &b, &c, &d] {
            assert!(revoked.contains(id), "{id}");
        }
        let lines: Vec<usize> = revoked.problems().iter().map(|p| p.line).collect();
        assert_eq!(lines, [4, 5, 6], "{:?}", revoked.problems());
    }

    /// Issue 19: the console's append after a line without its newline (printf, a ConfigMap
    /// literal) lands on a line of its own; a second revocation of one id writes nothing;
    /// lines of ended tokens go as new ones come; one person's revocations are bounded.
    #[test]
    fn revocations_append_whole_lines_once_and_the_file_does_not_only_grow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("revoked");
        let tokens = tokens(dir.path());
        let old = tokens.new_id("bob", unix_now() + 3600).expect("id");
        std::fs::write(&path, format!("{old}  # revoked by hand, no newline")).expect("write");
        tokens.set_revoked(Revoked::load(&path).expect("loads"));
        let made = personal(&tokens, "alice");
        assert_eq!(revoke(&tokens, &made.id, "alice", "by alice"), Ok(true));
        let reread = Revoked::load(&path).expect("loads");
        assert!(reread.contains(&made.id) && reread.contains(&old));
        assert!(reread.problems().is_empty(), "{:?}", reread.problems());
        assert_eq!(revoke(&tokens, &made.id, "alice", "again"), Ok(false));
        let lines = |p: &Path| std::fs::read_to_string(p).expect("file").lines().count();
        assert_eq!(lines(&path), 2);

        // An ended token's line (until=1, long past) is dropped when the next is added.
        let ended = tokens.new_id("bob", 1).expect("id");
        assert_eq!(revoke(&tokens, &ended, "bob", "ended"), Ok(true));
        let next = personal(&tokens, "carol");
        assert_eq!(revoke(&tokens, &next.id, "carol", "next"), Ok(true));
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(!text.contains(&ended), "{text}");
        assert!(
            text.contains(&old) && text.contains(&made.id) && text.contains(&next.id),
            "{text}"
        );

        for n in 0..u64::from(MAX_REVOCATIONS) {
            let id = tokens.new_id("mallory", unix_now() + n).expect("id");
            assert_eq!(revoke(&tokens, &id, "mallory", "spam"), Ok(true));
        }
        let one_more = tokens.new_id("mallory", unix_now()).expect("id");
        let refused = revoke(&tokens, &one_more, "Mallory", "spam");
        assert!(refused.is_err_and(|e| e.contains("within the hour")));
    }
}
