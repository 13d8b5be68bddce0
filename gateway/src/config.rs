//! The TOML config (`portcullis.toml`): plain data, strict (an unknown key is an error naming
//! the key and its line), paths resolved against the config file's directory.

use crate::policy::pulled::Pulled;
use crate::policy::{Limits, ModuleSource, PolicySpec, SettingsSource};
use crate::token::Embed;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest `memory_mb` a policy may ask for.
const MAX_POLICY_MEMORY_MB: u64 = (crate::policy::MAX_MEMORY_BYTES >> 20) as u64;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener.
    #[serde(default)]
    pub server: Server,
    /// Token signing.
    pub token: Token,
    /// Who the users are.
    #[serde(default)]
    pub identity: Identity,
    /// Present in gateway mode: the registry requests are forwarded to.
    pub upstream: Option<Upstream>,
    /// The policies; every one must grant an action for it to be granted.
    #[serde(rename = "policy", default)]
    pub policies: Vec<Policy>,
    /// Shadow policies: a candidate set decided beside the serving one and never enforced;
    /// where it would decide otherwise is counted, logged and shown.
    #[serde(rename = "shadow", default)]
    pub shadows: Vec<Policy>,
    /// Logs and the decision log.
    #[serde(default)]
    pub log: Log,
    /// The web console under `/ui/`.
    #[serde(default)]
    pub console: Console,
    /// Public keys cosign signatures are verified with (the `signatures` fact, and policies
    /// pulled from a registry).
    #[serde(default)]
    pub signatures: SignatureKeys,
    /// Where verified policy modules are kept, for a start while the registry is away.
    #[serde(default)]
    pub cache: Cache,
    /// Credentials for the registries policies are pulled from, by host (and port).
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, RegistryLogin>,
}

/// `[cache]`: what Portcullis keeps on disk between starts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// The directory: the last verified module of each policy pulled from a registry.
    pub dir: Option<PathBuf>,
}

/// `[registries."host:port"]`: how Portcullis logs in to a registry it pulls policies from
/// (its own registry needs none: Portcullis signs its own token there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryLogin {
    /// The user name.
    pub username: String,
    /// A file holding the password (its first line).
    pub password_file: PathBuf,
    /// PEM certificates trusted for this registry besides the system's roots.
    pub ca: Option<PathBuf>,
}

/// `[signatures]`: the public keys image signatures are verified with, by name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureKeys {
    /// Name -> PEM public key file (`cosign.pub`), hot-reloaded.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, PathBuf>,
}

/// `[console]`: the web console, served under `/ui/` on the listener clients use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Groups whose members may explain decisions for any account, and see the status and
    /// the recent decisions.
    #[serde(default)]
    pub admins: Vec<String>,
    /// The keys sessions and personal tokens are sealed with, shared by every replica
    /// (`portcullis keygen --session`).
    pub session_key: Option<PathBuf>,
    /// Token-server mode: where the console reads the registry (gateway mode reads it at
    /// `[upstream] url`).
    pub registry_url: Option<String>,
    /// PEM certificates trusted for an `https` `registry_url` besides the system's roots.
    pub registry_ca: Option<PathBuf>,
    /// The host (and port) users pull from, for the `docker pull` lines the console shows;
    /// default: `public_url`'s (gateway mode), else `registry_url`'s.
    pub pull_host: Option<String>,
    /// How long a console session lasts.
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// The longest a personal token may live; 0 turns personal tokens off.
    #[serde(default = "default_token_max_days")]
    pub token_max_days: u64,
    /// Revoked personal tokens, one id per line: watched, and appended to by the console.
    pub revoked_tokens: Option<PathBuf>,
    /// Instead of `revoked_tokens`: a repository of the registry that keeps the revoked
    /// ids, one tag each (for replicas that share no file system). Nobody reaches it
    /// through Portcullis.
    pub revoked_tokens_repository: Option<String>,
    /// `[console.sso]`: "Sign in with SSO".
    pub sso: Option<Sso>,
}

/// `[console.sso]`: people sign in to the console at an OpenID provider (authorization code
/// with PKCE), when it holds no registry password for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sso {
    /// The provider's issuer; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Portcullis's client id at the provider (also the ID token's audience).
    pub client_id: String,
    /// A file holding the client secret (one line); none for a public client (PKCE alone).
    pub client_secret_file: Option<PathBuf>,
    /// The account name: a template over the ID token's claims.
    #[serde(default = "default_sso_username")]
    pub username: String,
    /// Group names, each a template over claims; `{groups}` of a list claim gives one group
    /// per element.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Claims that must match these globs to sign in.
    #[serde(default)]
    pub require: std::collections::BTreeMap<String, String>,
    /// The scopes asked for; `offline_access` lets personal tokens ask the provider later
    /// whether the person is still there.
    #[serde(default = "default_sso_scopes")]
    pub scopes: Vec<String>,
    /// `prompt` sent to the provider (some grant `offline_access` only with `consent`).
    pub prompt: Option<String>,
    /// Allow `http://` for the provider: only for one on loopback (tests).
    #[serde(default)]
    pub insecure_http: bool,
    /// The provider signs in the directory's own people (it federates `[identity.ldap]`):
    /// the account it names is looked up there, gets the directory's groups and
    /// attributes, and is refused when the entry is gone. Off: a name the directory knows
    /// is refused.
    #[serde(default)]
    pub directory_users: bool,
    /// PEM CA(s) trusted for the provider besides the system's.
    pub ca: Option<PathBuf>,
    /// Clock skew allowed on the ID token's times.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// How often a personal token of an SSO person asks the provider whether they are still
    /// there (a refresh at its token endpoint).
    #[serde(default = "default_recheck_seconds")]
    pub recheck_seconds: u64,
}

fn default_sso_username() -> String {
    "{preferred_username}".into()
}

fn default_sso_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(String::from)
        .to_vec()
}

fn default_recheck_seconds() -> u64 {
    300
}

impl Sso {
    /// The provider as an issuer whose ID tokens log people in: its audience is our client id,
    /// and a token must be fresh (it was just issued).
    pub fn issuer(&self) -> Oidc {
        Oidc {
            issuer: self.issuer.clone(),
            audience: self.client_id.clone(),
            jwks_url: None,
            username: self.username.clone(),
            groups: self.groups.clone(),
            require: self.require.clone(),
            insecure_http: self.insecure_http,
            ca: self.ca.clone(),
            leeway_seconds: self.leeway_seconds,
            max_age_seconds: 600,
        }
    }
}

impl Default for Console {
    fn default() -> Console {
        Console {
            enabled: false,
            admins: Vec::new(),
            session_key: None,
            registry_url: None,
            registry_ca: None,
            pull_host: None,
            session_minutes: default_session_minutes(),
            token_max_days: default_token_max_days(),
            revoked_tokens: None,
            revoked_tokens_repository: None,
            sso: None,
        }
    }
}

fn default_session_minutes() -> u64 {
    60
}

fn default_token_max_days() -> u64 {
    90
}

/// Console sessions last between these many minutes.
const SESSION_MINUTES: std::ops::RangeInclusive<u64> = 5..=24 * 60;
/// Personal tokens live ten years at most.
const MAX_TOKEN_DAYS: u64 = 3660;

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// How the process log (standard error) is written.
    #[serde(default)]
    pub format: LogFormat,
    /// The decision log: a file appended to, or `stdout`; none when absent.
    pub decisions: Option<PathBuf>,
}

/// `[log] format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where operators reach `/metrics` and `/status` (plain HTTP, no authentication: bind
    /// it where only they can connect). Without it, those two are not served.
    pub admin_listen: Option<SocketAddr>,
    /// How clients reach the gateway: the token realm and upload `Location`s are built on it.
    pub public_url: Option<String>,
    /// PEM certificate chain for TLS on the listener (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the listener (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// Peers allowed to set `X-Forwarded-For`.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[serde(default = "default_drain_seconds")]
    pub drain_seconds: u64,
    /// A client must send a request head (and finish a TLS handshake, and send a token
    /// request's form) within this time; a kept-alive connection may idle as long.
    #[serde(default = "default_header_timeout_seconds")]
    pub header_timeout_seconds: u64,
    /// Connections open at once; more are refused with a 503 instead of using more memory.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Origins of browser-based registry UIs (`https://ui.example.com`) allowed to call the
    /// token endpoint, and in gateway mode the registry API, with credentials (CORS).
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

fn default_drain_seconds() -> u64 {
    30
}

fn default_header_timeout_seconds() -> u64 {
    30
}

fn default_max_connections() -> usize {
    4096
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: default_listen(),
            admin_listen: None,
            public_url: None,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
            drain_seconds: default_drain_seconds(),
            header_timeout_seconds: default_header_timeout_seconds(),
            max_connections: default_max_connections(),
            cors_origins: Vec::new(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5001))
}

/// `[token]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The registry's `auth.token.issuer`.
    pub issuer: String,
    /// The registry's `auth.token.service`; also the tokens' audience.
    pub service: String,
    /// PEM private key: EC P-256 (ES256) or RSA (RS256).
    pub key: PathBuf,
    /// PEM certificate of the key: the registry's `auth.token.rootcertbundle`.
    pub certificate: PathBuf,
    /// Lifetime of access tokens.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// Lifetime of refresh tokens (`docker login`); 0 disables them.
    #[serde(default = "default_refresh_ttl")]
    pub refresh_ttl_seconds: u64,
    /// Keys rotated out that still verify refresh tokens (and gateway-mode Bearer tokens);
    /// 0 makes a rotation cut every token of the old key at once (a leaked key).
    #[serde(default = "default_previous_keys")]
    pub previous_keys: usize,
    /// How tokens name their key: `x5c` (registry 2.x; 3.x with `rootcertbundle`) or `kid`
    /// (3.x with `jwks`).
    #[serde(default)]
    pub embed: Embed,
}

fn default_ttl() -> u64 {
    300
}

fn default_refresh_ttl() -> u64 {
    30 * 24 * 3600
}

fn default_previous_keys() -> usize {
    4
}

/// Access tokens live at most a day: they cannot be revoked, only outlived.
const MAX_TTL_SECONDS: u64 = 24 * 3600;
/// Refresh tokens live at most a year.
const MAX_REFRESH_TTL_SECONDS: u64 = 366 * 24 * 3600;
/// Rotated-out keys kept at most.
const MAX_PREVIOUS_KEYS: usize = 16;

/// `[identity]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// bcrypt entries, as `htpasswd -B` writes them.
    pub htpasswd: Option<PathBuf>,
    /// Apache-style groups: `group: user user`.
    pub groups: Option<PathBuf>,
    /// Let unauthenticated requests reach the policies as account "".
    #[serde(default)]
    pub anonymous: bool,
    /// `[[identity.oidc]]`: issuers whose JWTs log workloads in (CI jobs, pods).
    #[serde(default)]
    pub oidc: Vec<Oidc>,
    /// `[identity.ldap]`: a directory (LDAP or Active Directory) asked for users the
    /// htpasswd does not list.
    pub ldap: Option<Ldap>,
}

/// `[identity.ldap]`: a service account finds the user by a filter, then Portcullis binds as
/// the user's entry with the password given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ldap {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls = true`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM CA(s) trusted for the directory besides the system's.
    pub ca: Option<PathBuf>,
    /// The service account that searches.
    pub bind_dn: String,
    /// A file holding its password (one line; a trailing newline is ignored).
    pub bind_password_file: PathBuf,
    /// Where users are searched.
    pub user_base: String,
    /// The search for one user; `{username}` is replaced, escaped (RFC 4515).
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// The attribute whose value is the account name (canonical case); default: the name
    /// typed.
    pub username_attribute: Option<String>,
    /// The user attribute listing their groups' DNs (`memberOf` in Active Directory and with
    /// OpenLDAP's memberof overlay); each group's name is its DN's first value. `""` for none.
    #[serde(default = "default_member_of")]
    pub member_of_attribute: String,
    /// Where groups are searched, when they are (else only `member_of_attribute` counts).
    pub group_base: Option<String>,
    /// The search for a member's groups; `{dn}` and `{username}` are replaced, escaped.
    /// Groups of groups are followed too (a bounded walk), so nested groups count; Active
    /// Directory resolves them itself with `(member:1.2.840.113556.1.4.1941:={dn})`.
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// The attribute of a group holding its name.
    #[serde(default = "default_group_name_attribute")]
    pub group_name_attribute: String,
    /// User attributes handed to the policies as claims (`mail`, `department`, ...).
    #[serde(default)]
    pub attributes: Vec<String>,
    /// How long a verified login (with its groups and attributes) is remembered.
    #[serde(default = "default_cache_seconds")]
    pub cache_seconds: u64,
    /// How long the directory may take to connect and to answer each operation.
    #[serde(default = "default_ldap_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Allow `ldap://` without StartTLS: passwords would cross the network in clear. Only
    /// for a directory on loopback.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

fn default_user_filter() -> String {
    "(uid={username})".into()
}

fn default_member_of() -> String {
    "memberOf".into()
}

fn default_group_filter() -> String {
    "(member={dn})".into()
}

fn default_group_name_attribute() -> String {
    "cn".into()
}

fn default_cache_seconds() -> u64 {
    300
}

fn default_ldap_timeout_seconds() -> u64 {
    5
}

/// One `[[identity.oidc]]`: an issuer of workload identity tokens (GitHub Actions, GitLab
/// CI, Kubernetes service accounts). A JWT it signed is a password: the login's account and
/// groups come from its claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oidc {
    /// The `iss` its tokens carry, exactly; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The `aud` a token must hold (one of, when it holds several).
    pub audience: String,
    /// Where its keys are, when not from discovery.
    pub jwks_url: Option<String>,
    /// The account name: a template over claims, `{claim}` replaced by its value.
    pub username: String,
    /// Group names, each a template over claims.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Claims that must match these globs (`*` any run, `?` one character) to log in.
    #[serde(default)]
    pub require: std::collections::BTreeMap<String, String>,
    /// Allow `http://` for the issuer and its keys: only for an issuer on loopback (tests).
    #[serde(default)]
    pub insecure_http: bool,
    /// PEM CA(s) trusted for the issuer besides the system's.
    pub ca: Option<PathBuf>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// A token issued longer ago than this is refused, whatever its `exp`.
    #[serde(default = "default_max_age_seconds")]
    pub max_age_seconds: u64,
}

fn default_leeway_seconds() -> u64 {
    60
}

fn default_max_age_seconds() -> u64 {
    24 * 3600
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The registry's base URL: `http://` or `https://`, host and port, no path.
    pub url: String,
    /// PEM certificates trusted for an `https` upstream besides the system's roots.
    pub ca: Option<PathBuf>,
    /// Connecting to the registry may take this long.
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// Once a request is sent, the registry must start answering within this time (it
    /// verifies a pushed layer's digest before answering the final PUT).
    #[serde(default = "default_answer_timeout_seconds")]
    pub answer_timeout_seconds: u64,
    /// A body, either way, may pause this long between two chunks: a layer of any size
    /// streams, a stalled client or registry does not hold a connection for ever.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
}

impl Upstream {
    /// A registry at `url` with the default timeouts (the console's, in token-server mode).
    pub fn at(url: &str, ca: Option<PathBuf>) -> Upstream {
        Upstream {
            url: url.to_string(),
            ca,
            connect_timeout_seconds: default_connect_timeout_seconds(),
            answer_timeout_seconds: default_answer_timeout_seconds(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
        }
    }
}

fn default_connect_timeout_seconds() -> u64 {
    10
}

fn default_answer_timeout_seconds() -> u64 {
    300
}

fn default_idle_timeout_seconds() -> u64 {
    60
}

/// One `[[policy]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Shown in logs, errors and decisions.
    pub name: String,
    /// The `.wasm` component file.
    pub module: Option<PathBuf>,
    /// Instead of `module`: an OCI artifact holding the component, `host[:port]/repo:tag`
    /// (followed) or `host[:port]/repo@sha256:...` (pinned).
    pub oci: Option<String>,
    /// How often a followed tag is looked at.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// The keys (`[signatures] keys`) one of which must have signed a pulled module.
    #[serde(default)]
    pub signed_by: Vec<String>,
    /// A JSON file with the settings.
    pub settings_file: Option<PathBuf>,
    /// The settings inline (handed to the policy as JSON).
    pub settings: Option<serde_json::Value>,
    /// CPU deadline per decision.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory cap per instance.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
}

impl Policy {
    /// What the host loads for this entry (its paths as they are: resolved by the caller).
    pub fn spec(&self) -> PolicySpec {
        PolicySpec {
            name: self.name.clone(),
            module: match (&self.oci, &self.module) {
                (Some(reference), _) => ModuleSource::Pulled(Arc::new(Pulled::new(reference))),
                (None, module) => ModuleSource::File(module.clone().unwrap_or_default()),
            },
            settings: match (&self.settings, &self.settings_file) {
                (Some(json), _) => SettingsSource::Inline(json.to_string()),
                (None, Some(file)) => SettingsSource::File(file.clone()),
                (None, None) => SettingsSource::Empty,
            },
            limits: Limits {
                timeout: Duration::from_millis(self.timeout_ms),
                memory_bytes: usize::try_from(self.memory_mb << 20).unwrap_or(usize::MAX),
            },
        }
    }
}

fn default_timeout_ms() -> u64 {
    50
}

fn default_poll_seconds() -> u64 {
    30
}

fn default_memory_mb() -> u64 {
    16
}

/// A config that cannot be used, with the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("config {}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// The values do not fit together.
    #[error("config {}: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Config {
    /// Reads, parses and checks a config file; relative paths in it become relative to its
    /// directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_text(path, &text)
    }

    /// Parses and checks the text of the config file at `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(""));
        Config::parse(text, base).map_err(|e| match e {
            Problem::Parse(message) => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            Problem::Invalid(message) => ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            },
        })
    }

    fn parse(text: &str, base: &Path) -> Result<Config, Problem> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| Problem::Parse(e.to_string().trim_end().to_string()))?;
        config.validate().map_err(Problem::Invalid)?;
        config.resolve_paths(base);
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.server.public_url {
            origin(url).map_err(|e| format!("[server] public_url = {url:?}: {e}"))?;
        }
        let mut positive = vec![
            (
                "[server] header_timeout_seconds",
                self.server.header_timeout_seconds,
            ),
            (
                "[server] max_connections",
                u64::try_from(self.server.max_connections).unwrap_or(u64::MAX),
            ),
        ];
        if let Some(upstream) = &self.upstream {
            origin(&upstream.url)
                .map_err(|e| format!("[upstream] url = {:?}: {e}", upstream.url))?;
            positive.extend([
                (
                    "[upstream] connect_timeout_seconds",
                    upstream.connect_timeout_seconds,
                ),
                (
                    "[upstream] answer_timeout_seconds",
                    upstream.answer_timeout_seconds,
                ),
                (
                    "[upstream] idle_timeout_seconds",
                    upstream.idle_timeout_seconds,
                ),
            ]);
        }
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{key} must be above 0"));
        }
        if self.server.admin_listen == Some(self.server.listen) {
            return Err(format!(
                "[server] admin_listen = \"{}\" is the same as listen: give operators a port \
                 of their own",
                self.server.listen
            ));
        }
        for allowed in &self.server.cors_origins {
            if allowed == "*" {
                return Err(
                    "[server] cors_origins: \"*\" cannot be used: browsers send credentials \
                     only to an origin named exactly; list each UI's origin"
                        .into(),
                );
            }
            let uri =
                origin(allowed).map_err(|e| format!("[server] cors_origins: {allowed:?}: {e}"))?;
            if allowed.ends_with('/') || uri.path() != "/" || allowed.contains('@') {
                return Err(format!(
                    "[server] cors_origins: {allowed:?} is not an origin: write it as a browser \
                     sends it, scheme://host[:port] with no path or trailing slash"
                ));
            }
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err("[server] tls_cert and tls_key go together: set both or neither".into());
        }
        let token = &self.token;
        if token.ttl_seconds < 60 {
            return Err(format!(
                "[token] ttl_seconds = {} is too short: clients treat anything under 60 as 60",
                token.ttl_seconds
            ));
        }
        if token.ttl_seconds > MAX_TTL_SECONDS {
            return Err(format!(
                "[token] ttl_seconds = {} is too long: at most {MAX_TTL_SECONDS} (a day); \
                 clients fetch a new token when theirs expires",
                token.ttl_seconds
            ));
        }
        if token.refresh_ttl_seconds > MAX_REFRESH_TTL_SECONDS {
            return Err(format!(
                "[token] refresh_ttl_seconds = {} is too long: at most {MAX_REFRESH_TTL_SECONDS} \
                 (a year); 0 disables refresh tokens",
                token.refresh_ttl_seconds
            ));
        }
        if token.previous_keys > MAX_PREVIOUS_KEYS {
            return Err(format!(
                "[token] previous_keys = {} is too many: at most {MAX_PREVIOUS_KEYS}",
                token.previous_keys
            ));
        }
        for (i, oidc) in self.identity.oidc.iter().enumerate() {
            let at = format!("[[identity.oidc]] #{} ({})", i + 1, oidc.issuer);
            let urls = std::iter::once(&oidc.issuer).chain(oidc.jwks_url.iter());
            for url in urls {
                provider_url(&at, url, oidc.insecure_http)?;
            }
            if oidc.audience.is_empty() {
                return Err(format!(
                    "{at}: audience must not be empty: a token for any service would do"
                ));
            }
            if self.identity.oidc[..i]
                .iter()
                .any(|o| o.issuer == oidc.issuer)
            {
                return Err(format!("{at}: the issuer is listed twice"));
            }
            for template in std::iter::once(&oidc.username).chain(&oidc.groups) {
                crate::identity::Template::parse(template).map_err(|e| format!("{at}: {e}"))?;
            }
        }
        if let Some(ldap) = &self.identity.ldap {
            let at = "[identity.ldap]";
            let secure = ldap.url.starts_with("ldaps://")
                || (ldap.url.starts_with("ldap://") && (ldap.starttls || ldap.insecure_plaintext));
            if ldap.url.starts_with("ldap://")
                && !ldap.starttls
                && ldap.insecure_plaintext
                && !is_loopback(&ldap.url)
            {
                return Err(format!(
                    "{at} url = {:?}: insecure_plaintext is only for a directory on loopback \
                     (127.0.0.1, ::1, localhost); passwords must not cross a network in clear. \
                     Use ldaps://, or starttls = true",
                    ldap.url
                ));
            }
            if !secure {
                return Err(if ldap.url.starts_with("ldap://") {
                    format!(
                        "{at} url = {:?}: passwords would cross the network in clear; use \
                         ldaps://, or starttls = true (insecure_plaintext = true only for a \
                         directory on loopback)",
                        ldap.url
                    )
                } else {
                    format!("{at} url = {:?} must be ldaps:// or ldap://", ldap.url)
                });
            }
            if !ldap.user_filter.contains("{username}") {
                return Err(format!(
                    "{at} user_filter = {:?} does not use {{username}}: every login would find \
                     the same entry",
                    ldap.user_filter
                ));
            }
            if ldap.cache_seconds == 0 || ldap.timeout_seconds == 0 {
                return Err(format!(
                    "{at} cache_seconds and timeout_seconds must be above 0"
                ));
            }
        }
        self.validate_console()?;
        if let Some(name) = self
            .signatures
            .keys
            .keys()
            .find(|n| n.is_empty() || n.contains(char::is_whitespace))
        {
            return Err(format!("[signatures] keys: {name:?} is not a key name"));
        }
        if self.policies.is_empty() {
            return Err(
                "no [[policy]] is configured: every request would be denied. \
                        Add one, e.g. name = \"acl\", module = \"policies/acl.wasm\""
                    .into(),
            );
        }
        for (block, set) in [("policy", &self.policies), ("shadow", &self.shadows)] {
            for (i, policy) in set.iter().enumerate() {
                let at = format!("[[{block}]] #{} (`{}`)", i + 1, policy.name);
                if policy.name.trim().is_empty() {
                    return Err(format!("[[{block}]] #{}: name must not be empty", i + 1));
                }
                if set[..i].iter().any(|p| p.name == policy.name) {
                    return Err(format!(
                        "{at}: the name is used twice; names must be unique"
                    ));
                }
                self.validate_source(&at, policy)?;
                if policy.settings.is_some() && policy.settings_file.is_some() {
                    return Err(format!(
                        "{at}: set either settings or settings_file, not both"
                    ));
                }
                if policy.timeout_ms == 0 {
                    return Err(format!("{at}: timeout_ms must be above 0"));
                }
                if policy.memory_mb == 0 || policy.memory_mb > MAX_POLICY_MEMORY_MB {
                    return Err(format!(
                        "{at}: memory_mb must be between 1 and {MAX_POLICY_MEMORY_MB}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A policy's module: a file, or a signed artifact this config can pull and verify.
    fn validate_source(&self, at: &str, policy: &Policy) -> Result<(), String> {
        let Some(reference) = &policy.oci else {
            if policy.module.is_none() {
                return Err(format!(
                    "{at}: set module (a .wasm file) or oci (an artifact in a registry)"
                ));
            }
            if !policy.signed_by.is_empty() {
                return Err(format!(
                    "{at}: signed_by is for a module pulled with oci; a module file is trusted \
                     as whoever may write it"
                ));
            }
            return Ok(());
        };
        if policy.module.is_some() {
            return Err(format!("{at}: set either module or oci, not both"));
        }
        crate::oci::Reference::parse(reference).map_err(|e| format!("{at}: oci: {e}"))?;
        if policy.signed_by.is_empty() {
            return Err(format!(
                "{at}: signed_by must name at least one key of [signatures] keys: a module \
                 pulled from a registry serves only once a signature by one verifies"
            ));
        }
        if let Some(unknown) = policy
            .signed_by
            .iter()
            .find(|name| !self.signatures.keys.contains_key(*name))
        {
            return Err(format!(
                "{at}: signed_by names {unknown:?}, which is not in [signatures] keys"
            ));
        }
        if policy.poll_seconds == 0 {
            return Err(format!("{at}: poll_seconds must be above 0"));
        }
        if self.cache.dir.is_none() {
            return Err(format!(
                "{at}: oci needs [cache] dir, where the last verified module is kept for a \
                 start while the registry is away"
            ));
        }
        Ok(())
    }

    fn validate_console(&self) -> Result<(), String> {
        let console = &self.console;
        if !console.enabled {
            return Ok(());
        }
        let at = "[console]";
        if console.session_key.is_none() {
            return Err(format!(
                "{at} session_key is needed: sessions are sealed with it (`portcullis keygen \
                 --session --out keys` writes keys/session.key; every replica shares it)"
            ));
        }
        match (&console.registry_url, &self.upstream) {
            (Some(url), _) => {
                origin(url).map_err(|e| format!("{at} registry_url = {url:?}: {e}"))?;
            }
            (None, Some(_)) => {}
            (None, None) => {
                return Err(format!(
                    "{at} registry_url is needed in token-server mode: where the console reads \
                     the registry, e.g. \"http://registry:5000\""
                ));
            }
        }
        if !SESSION_MINUTES.contains(&console.session_minutes) {
            return Err(format!(
                "{at} session_minutes = {} must be between {} and {}",
                console.session_minutes,
                SESSION_MINUTES.start(),
                SESSION_MINUTES.end()
            ));
        }
        if console.token_max_days > MAX_TOKEN_DAYS {
            return Err(format!(
                "{at} token_max_days = {} is too long: at most {MAX_TOKEN_DAYS} (0 turns \
                 personal tokens off)",
                console.token_max_days
            ));
        }
        match (&console.revoked_tokens, &console.revoked_tokens_repository) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at} revoked_tokens and revoked_tokens_repository are both set: keep one \
                     (the file, or the registry's repository)"
                ));
            }
            (None, None) if console.token_max_days > 0 => {
                return Err(format!(
                    "{at} revoked_tokens or revoked_tokens_repository is needed while personal \
                     tokens are on (token_max_days > 0): a token that cannot be revoked must \
                     not be issued. Name a file every replica reads, e.g. \"auth/revoked\", \
                     or a repository of the registry, e.g. \"portcullis/revocations\""
                ));
            }
            (_, Some(repository)) => {
                crate::proxy::repository_name(repository)
                    .map_err(|e| format!("{at} revoked_tokens_repository: {e}"))?;
            }
            _ => {}
        }
        if let Some(group) = console.admins.iter().find(|g| g.trim().is_empty()) {
            return Err(format!("{at} admins: {group:?} is not a group name"));
        }
        if let Some(sso) = &console.sso {
            let at = format!("[console.sso] ({})", sso.issuer);
            provider_url(&at, &sso.issuer, sso.insecure_http)?;
            if sso.client_id.is_empty() {
                return Err(format!("{at}: client_id must not be empty"));
            }
            if sso.directory_users && self.identity.ldap.is_none() {
                return Err(format!(
                    "{at}: directory_users = true needs the directory in [identity.ldap]"
                ));
            }
            if !sso.scopes.iter().any(|s| s == "openid") {
                return Err(format!(
                    "{at}: scopes must include \"openid\": without it there is no ID token"
                ));
            }
            if sso.recheck_seconds == 0 {
                return Err(format!("{at}: recheck_seconds must be above 0"));
            }
            for template in std::iter::once(&sso.username).chain(&sso.groups) {
                crate::identity::Template::parse(template).map_err(|e| format!("{at}: {e}"))?;
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| *p = base.join(&*p);
        let server = &mut self.server;
        server
            .tls_cert
            .iter_mut()
            .chain(server.tls_key.iter_mut())
            .for_each(resolve);
        resolve(&mut self.token.key);
        resolve(&mut self.token.certificate);
        if let Some(upstream) = &mut self.upstream {
            upstream.ca.iter_mut().for_each(resolve);
        }
        if let Some(decisions) = &mut self.log.decisions
            && decisions != Path::new("stdout")
        {
            resolve(decisions);
        }
        let identity = &mut self.identity;
        identity
            .htpasswd
            .iter_mut()
            .chain(identity.groups.iter_mut())
            .chain(identity.oidc.iter_mut().flat_map(|o| o.ca.iter_mut()))
            .for_each(resolve);
        if let Some(ldap) = &mut identity.ldap {
            ldap.ca.iter_mut().for_each(resolve);
            resolve(&mut ldap.bind_password_file);
        }
        self.signatures.keys.values_mut().for_each(resolve);
        let console = &mut self.console;
        console
            .session_key
            .iter_mut()
            .chain(console.registry_ca.iter_mut())
            .chain(console.revoked_tokens.iter_mut())
            .for_each(resolve);
        if let Some(sso) = &mut console.sso {
            sso.client_secret_file
                .iter_mut()
                .chain(sso.ca.iter_mut())
                .for_each(resolve);
        }
        self.cache.dir.iter_mut().for_each(resolve);
        for login in self.registries.values_mut() {
            resolve(&mut login.password_file);
            login.ca.iter_mut().for_each(resolve);
        }
        for policy in self.policies.iter_mut().chain(self.shadows.iter_mut()) {
            policy.module.iter_mut().for_each(resolve);
            policy.settings_file.iter_mut().for_each(resolve);
        }
    }

    /// The policies as the host loads them.
    pub fn policy_specs(&self) -> Vec<PolicySpec> {
        self.policies.iter().map(Policy::spec).collect()
    }

    /// The shadow policies as the host loads them.
    pub fn shadow_specs(&self) -> Vec<PolicySpec> {
        self.shadows.iter().map(Policy::spec).collect()
    }
}

/// True when `url`'s host is a loopback address or `localhost`: where the `insecure_*`
/// switches may send anything in clear.
pub fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks an identity provider's URL: https, or http only when `insecure_http` allows it
/// and the host is loopback.
fn provider_url(at: &str, url: &str, insecure_http: bool) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{at}: {url:?} is not a URL ({e})"))?;
    match (uri.scheme_str(), insecure_http) {
        (Some("https"), _) => Ok(()),
        (Some("http"), true) if is_loopback(url) => Ok(()),
        (Some("http"), true) => Err(format!(
            "{at}: {url:?} is plain http on a host that is not loopback: insecure_http is only \
             for a provider on 127.0.0.1, ::1 or localhost (tests); use https"
        )),
        (Some("http"), false) => Err(format!(
            "{at}: {url:?} is plain http: tokens would be checked against keys anyone on the \
             path can swap; use https (insecure_http = true only for a provider on loopback)"
        )),
        _ => Err(format!("{at}: {url:?} must be an https:// URL")),
    }
}

/// Parses a URL that must be an origin: `http` or `https`, a host, no path beyond `/`, no
/// query. The registry API lives at `/v2/` of the host, so a path prefix could never work.
pub fn origin(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}); write e.g. \"https://registry.example.com\""))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the scheme must be http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(
            "give the origin only (scheme, host, port): registries serve /v2/ at the root".into(),
        );
    }
    Ok(uri)
}

enum Problem {
    Parse(String),
    Invalid(String),
}

#[cfg(test)]
mod tests;
