//! The HTTP side. Here the application state built from the config and the hot reload of
//! the files it reads; around it the router (`routes`), the listeners (`listener`), the
//! operators' endpoints (`admin`), the one error-to-response mapping (`error`), and each
//! endpoint's handler.

mod access;
mod admin;
mod connections;
mod console;
mod cors;
pub mod credentials;
mod error;
mod facts;
mod gateway;
mod listener;
mod live;
mod revocations;
mod routes;
mod token_endpoint;

pub use error::ApiError;
pub use listener::serve;
pub use live::Live;

use error::json;

use crate::artifacts::{Artifacts, OwnRegistry};
use crate::config::Config;
use crate::console::Console;
use crate::decision_log::DecisionLog;
use crate::identity::{
    Directory, Groups, Htpasswd, Identity, OidcIssuer, PersonalTokens, RevocationStore, Revoked,
    Sources, Sso,
};
use crate::metrics::Metrics;
use crate::policy::compiled::CompiledStore;
use crate::policy::{Host, Policies};
use crate::proxy::{Body, Upstream};
use crate::seal::SealKeys;
use crate::shadow::{Shadow, Tally};
use crate::signatures::Keys;
use crate::tls::Certificate;
use crate::token::{Issuer, SigningKey, Verified};
use crate::watch::{FileWatcher, Fingerprint, fingerprints};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Everything a request needs for one config: files reload piecewise inside it, and an
/// edited config builds a successor ([`Live`] swaps it in whole).
pub struct App {
    config: Config,
    issuer: Issuer,
    keys: ArcSwap<KeyRing>,
    identity: Arc<Identity>,
    lanes: Arc<access::Lanes>,
    policies: Arc<Policies>,
    host: Host,
    upstream: Option<Upstream>,
    /// `public_url` as (scheme, host[:port]), parsed once.
    public_origin: Option<(String, String)>,
    tls: Option<Arc<Certificate>>,
    metrics: Arc<Metrics>,
    /// Refused logins logged in the current minute: kept across config reloads.
    refusals: Arc<access::Refusals>,
    /// Why the last edit of the config file was refused, if it was.
    config_error: Arc<Mutex<Option<String>>>,
    decisions: Arc<DecisionLog>,
    /// The public keys of `[signatures]`, and what they were found to sign.
    signature_keys: ArcSwap<Keys>,
    /// The policies whose modules come from registries.
    artifacts: Artifacts,
    /// The candidate set of `[[shadow]]`, decided beside the serving one.
    shadow: Option<Shadow>,
    /// What shadow sets have said since the start, across config edits.
    shadow_tally: Arc<Tally>,
    /// The web console, when `[console] enabled`.
    console: Option<Arc<Console>>,
    reload_lock: Mutex<()>,
    /// Each identity file's fingerprint just before it was last read: its watcher starts from
    /// there, so an edit that lands while the App loads is not lost.
    read_as: Mutex<HashMap<PathBuf, Fingerprint>>,
}

/// The current signing key and the keys rotated out, which still verify refresh tokens.
/// Immutable: a rotation builds a new ring, and with it an empty memory of verified tokens.
pub struct KeyRing {
    current: Arc<SigningKey>,
    previous: Vec<Arc<SigningKey>>,
    verified: quick_cache::sync::Cache<String, Arc<Verified>>,
}

/// Bearer tokens remembered as verified, so a request costs a lookup, not a signature check.
const REMEMBERED_TOKENS: usize = 16_384;

impl KeyRing {
    fn new(current: Arc<SigningKey>, previous: Vec<Arc<SigningKey>>) -> KeyRing {
        KeyRing {
            current,
            previous,
            verified: quick_cache::sync::Cache::new(REMEMBERED_TOKENS),
        }
    }

    /// Every key that may have signed a live token, the current one first.
    fn all(&self) -> Vec<&SigningKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.as_ref())
            .collect()
    }
}

/// The files besides policies that a config names, each set reloaded on its own.
#[derive(Clone, Copy)]
enum FileSet {
    /// The htpasswd.
    Users,
    /// The groups file.
    Groups,
    /// The signing key and its certificate.
    Key,
    /// The listener's TLS certificate and key.
    Tls,
    /// The console's session key and the revoked personal tokens.
    Console,
    /// The public keys of `[signatures]`.
    Signatures,
}

impl FileSet {
    const ALL: [FileSet; 6] = [
        FileSet::Users,
        FileSet::Groups,
        FileSet::Key,
        FileSet::Tls,
        FileSet::Console,
        FileSet::Signatures,
    ];

    /// The name of its watcher thread.
    fn name(self) -> &'static str {
        match self {
            FileSet::Users => "htpasswd",
            FileSet::Groups => "groups",
            FileSet::Key => "key",
            FileSet::Tls => "tls",
            FileSet::Signatures => "signatures",
            FileSet::Console => "console",
        }
    }
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

impl App {
    /// Loads every file the config names; any failure stops the start.
    pub fn new(config: Config) -> Result<App, StartError> {
        App::build(config, None)
    }

    /// The App for an edited config: everything loaded afresh from it, except what outlives
    /// one config (the metrics, the wasm engine with its compiled modules, the login
    /// throttle and remembered credentials, the decision lanes, the decision log, and the
    /// key ring and TLS
    /// certificate while their files stay the same). On any failure this App keeps serving.
    pub fn successor(&self, config: Config) -> Result<App, StartError> {
        let (old, new) = (&self.config.server, &config.server);
        if old.listen != new.listen
            || old.admin_listen != new.admin_listen
            || old.tls_cert.is_some() != new.tls_cert.is_some()
        {
            tracing::warn!(
                "[server] listen, admin_listen and turning TLS on or off take effect at the \
                 next restart"
            );
        }
        if self.config.log.format != config.log.format {
            tracing::warn!("[log] format takes effect at the next restart");
        }
        App::build(config, Some(self))
    }

    fn build(config: Config, previous: Option<&App>) -> Result<App, StartError> {
        let fail = |e: &dyn std::fmt::Display| StartError(e.to_string());
        let mut read_as = HashMap::new();
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(
                match previous.and_then(|p| {
                    p.tls
                        .clone()
                        .filter(|tls| tls.files() == [cert.as_path(), key.as_path()])
                        .map(|tls| (p, tls))
                }) {
                    Some((previous, tls)) => {
                        read_as.extend(previous.read_as_of(&tls.files()));
                        tls
                    }
                    None => {
                        read_as.extend(read_now(&[cert, key]));
                        Arc::new(Certificate::load(cert, key).map_err(|e| fail(&e))?)
                    }
                },
            ),
            _ => None,
        };
        let token = &config.token;
        let key_files = [token.key.as_path(), token.certificate.as_path()];
        let keys = match previous.filter(|p| {
            p.config.token.key == token.key
                && p.config.token.certificate == token.certificate
                && p.config.token.embed == token.embed
        }) {
            Some(previous) => {
                read_as.extend(previous.read_as_of(&key_files));
                let ring = previous.keys.load_full();
                if ring.previous.len() > token.previous_keys {
                    // Fewer previous keys now: the ones cut stop verifying at once.
                    Arc::new(KeyRing::new(
                        ring.current.clone(),
                        ring.previous[..token.previous_keys].to_vec(),
                    ))
                } else {
                    ring
                }
            }
            None => {
                read_as.extend(read_now(&key_files));
                let key = SigningKey::load(&token.key, &token.certificate, token.embed)
                    .map_err(|e| fail(&e))?;
                // Pointing the config at another key is a rotation: the old one still verifies.
                let rotated = previous
                    .map(|p| {
                        let ring = p.keys.load();
                        std::iter::once(ring.current.clone())
                            .chain(ring.previous.iter().cloned())
                            .filter(|k| !k.same_key(&key))
                            .take(token.previous_keys)
                            .collect()
                    })
                    .unwrap_or_default();
                Arc::new(KeyRing::new(Arc::new(key), rotated))
            }
        };
        let users = match &config.identity.htpasswd {
            Some(path) => {
                read_as.extend(read_now(&[path]));
                Htpasswd::load(path).map_err(|e| fail(&e))?
            }
            None => Htpasswd::default(),
        };
        let groups = match &config.identity.groups {
            Some(path) => {
                read_as.extend(read_now(&[path]));
                Groups::load(path).map_err(|e| fail(&e))?
            }
            None => Groups::default(),
        };
        let host = match previous {
            Some(previous) => previous.host.clone(),
            None => {
                let host = Host::new()
                    .map_err(|e| fail(&format!("cannot start the wasm engine: {e:#}")))?;
                match &config.cache.dir {
                    // The token key authenticates the code: whoever can write the cache
                    // alone cannot make code we run.
                    Some(dir) => {
                        let secret = std::fs::read(&config.token.key).map_err(|e| {
                            fail(&format!("[token] key {}: {e}", config.token.key.display()))
                        })?;
                        host.with_store(CompiledStore::new(&dir.join("compiled"), &secret))
                    }
                    None => host,
                }
            }
        };
        read_as.extend(read_now(
            &config.signatures.keys.values().collect::<Vec<_>>(),
        ));
        let signature_keys = Keys::load(&config.signatures.keys).map_err(|e| fail(&e))?;
        let (specs, shadow_specs) = (config.policy_specs(), config.shadow_specs());
        let artifacts = Artifacts::start(
            &config,
            &specs.iter().chain(&shadow_specs).collect::<Vec<_>>(),
            &own_registries(&config, &keys),
            &signature_keys,
        )
        .map_err(|e| fail(&e))?;
        let policies = Policies::load(host.clone(), specs).map_err(|e| fail(&e))?;
        let upstream = match &config.upstream {
            Some(upstream) => Some(Upstream::new(upstream).map_err(|e| fail(&e))?),
            None => None,
        };
        let decisions = match (&config.log.decisions, previous) {
            (Some(path), Some(p)) if p.config.log.decisions.as_ref() == Some(path) => {
                p.decisions.clone()
            }
            (Some(path), _) => Arc::new(DecisionLog::open(path).map_err(|e| {
                fail(&format!(
                    "[log] decisions: cannot open {}: {e}",
                    path.display()
                ))
            })?),
            (None, _) => Arc::new(DecisionLog::disabled()),
        };
        decisions.keep_recent(config.console.enabled);
        let metrics: Arc<Metrics> = previous.map(|p| p.metrics.clone()).unwrap_or_default();
        let shadow_tally: Arc<Tally> = previous.map(|p| p.shadow_tally.clone()).unwrap_or_default();
        let shadow = match shadow_specs {
            specs if specs.is_empty() => None,
            specs => {
                let candidates = Policies::load(host.clone(), specs)
                    .map_err(|e| fail(&format!("[[shadow]]: {e}")))?;
                Some(
                    Shadow::start(
                        candidates,
                        shadow_tally.clone(),
                        metrics.clone(),
                        decisions.clone(),
                    )
                    .map_err(|e| fail(&format!("cannot start the shadow thread: {e}")))?,
                )
            }
        };
        let issuers = config
            .identity
            .oidc
            .iter()
            .map(OidcIssuer::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(&e))?;
        let directory = match &config.identity.ldap {
            Some(ldap) => Some(Directory::new(ldap).map_err(|e| fail(&e))?),
            None => None,
        };
        let public_origin = match &config.server.public_url {
            Some(url) => {
                let uri = crate::config::origin(url).map_err(|e| fail(&e))?;
                let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
                Some((uri.scheme_str().unwrap_or("https").to_string(), host))
            }
            None => None,
        };
        let console = match (&config.console.session_key, config.console.enabled) {
            (Some(path), true) => {
                read_as.extend(read_now(&[path]));
                let keys = Arc::new(ArcSwap::from_pointee(
                    SealKeys::load(path).map_err(|e| fail(&e))?,
                ));
                let https = tls.is_some()
                    || public_origin
                        .as_ref()
                        .is_some_and(|(scheme, _)| scheme == "https");
                let registry = match (&config.console.registry_url, &upstream) {
                    // Gateway mode reads the registry it forwards to.
                    (_, Some(_)) => None,
                    (Some(url), None) => Some(
                        Upstream::new(&crate::config::Upstream::at(
                            url,
                            config.console.registry_ca.clone(),
                        ))
                        .map_err(|e| fail(&format!("[console] registry_url: {e}")))?,
                    ),
                    (None, None) => None,
                };
                let listed_at = config
                    .upstream
                    .as_ref()
                    .map(|u| u.url.as_str())
                    .or(config.console.registry_url.as_deref())
                    .unwrap_or_default();
                Some(Arc::new(Console::new(
                    &config.console,
                    keys,
                    https,
                    registry,
                    listed_at,
                    previous.and_then(|p| p.console.as_deref()),
                )))
            }
            _ => None,
        };
        let wanted = &config.console;
        let store = if wanted.token_max_days == 0 {
            None
        } else if let Some(file) = &wanted.revoked_tokens {
            read_as.extend(read_now(&[file]));
            Some(RevocationStore::File(file.clone()))
        } else {
            wanted
                .revoked_tokens_repository
                .clone()
                .map(RevocationStore::Registry)
        };
        let personal = match (&console, store) {
            (Some(console), Some(store)) => Some(
                PersonalTokens::new(
                    console.keys(),
                    store,
                    config.console.token_max_days,
                    previous.and_then(|p| p.identity.personal()),
                )
                .map_err(|e| fail(&e))?,
            ),
            _ => None,
        };
        let sso = match (&console, &config.console.sso) {
            (Some(_), Some(sso)) => Some(Sso::new(sso).map_err(|e| fail(&e))?),
            _ => None,
        };
        let identity = Identity::new(
            Sources {
                users,
                groups,
                issuers,
                directory,
                personal,
                sso,
            },
            previous.map(|p| p.identity.as_ref()),
        )
        .map_err(|e| fail(&format!("no random source: {e}")))?;
        let issuer = Issuer::new(
            &token.issuer,
            &token.service,
            Duration::from_secs(token.ttl_seconds),
            Duration::from_secs(token.refresh_ttl_seconds),
        );
        Ok(App {
            issuer,
            keys: ArcSwap::new(keys),
            identity: Arc::new(identity),
            lanes: previous.map(|p| p.lanes.clone()).unwrap_or_default(),
            policies: Arc::new(policies),
            host,
            upstream,
            public_origin,
            tls,
            metrics,
            refusals: previous.map(|p| p.refusals.clone()).unwrap_or_default(),
            config_error: previous.map(|p| p.config_error.clone()).unwrap_or_default(),
            decisions,
            signature_keys: ArcSwap::from_pointee(signature_keys),
            artifacts,
            shadow,
            shadow_tally,
            console,
            reload_lock: Mutex::new(()),
            read_as: Mutex::new(read_as),
            config,
        })
    }

    /// The fingerprints `files` had just before this App last read them.
    fn read_as_of<P: AsRef<Path>>(&self, files: &[P]) -> Vec<(PathBuf, Fingerprint)> {
        let read_as = self.read_as.lock().unwrap_or_else(PoisonError::into_inner);
        files
            .iter()
            .map(|file| {
                let file = file.as_ref().to_path_buf();
                let fingerprint = read_as.get(&file).copied().flatten();
                (file, fingerprint)
            })
            .collect()
    }

    /// Re-reads the htpasswd, groups, key and certificate; what fails to load keeps its last
    /// good version and is logged.
    pub fn reload_files(&self) {
        self.reload_sets(&FileSet::ALL);
    }

    /// Re-reads these sets, every one whichever fails, and counts one identity reload.
    fn reload_sets(&self, sets: &[FileSet]) {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ok = sets
            .iter()
            .map(|set| self.reload_set(*set))
            .fold(true, |all, this| all & this);
        self.metrics.reload("identity", ok);
    }

    /// The files of one set this config names.
    fn files_of(&self, set: FileSet) -> Vec<&Path> {
        let identity = &self.config.identity;
        match set {
            FileSet::Users => identity.htpasswd.iter().map(|p| p.as_path()).collect(),
            FileSet::Groups => identity.groups.iter().map(|p| p.as_path()).collect(),
            FileSet::Key => vec![&self.config.token.key, &self.config.token.certificate],
            FileSet::Tls => self.tls.iter().flat_map(|tls| tls.files()).collect(),
            FileSet::Signatures => self
                .config
                .signatures
                .keys
                .values()
                .map(|p| p.as_path())
                .collect(),
            FileSet::Console => match &self.console {
                Some(_) => {
                    let console = &self.config.console;
                    let revoked = console
                        .revoked_tokens
                        .iter()
                        .filter(|_| self.identity.personal().is_some());
                    console
                        .session_key
                        .iter()
                        .chain(revoked)
                        .map(|p| p.as_path())
                        .collect()
                }
                None => Vec::new(),
            },
        }
    }

    /// Loads one set anew; false (and logged) when it fails, the last good version serving on.
    fn reload_set(&self, set: FileSet) -> bool {
        let before = read_now(&self.files_of(set));
        let loaded = self.load_set(set);
        if loaded {
            self.read_as
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(before);
        }
        loaded
    }

    fn load_set(&self, set: FileSet) -> bool {
        let identity = &self.config.identity;
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            tracing::warn!(%error, "{what} reload failed; keeping the last good version");
            false
        };
        match set {
            FileSet::Users => match identity.htpasswd.as_ref().map(|p| Htpasswd::load(p)) {
                None => true,
                Some(Ok(users)) => {
                    self.identity.set_users(users);
                    true
                }
                Some(Err(e)) => failed("htpasswd", &e),
            },
            FileSet::Groups => match identity.groups.as_ref().map(|p| Groups::load(p)) {
                None => true,
                Some(Ok(groups)) => {
                    self.identity.set_groups(groups);
                    true
                }
                Some(Err(e)) => failed("groups", &e),
            },
            FileSet::Key => {
                let token = &self.config.token;
                match SigningKey::load(&token.key, &token.certificate, token.embed) {
                    Ok(key) => {
                        let ring = self.keys.load_full();
                        if !key.same_key(&ring.current) {
                            tracing::info!(kid = %key.kid, "signing key rotated");
                            let previous = std::iter::once(ring.current.clone())
                                .chain(ring.previous.iter().cloned())
                                .take(self.config.token.previous_keys)
                                .collect();
                            self.keys
                                .store(Arc::new(KeyRing::new(Arc::new(key), previous)));
                        }
                        true
                    }
                    Err(e) => failed("signing key", &e),
                }
            }
            FileSet::Console => {
                let console = &self.config.console;
                let keys = match (&self.console, &console.session_key) {
                    (Some(ui), Some(path)) => match SealKeys::load(path) {
                        Ok(keys) => {
                            ui.set_keys(keys);
                            true
                        }
                        Err(e) => failed("console session key", &e),
                    },
                    _ => true,
                };
                let revoked = match self
                    .identity
                    .personal()
                    .zip(console.revoked_tokens.as_ref())
                {
                    Some((personal, path)) => match Revoked::load(path) {
                        Ok(revoked) => {
                            personal.set_revoked(revoked);
                            true
                        }
                        Err(e) => failed("revoked tokens", &e),
                    },
                    _ => true,
                };
                keys && revoked
            }
            FileSet::Signatures => match Keys::load(&self.config.signatures.keys) {
                Ok(keys) => {
                    self.signature_keys.store(Arc::new(keys));
                    true
                }
                Err(e) => failed("signature keys", &e),
            },
            FileSet::Tls => match self.tls.as_ref().map(|tls| tls.reload()) {
                None | Some(Ok(())) => true,
                Some(Err(e)) => failed("TLS certificate", &e),
            },
        }
    }

    /// Re-reads every file the config names (SIGHUP: for file systems whose changes the
    /// watchers do not see).
    pub fn reload_all(&self) {
        self.reload_files();
        self.artifacts.wake();
        self.reload_policies();
    }

    /// The public keys of `[signatures]` as last loaded.
    fn signature_keys(&self) -> Arc<Keys> {
        self.signature_keys.load_full()
    }

    /// Who users are: the identity layer of this config.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Each policy's serving version and last reload error.
    pub fn policy_status(&self) -> Vec<crate::policy::PolicyStatus> {
        self.policies.status()
    }

    /// Watches policies and every other file the config names.
    pub fn watch(self: &Arc<Self>) -> Result<Vec<FileWatcher>, notify::Error> {
        let mut watchers = Vec::new();
        // A watcher per set: a key rotation or a groups edit must not read the htpasswd again.
        for set in FileSet::ALL {
            let files = self.files_of(set);
            if files.is_empty() {
                continue;
            }
            let app = Arc::downgrade(self);
            let read_as = self
                .read_as_of(&files)
                .into_iter()
                .map(|(_, f)| f)
                .collect();
            watchers.push(crate::watch::watch(
                set.name(),
                &files,
                read_as,
                move || {
                    if let Some(app) = app.upgrade() {
                        app.reload_sets(&[set]);
                    }
                },
            )?);
        }
        let sets =
            std::iter::once(&self.policies).chain(self.shadow.as_ref().map(Shadow::policies));
        for set in sets {
            let app = Arc::downgrade(self);
            watchers.push(set.watch(move |failures| {
                if let Some(app) = app.upgrade() {
                    app.metrics.reload("policies", failures.is_empty());
                }
            })?);
        }
        let (keys_of, reloaded) = (Arc::downgrade(self), Arc::downgrade(self));
        self.artifacts
            .follow(
                move || keys_of.upgrade().map(|app| app.signature_keys()),
                move || {
                    if let Some(app) = reloaded.upgrade() {
                        app.reload_policies();
                    }
                },
            )
            .map_err(notify::Error::io)?;
        Ok(watchers)
    }

    /// Reloads the serving and shadow sets, counting the outcome.
    fn reload_policies(&self) {
        let mut failures = self.policies.reload();
        if let Some(shadow) = &self.shadow {
            failures.extend(shadow.policies().reload());
        }
        self.metrics.reload("policies", failures.is_empty());
    }
}

/// The registries this config reaches anyway, where policies are pulled with what already
/// lets Portcullis in: the registry it forwards to (which trusts it), and the one the console
/// reads in token-server mode (which trusts its key: Portcullis signs a `pull` token).
fn own_registries(config: &Config, keys: &Arc<KeyRing>) -> Vec<OwnRegistry> {
    let mut own: Vec<OwnRegistry> = OwnRegistry::upstream(config).into_iter().collect();
    if let Some(url) = &config.console.registry_url {
        let token = &config.token;
        let issuer = Issuer::new(
            &token.issuer,
            &token.service,
            Duration::from_secs(token.ttl_seconds),
            Duration::from_secs(token.refresh_ttl_seconds),
        );
        let key = keys.current.clone();
        let minter: crate::oci::Minter = Arc::new(move |repository: &str, actions: &[&str]| {
            let access = crate::token::Access {
                resource_type: "repository".into(),
                class: None,
                name: repository.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
            };
            issuer
                .access_token(&key, "portcullis-policies", vec![access], None, None)
                .map(|issued| issued.token)
                .map_err(|e| format!("cannot sign a token: {e}"))
        });
        own.extend(OwnRegistry::trusting(
            url,
            config.console.registry_ca.clone(),
            minter,
        ));
    }
    own
}

/// The fingerprints of `files` now, before they are read.
fn read_now<P: AsRef<Path>>(files: &[P]) -> Vec<(PathBuf, Fingerprint)> {
    files
        .iter()
        .map(|f| f.as_ref().to_path_buf())
        .zip(fingerprints(files))
        .collect()
}
