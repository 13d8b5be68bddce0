//! The HTTP side: the application state built from the config, hot reload of the files it
//! reads, the accept loop, routing, and the one place errors become registry-style responses.

mod access;
mod connections;
pub mod credentials;
mod gateway;
mod live;
mod token_endpoint;

pub use live::Live;

use crate::config::Config;
use crate::decision_log::DecisionLog;
use crate::identity::{Directory, Groups, Htpasswd, Identity, OidcIssuer};
use crate::metrics::Metrics;
use crate::policy::{Host, Policies};
use crate::proxy::{Body, RouteError, Upstream, UpstreamError};
use crate::tls::Certificate;
use crate::token::{Issuer, SigningKey, Verified};
use crate::watch::{FileWatcher, Fingerprint, fingerprints};
use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

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
    /// Why the last edit of the config file was refused, if it was.
    config_error: Arc<Mutex<Option<String>>>,
    decisions: Arc<DecisionLog>,
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
}

impl FileSet {
    const ALL: [FileSet; 4] = [FileSet::Users, FileSet::Groups, FileSet::Key, FileSet::Tls];

    /// The name of its watcher thread.
    fn name(self) -> &'static str {
        match self {
            FileSet::Users => "htpasswd",
            FileSet::Groups => "groups",
            FileSet::Key => "key",
            FileSet::Tls => "tls",
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
                Host::new().map_err(|e| fail(&format!("cannot start the wasm engine: {e:#}")))?
            }
        };
        let policies = Policies::load(host.clone(), config.policy_specs()).map_err(|e| fail(&e))?;
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
        let identity = Identity::new(
            users,
            groups,
            issuers,
            directory,
            previous.map(|p| p.identity.as_ref()),
        )
        .map_err(|e| fail(&format!("no random source: {e}")))?;
        let public_origin = match &config.server.public_url {
            Some(url) => {
                let uri = crate::config::origin(url).map_err(|e| fail(&e))?;
                let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
                Some((uri.scheme_str().unwrap_or("https").to_string(), host))
            }
            None => None,
        };
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
            metrics: previous.map(|p| p.metrics.clone()).unwrap_or_default(),
            config_error: previous.map(|p| p.config_error.clone()).unwrap_or_default(),
            decisions,
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
        let failures = self.policies.reload();
        self.metrics.reload("policies", failures.is_empty());
    }

    /// Asks every identity source that lives elsewhere (each OIDC issuer's keys), for
    /// `portcullis check`: each source's name and what it said.
    pub async fn check_sources(&self) -> Vec<(String, Result<String, String>)> {
        let mut said = Vec::new();
        for issuer in self.identity.issuers() {
            let result = issuer
                .check()
                .await
                .map(|keys| format!("{keys} signing key(s)"));
            said.push((format!("oidc issuer {}", issuer.issuer()), result));
        }
        if let Some(directory) = self.identity.directory() {
            said.push((format!("ldap {}", directory.url()), directory.check().await));
        }
        said
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
        let app = Arc::downgrade(self);
        watchers.push(self.policies.watch(move |failures| {
            if let Some(app) = app.upgrade() {
                app.metrics.reload("policies", failures.is_empty());
            }
        })?);
        Ok(watchers)
    }

    /// Routes one request that came in on `listener`.
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
        listener: Listener,
    ) -> Response<Body> {
        let started = Instant::now();
        let path = request.uri().path();
        let route = match path {
            _ if path == "/v2" || path.starts_with("/v2/") => "registry",
            "/token" | "/auth" => "token",
            "/.well-known/jwks.json" => "jwks",
            "/healthz" => "healthz",
            "/readyz" => "readyz",
            "/metrics" => "metrics",
            "/status" => "status",
            _ => "unknown",
        };
        use Listener::{Admin, Clients};
        let response = match (listener, request.method(), route) {
            (Clients, _, "registry") if self.upstream.is_some() => {
                let result = gateway::handle(self.clone(), request, peer).await;
                if let Err(ApiError::Upstream(error)) = &result {
                    self.metrics.upstream_error(error.kind());
                }
                result
            }
            (Clients, &Method::GET | &Method::POST, "token") => {
                token_endpoint::handle(self.clone(), request, peer).await
            }
            (Clients, &Method::GET, "jwks") => Ok(self.jwks()),
            (_, &Method::GET, "healthz") => Ok(text(StatusCode::OK, "ok\n")),
            (_, &Method::GET, "readyz") => Ok(self.readiness().await),
            (Admin, &Method::GET, "metrics") => Ok(self.metrics_page()),
            (Admin, &Method::GET, "status") => Ok(json(StatusCode::OK, &self.status())),
            // What the status page and metrics say (the upstream, modules, key ids, users,
            // reload errors) is for operators: never on the listener clients reach.
            (Clients, _, "metrics" | "status") | (Admin, _, "registry" | "token" | "jwks") => {
                Err(ApiError::NotFound)
            }
            (_, _, "registry" | "unknown") => Err(ApiError::NotFound),
            _ => Err(ApiError::MethodNotAllowed),
        };
        let mut response = response.unwrap_or_else(ApiError::into_response);
        response
            .headers_mut()
            .entry(API_VERSION)
            .or_insert(HeaderValue::from_static("registry/2.0"));
        self.metrics
            .request(route, response.status().as_u16(), started.elapsed());
        response
    }

    /// Ready to serve: everything loaded (or the process would not run), and in gateway mode
    /// the registry answering. The directory's last failure is shown, not waited for.
    async fn readiness(&self) -> Response<Body> {
        let upstream = match &self.upstream {
            None => None,
            Some(upstream) => Some(upstream.probe().await),
        };
        let ready = upstream.as_ref().is_none_or(Result::is_ok);
        let body = serde_json::json!({
            "ready": ready,
            "policies": self.policies.current().policies().len(),
            "upstream": upstream.map(|probe| match probe {
                Ok(()) => "reachable".to_string(),
                Err(e) => e.to_string(),
            }),
            // Reported, not probed, and never unready for it: htpasswd users and remembered
            // logins are served while the directory is away.
            "ldap": self.identity.directory().map(|d| {
                d.last_error().unwrap_or_else(|| "no failure seen".into())
            }),
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, &body)
    }

    /// What is serving: policies with their digests and reload errors, keys, users.
    fn status(&self) -> serde_json::Value {
        let ring = self.keys.load();
        let policies: Vec<serde_json::Value> = self
            .policies
            .status()
            .into_iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "module": p.module.display().to_string(),
                    "digest": p.digest,
                    "settings_digest": p.settings_digest,
                    "loaded_at": humantime::format_rfc3339_seconds(p.loaded_at).to_string(),
                    "world": p.world,
                    "last_reload_error": p.last_error,
                })
            })
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": if self.upstream.is_some() { "gateway" } else { "token-server" },
            "service": self.issuer.service,
            "issuer": self.issuer.issuer,
            "upstream": self.upstream.as_ref().map(Upstream::origin),
            "policies": policies,
            "keys": {
                "current": ring.current.kid,
                "previous": ring.previous.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            },
            "users": self.identity.user_count(),
            "oidc": self.identity.issuers().iter().map(|issuer| {
                let (keys, error) = issuer.status().unwrap_or((None, Some("fetching".into())));
                serde_json::json!({"issuer": issuer.issuer(), "keys": keys, "last_error": error})
            }).collect::<Vec<_>>(),
            "ldap": self.identity.directory().map(|d| serde_json::json!({
                "url": d.url(), "last_error": d.last_error(),
            })),
            "config_reload_error": *self.config_error.lock().unwrap_or_else(PoisonError::into_inner),
        })
    }

    fn metrics_page(&self) -> Response<Body> {
        let mut response = Response::new(full(self.metrics.encode()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        response
    }

    fn jwks(&self) -> Response<Body> {
        let ring = self.keys.load();
        let keys: Vec<&serde_json::Value> = ring.all().into_iter().map(SigningKey::jwk).collect();
        json(StatusCode::OK, &serde_json::json!({ "keys": keys }))
    }
}

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// `[server] listen`: the registry API, tokens, JWKS and the probes.
    Clients,
    /// `[server] admin_listen`: the probes, `/metrics` and `/status`, for operators.
    Admin,
}

/// Serves `listener` (and `admin`, `[server] admin_listen`, in plain HTTP) until `shutdown`
/// resolves, then stops accepting and lets the connections in flight finish their requests
/// for at most `[server] drain_seconds` (keep-alive ends after the current response).
/// With TLS configured, client connections are TLS (HTTP/2 or HTTP/1.1, as the client
/// offers). One failed connection never stops the loop. `[server] header_timeout_seconds`
/// and `max_connections` are read at each accept, so edits apply to the next connection.
pub async fn serve(
    live: Arc<Live>,
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    // The certificate is looked up at each handshake, in whatever App serves then.
    let tls = match &live.current().tls {
        Some(_) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            crate::tls::server_config(live.clone()).map_err(StartError)?,
        ))),
        None => None,
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = connections::Connections::default();
    tokio::pin!(shutdown);
    loop {
        let (accepted, on) = tokio::select! {
            accepted = listener.accept() => (accepted, Listener::Clients),
            accepted = async {
                match &admin {
                    Some(admin) => admin.accept().await,
                    None => std::future::pending().await,
                }
            } => (accepted, Listener::Admin),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends pass; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let tls = tls.clone().filter(|_| on == Listener::Clients);
        let (max, header_timeout, metrics) = {
            let app = live.current();
            let server = &app.config.server;
            (
                server.max_connections,
                Duration::from_secs(server.header_timeout_seconds),
                app.metrics.clone(),
            )
        };
        let Some(slot) = connections.admit(max, &metrics) else {
            connections.refuse(stream, tls.is_some(), max, &metrics);
            continue;
        };
        // Responses are written as they stream from the registry: no waiting for ACKs.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
        }
        let live = live.clone();
        let service = hyper::service::service_fn(move |request| {
            // Each request takes the App serving when it arrives, and finishes on it.
            let app = live.current();
            async move { Ok::<_, std::convert::Infallible>(app.handle(request, peer, on).await) }
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let served = match tls {
                None => {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    watcher
                        .watch(connection)
                        .await
                        .map_err(|e| Box::new(e) as crate::proxy::BoxError)
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let mut builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout);
                    builder.http2().timer(hyper_util::rt::TokioTimer::new());
                    let connection =
                        builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop((listener, admin));
    let drain = Duration::from_secs(live.current().config.server.drain_seconds);
    tracing::info!(seconds = drain.as_secs(), "draining the requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => {
            tracing::warn!("requests still in flight after the drain time; stopping anyway");
        }
    }
    Ok(())
}

/// Everything that can go wrong in a request, mapped to a status and a registry-style body
/// in [`ApiError::into_response`] only.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Malformed input; the code is a registry error code.
    #[error("{message}")]
    BadRequest {
        /// Registry error code, e.g. `NAME_INVALID`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such route.
    #[error("not found")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A registry request without usable credentials or access: 401 with a Bearer
    /// challenge (`WWW-Authenticate`), so clients know where to get a token.
    #[error("{message}")]
    Challenge {
        /// The `WWW-Authenticate` value.
        challenge: String,
        /// What is missing.
        message: String,
    },
    /// Authenticated, not allowed (Basic credentials: no token to upgrade).
    #[error("{0}")]
    Denied(String),
    /// A request body (a token request's form) that did not arrive in time.
    #[error("the request body did not arrive within {} s", .0.as_secs())]
    SlowBody(Duration),
    /// Too many failed logins: wait this long.
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    TooManyRequests(Duration),
    /// Work of this kind is queued past its bound (catalog listings): 503, retry shortly.
    #[error("{0}; retry shortly")]
    Busy(&'static str),
    /// The registry behind the gateway failed; details are logged, not sent.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Our fault; details are logged, not sent.
    #[error("{0}")]
    Internal(String),
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> ApiError {
        match error {
            RouteError::NotFound => ApiError::NotFound,
            RouteError::MethodNotAllowed(_) => ApiError::MethodNotAllowed,
            RouteError::Invalid(code, message) => ApiError::BadRequest { code, message },
        }
    }
}

impl ApiError {
    fn into_response(self) -> Response<Body> {
        let (status, code) = match &self {
            ApiError::Unauthorized(_) | ApiError::Challenge { .. } => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
            }
            ApiError::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            ApiError::Upstream(UpstreamError::Unavailable { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            ApiError::Upstream(UpstreamError::Timeout { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE")
            }
            ApiError::Upstream(UpstreamError::Failed { .. }) => {
                (StatusCode::BAD_GATEWAY, "UNKNOWN")
            }
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, *code),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            ApiError::SlowBody(_) => (StatusCode::REQUEST_TIMEOUT, "UNKNOWN"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        };
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_string()
            }
            ApiError::Upstream(error) => {
                tracing::warn!(%error, "upstream registry failed");
                "the registry behind the gateway is unavailable; try again".to_string()
            }
            other => other.to_string(),
        };
        let body =
            serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
        let mut response = json(status, &body);
        let retry_after = match &self {
            ApiError::TooManyRequests(wait) => Some(wait.as_secs().max(1)),
            ApiError::Busy(_) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        let challenge = match &self {
            ApiError::Challenge { challenge, .. } => HeaderValue::from_str(challenge).ok(),
            ApiError::Unauthorized(_) => {
                Some(HeaderValue::from_static("Basic realm=\"portcullis\""))
            }
            _ => None,
        };
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(hyper::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The fingerprints of `files` now, before they are read.
fn read_now<P: AsRef<Path>>(files: &[P]) -> Vec<(PathBuf, Fingerprint)> {
    files
        .iter()
        .map(|f| f.as_ref().to_path_buf())
        .zip(fingerprints(files))
        .collect()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}
