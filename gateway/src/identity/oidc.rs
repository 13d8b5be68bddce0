//! Workload identity: a JWT from a configured OpenID issuer (a CI job's, a pod's) is a
//! password. Each issuer's keys come from its discovery document (or `jwks_url`) and are
//! kept; an unknown `kid` fetches them again, at most every [`REFETCH`] and one fetch at a
//! time, while tokens of known keys go on verifying without waiting for it; the last good
//! set serves while the issuer is away. Only asymmetric algorithms verify. A verified token
//! is remembered by its digest until it expires, so a job's repeat logins cost a hash; the
//! issuer's `require` and templates are applied to it at every login.

use super::{LoginError, Origin, Principal, unix_now};
use crate::client::HttpsClient;
use crate::config;
use crate::glob::matches as glob;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The soonest an issuer's keys are fetched again: a flood of made-up `kid`s costs one fetch
/// per period, not one per token.
const REFETCH: Duration = Duration::from_secs(10);
/// A discovery document or key set may take this long to arrive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents and key sets are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Workload tokens are a few KiB; anything far larger is not one.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Verified tokens remembered at most.
const REMEMBERED_TOKENS: usize = 10_000;
/// What verifies: asymmetric signatures only, never `none` or a shared secret.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Text with `{claim}` placeholders: `gha:{repository}`; `{claim|lower}` lower-cases the
/// value (GitHub's `repository` keeps the owner's capitals, `Acme/App`, while repository
/// names are lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// A claim, lower-cased when `lower`.
    Claim {
        name: String,
        lower: bool,
    },
}

impl Template {
    /// Parses a template; an unclosed `{` or an empty claim name is an error.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("template {text:?}: unclosed `{{`"))?;
            let inside = &after[..close];
            let (claim, lower) = match inside.split_once('|') {
                None => (inside, false),
                Some((claim, "lower")) => (claim, true),
                Some((_, filter)) => {
                    return Err(format!(
                        "template {text:?}: `|{filter}` is not a filter (only `|lower`)"
                    ));
                }
            };
            if claim.is_empty() || claim.contains('{') {
                return Err(format!("template {text:?}: `{{{inside}}}` names no claim"));
            }
            pieces.push(Piece::Claim {
                name: claim.to_string(),
                lower,
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err("a template must not be empty".into());
        }
        Ok(Template { pieces })
    }

    /// The text with each claim's value; a missing claim, or one that is not a string,
    /// number or boolean, is an error.
    pub fn render(&self, claims: &Map<String, Value>) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Claim { name, lower } => {
                    let value = scalar(claims, name)?;
                    out.push_str(&if *lower { value.to_lowercase() } else { value });
                }
            }
        }
        Ok(out)
    }
}

impl Template {
    /// Like [`Template::render`]; a template that is just `{claim}` of a list claim gives
    /// one text per element (`{groups}` of `["a", "b"]`: groups `a` and `b`).
    pub fn render_all(&self, claims: &Map<String, Value>) -> Result<Vec<String>, String> {
        if let [Piece::Claim { name, lower }] = &self.pieces[..]
            && let Some(Value::Array(items)) = lookup(claims, name)
        {
            let cased = |text: String| if *lower { text.to_lowercase() } else { text };
            return items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(cased(s.clone())),
                    Value::Number(_) | Value::Bool(_) => Ok(item.to_string()),
                    _ => Err(format!(
                        "claim `{name}` lists something that is not a string"
                    )),
                })
                .collect();
        }
        self.render(claims).map(|text| vec![text])
    }
}

/// A claim by name; `a/b` is member `b` of object claim `a`.
fn lookup<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    let mut path = name.split('/');
    let first = path.next().and_then(|key| claims.get(key));
    path.try_fold(first, |value, key| Some(value?.as_object()?.get(key)))
        .flatten()
}

/// A claim's value as text; `a/b` is member `b` of object claim `a` (Kubernetes puts the
/// namespace in `kubernetes.io/namespace`).
fn scalar(claims: &Map<String, Value>, name: &str) -> Result<String, String> {
    match lookup(claims, name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(format!("claim `{name}` is not a string, number or boolean")),
        None => Err(format!("the token has no `{name}` claim")),
    }
}

/// The claims as (name, text) pairs, as the policies get them: an object's members as
/// `a/b`, each element of a list on its own, `null` left out.
fn flatten(claims: &Map<String, Value>) -> Vec<(String, String)> {
    fn walk(name: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Null => {}
            Value::String(s) => out.push((name.to_string(), s.clone())),
            Value::Bool(_) | Value::Number(_) => out.push((name.to_string(), value.to_string())),
            Value::Array(items) => items.iter().for_each(|item| walk(name, item, out)),
            Value::Object(members) => members
                .iter()
                .for_each(|(key, item)| walk(&format!("{name}/{key}"), item, out)),
        }
    }
    let mut out = Vec::new();
    for (name, value) in claims {
        walk(name, value, &mut out);
    }
    out
}

/// One `require` entry checked against a token's claims.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Requirement {
    /// The claim.
    pub claim: String,
    /// The glob it must match.
    pub pattern: String,
    /// Its value, when the token has it as text.
    pub value: Option<String>,
    /// Whether the value matches.
    pub met: bool,
}

/// The claims of a verified token.
struct Verified {
    claims: Map<String, Value>,
    /// `exp`, and `iat` plus the maximum age: the token is good until the earlier.
    good_until: u64,
}

/// The keys of an issuer as last fetched, and when a fetch was last tried.
#[derive(Default)]
struct Keys {
    set: Option<Arc<JwkSet>>,
    tried: Option<Instant>,
    error: Option<String>,
}

/// One configured issuer.
pub struct OidcIssuer {
    config: config::Oidc,
    username: Template,
    groups: Vec<Template>,
    client: HttpsClient<Empty<Bytes>>,
    /// Never held across a wait: a login with a known key only reads it.
    keys: std::sync::Mutex<Keys>,
    /// Held by the one fetch of the keys under way.
    fetching: tokio::sync::Mutex<()>,
    verified: quick_cache::sync::Cache<[u8; 32], Arc<Verified>>,
}

impl OidcIssuer {
    /// An issuer as configured; nothing is fetched until a token arrives (or [`Issuer::check`]).
    pub fn new(config: &config::Oidc) -> Result<OidcIssuer, String> {
        let at = |e: String| format!("[[identity.oidc]] {}: {e}", config.issuer);
        Ok(OidcIssuer {
            username: Template::parse(&config.username).map_err(at)?,
            groups: config
                .groups
                .iter()
                .map(|g| Template::parse(g).map_err(at))
                .collect::<Result<_, _>>()?,
            client: crate::client::https_client(
                config.ca.as_deref(),
                "[[identity.oidc]] ca",
                FETCH_TIMEOUT,
            )
            .map_err(at)?,
            keys: std::sync::Mutex::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
            verified: quick_cache::sync::Cache::new(REMEMBERED_TOKENS),
            config: config.clone(),
        })
    }

    /// The `iss` this issuer's tokens carry.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Fetches the keys now: `portcullis check`, and readiness.
    pub async fn check(&self) -> Result<usize, String> {
        let _fetching = self.fetching.lock().await;
        self.held().tried = Some(Instant::now());
        let fetched = self.fetch_keys().await;
        self.keep(fetched, false);
        let keys = self.held();
        match (&keys.set, &keys.error) {
            (_, Some(error)) => Err(error.clone()),
            (Some(set), None) => Ok(set.keys.len()),
            (None, None) => Err("no keys".into()),
        }
    }

    /// The keys held now and the last fetch error, for `/status`.
    pub fn status(&self) -> Option<(Option<usize>, Option<String>)> {
        let keys = self.held();
        Some((keys.set.as_ref().map(|s| s.keys.len()), keys.error.clone()))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs `token` in: verified (from memory when it was before), then the `require`d
    /// claims checked and the account and groups made from the claims.
    pub async fn login(&self, token: &str) -> Result<Principal, LoginError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let verified = match self.verified.get(&digest) {
            Some(verified) if verified.good_until > now => verified,
            _ => {
                let verified = Arc::new(self.verify(token).await?);
                self.verified.insert(digest, verified.clone());
                verified
            }
        };
        self.principal(&verified.claims)
            .map_err(|why| LoginError::Refused(format!("{}: {why}", self.config.issuer)))
    }

    /// Every `require` checked against `claims` (not stopping at the first that fails), and
    /// the account they make: what `portcullis identity test` shows.
    pub fn assess(
        &self,
        claims: &Map<String, Value>,
    ) -> (Vec<Requirement>, Result<Principal, String>) {
        let requirements = self
            .config
            .require
            .iter()
            .map(|(claim, pattern)| {
                let value = scalar(claims, claim).ok();
                Requirement {
                    met: value.as_deref().is_some_and(|v| glob(pattern, v)),
                    claim: claim.clone(),
                    pattern: pattern.clone(),
                    value,
                }
            })
            .collect();
        (requirements, self.principal(claims))
    }

    /// The claims of `token`, if it verifies (signature, issuer, audience, times); `require`
    /// and the templates are not applied.
    pub async fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, LoginError> {
        self.verify(token).await.map(|verified| verified.claims)
    }

    /// The account of verified claims, if they satisfy `require`.
    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, String> {
        for (name, pattern) in &self.config.require {
            let value = scalar(claims, name)?;
            if !glob(pattern, &value) {
                return Err(format!(
                    "claim `{name}` = {value:?} does not match {pattern:?}"
                ));
            }
        }
        let name = self.username.render(claims)?;
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(format!(
                "the account name {name:?} made from the claims is not usable"
            ));
        }
        let mut groups = Vec::new();
        for template in &self.groups {
            groups.extend(template.render_all(claims)?);
        }
        Ok(Principal {
            name,
            groups,
            origin: Origin::Oidc(self.config.issuer.clone()),
            claims: flatten(claims),
        })
    }

    async fn verify(&self, token: &str) -> Result<Verified, LoginError> {
        let refused = |why: String| LoginError::Refused(format!("{}: {why}", self.config.issuer));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refused(format!(
                "a token of {} bytes is not a workload token",
                token.len()
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(format!("unreadable token: {e}")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(refused(format!(
                "{:?} tokens are refused: only asymmetric signatures verify",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_seconds;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| refused(format!("invalid token: {e}")))?
            .claims;
        let now = unix_now();
        let number = |name: &str| claims.get(name).and_then(Value::as_u64).unwrap_or(0);
        let (iat, exp) = (number("iat"), number("exp"));
        if iat > now.saturating_add(self.config.leeway_seconds) {
            return Err(refused("the token was issued in the future".into()));
        }
        let too_old = iat.saturating_add(self.config.max_age_seconds);
        if too_old <= now {
            return Err(refused(format!(
                "the token was issued more than {} s ago",
                self.config.max_age_seconds
            )));
        }
        Ok(Verified {
            good_until: exp.saturating_add(self.config.leeway_seconds).min(too_old),
            claims,
        })
    }

    /// The key named `kid` (or the only key, when the token names none), fetching the keys
    /// again if it is unknown and the last fetch is older than [`REFETCH`].
    async fn key(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<DecodingKey, LoginError> {
        let find = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(kid) => set.find(kid)?,
                None if set.keys.len() == 1 => &set.keys[0],
                None => return None,
            };
            // A shared secret verifies nothing here, and a key made for one algorithm no
            // other.
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return None;
            }
            if jwk
                .common
                .key_algorithm
                .is_some_and(|a| a.to_string() != format!("{algorithm:?}"))
            {
                return None;
            }
            DecodingKey::from_jwk(jwk).ok()
        };
        let held = |this: &Self| this.held().set.clone();
        if let Some(key) = held(self).as_deref().and_then(find) {
            return Ok(key);
        }
        // An unknown key: one fetch at a time (made-up `kid`s queue here, bounded by the
        // fetch's timeout), and none sooner than REFETCH after the last.
        {
            let _fetching = self.fetching.lock().await;
            let due = self.held().tried.is_none_or(|t| t.elapsed() >= REFETCH);
            if due {
                self.refetch().await;
            }
        }
        if let Some(key) = held(self).as_deref().and_then(find) {
            return Ok(key);
        }
        let keys = self.held();
        Err(match (&keys.set, &keys.error) {
            (None, Some(error)) => LoginError::Unavailable(format!(
                "the keys of {} could not be fetched: {error}",
                self.config.issuer
            )),
            _ => LoginError::Refused(format!(
                "{}: the token was signed by a key the issuer does not list ({})",
                self.config.issuer,
                kid.unwrap_or("no kid")
            )),
        })
    }

    /// Fetches the keys (the caller holds `fetching`); on failure the last good set stays
    /// and the error is kept.
    async fn refetch(&self) {
        self.held().tried = Some(Instant::now());
        let fetched = self.fetch_keys().await;
        self.keep(fetched, true);
    }

    /// Keeps what a fetch gave: the keys, or the error beside the last good keys (said in
    /// the log by a serving gateway; `check` says it itself).
    fn keep(&self, fetched: Result<JwkSet, String>, serving: bool) {
        let mut keys = self.held();
        match fetched {
            Ok(set) => {
                keys.set = Some(Arc::new(set));
                keys.error = None;
            }
            Err(error) => {
                if serving {
                    tracing::warn!(issuer = %self.config.issuer, %error, "cannot fetch the issuer's keys; the last good ones stay");
                }
                keys.error = Some(error);
            }
        }
    }

    async fn fetch_keys(&self) -> Result<JwkSet, String> {
        let jwks_url = match &self.config.jwks_url {
            Some(url) => url.clone(),
            None => self.endpoint(&self.discovery().await?, "jwks_uri")?,
        };
        let set = self.get_json(&jwks_url).await?;
        serde_json::from_value(set).map_err(|e| format!("{jwks_url}: not a JWK set: {e}"))
    }

    /// The issuer's discovery document, checked to name this issuer.
    pub async fn discovery(&self) -> Result<Value, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery = self.get_json(&url).await?;
        if discovery.get("issuer").and_then(Value::as_str) != Some(&self.config.issuer) {
            return Err(format!(
                "{url} names issuer {}, not {:?}",
                discovery.get("issuer").unwrap_or(&Value::Null),
                self.config.issuer
            ));
        }
        Ok(discovery)
    }

    /// An endpoint the discovery document names, which must be https (or http on loopback
    /// when `insecure_http` allows it).
    pub fn endpoint(&self, discovery: &Value, name: &str) -> Result<String, String> {
        let url = discovery
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: discovery names no {name}", self.config.issuer))?;
        let allowed = url.starts_with("https://")
            || (self.config.insecure_http
                && url.starts_with("http://")
                && crate::config::is_loopback(url));
        if !allowed {
            return Err(format!(
                "{}: {name} {url:?} is not https",
                self.config.issuer
            ));
        }
        Ok(url.to_string())
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let request = hyper::Request::get(uri)
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let fetch = async {
            let response = self.client.request(request).await.map_err(|e| {
                format!(
                    "{url}: {}",
                    crate::client::describe(&e, "[[identity.oidc]] ca")
                )
            })?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("{url} did not answer within {} s", FETCH_TIMEOUT.as_secs()))?
    }
}

/// The issuer a token claims to come from, read without verifying anything: a JWT whose
/// `iss` is configured is an OIDC login and must verify as one; anything else is a password.
pub fn claimed_issuer(token: &str) -> Option<String> {
    claimed(token, "iss")
}

/// A string claim of a JWT, read without verifying anything.
pub fn claimed(token: &str, name: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(payload.trim_end_matches('=').as_bytes())
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get(name)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_claims_and_refuse_what_is_missing() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "repository": "acme/app", "run": 7, "ok": true, "nested": {"a": 1},
            "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "builder"}},
        }))
        .expect("a map");
        let render = |t: &str| Template::parse(t).and_then(|t| t.render(&claims));
        assert_eq!(render("gha:{repository}").as_deref(), Ok("gha:acme/app"));
        assert_eq!(render("{run}-{ok}").as_deref(), Ok("7-true"));
        assert!(render("{missing}").is_err_and(|e| e.contains("no `missing` claim")));
        assert!(render("{nested}").is_err());
        assert_eq!(
            render("k8s:{kubernetes.io/namespace}/{kubernetes.io/serviceaccount/name}").as_deref(),
            Ok("k8s:ci/builder")
        );
        assert!(render("{kubernetes.io/pod}").is_err());
        assert!(render("{repository/x}").is_err());
        assert!(Template::parse("gha:{repository").is_err());
        let upper: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"repository": "Acme/App"})).expect("a map");
        let lower = Template::parse("gha:{repository|lower}").expect("parses");
        assert_eq!(lower.render(&upper).as_deref(), Ok("gha:acme/app"));
        assert!(Template::parse("{repository|upper}").is_err_and(|e| e.contains("only `|lower`")));
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("").is_err());
    }

    #[test]
    fn a_list_claim_gives_a_group_per_element() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "groups": ["admins", "eng"], "org": "acme", "bad": [{"x": 1}],
        }))
        .expect("a map");
        let all = |t: &str| Template::parse(t).and_then(|t| t.render_all(&claims));
        assert_eq!(all("{groups}"), Ok(vec!["admins".into(), "eng".into()]));
        assert_eq!(all("{org}"), Ok(vec!["acme".into()]));
        assert!(all("team-{groups}").is_err(), "a list only stands alone");
        assert!(all("{bad}").is_err());
    }

    #[test]
    fn the_claimed_issuer_is_read_only_from_a_jwt() {
        let payload = data_encoding::BASE64URL_NOPAD.encode(br#"{"iss":"https://ci.example"}"#);
        assert_eq!(
            claimed_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://ci.example")
        );
        assert_eq!(claimed_issuer("a plain password"), None);
        assert_eq!(claimed_issuer("a.b"), None);
        assert_eq!(claimed_issuer(&format!("e30.{payload}.sig.more")), None);
    }
}
