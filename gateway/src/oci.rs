//! Portcullis's own requests to a registry, outside the proxied path: OCI references, and a
//! client that pulls and pushes manifests and blobs with the registry's token auth (a Bearer
//! challenge answered at its realm with a login, or Basic), or with a token Portcullis signs
//! itself for a registry that trusts its key.

use crate::proxy::{Fetched, Upstream};
use crate::signatures::Reader;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, StatusCode};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// An OCI image manifest.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Manifests read at most.
const MAX_MANIFEST: usize = 4 << 20;
/// Answers besides manifests and blobs (errors, tokens) read at most.
const MAX_ANSWER: usize = 1 << 20;

/// `host[:port]/repository` with a tag, a digest or both (the digest pins it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry's host and port.
    pub registry: String,
    /// The repository path.
    pub repository: String,
    /// The tag, if named.
    pub tag: Option<String>,
    /// The manifest digest, if named: then the reference is pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Reads `registry.example.com/policies/acl:stable` or `...@sha256:<hex>`.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (text, None),
        };
        if let Some(digest) = &digest
            && !is_digest(digest)
        {
            return Err(format!(
                "{text:?}: {digest:?} is not a sha256:<64 hex> digest"
            ));
        }
        let (registry, path) = rest.split_once('/').ok_or_else(|| {
            format!("{text:?} names no registry: write host[:port]/repository:tag")
        })?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(format!(
                "{text:?}: {registry:?} is not a registry host (a host with a dot or a port, or \
                 localhost)"
            ));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag.to_string())),
            _ => (path, None),
        };
        let valid_path = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            });
        if !valid_path {
            return Err(format!(
                "{text:?}: {repository:?} is not a repository name (lower case letters, digits, \
                 . _ - and /)"
            ));
        }
        if let Some(tag) = &tag {
            let valid = tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid {
                return Err(format!("{text:?}: {tag:?} is not a tag"));
            }
        }
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "{text:?}: name a tag (`:stable`, followed) or a digest (`@sha256:...`, pinned)"
            ));
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// What a manifest request names: the digest when pinned, else the tag.
    pub fn point(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or_default()
    }

    /// The origin to reach the registry at: `http` for a loopback host (as docker does),
    /// `https` otherwise.
    pub fn origin(&self) -> String {
        let host = self
            .registry
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(self.registry.as_str(), |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let scheme = if loopback { "http" } else { "https" };
        format!("{scheme}://{}", self.registry)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `text` is a `sha256:<64 hex>` digest: what may go into a path Portcullis asks for
/// or writes to.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Signs a token of Portcullis's own for (repository, actions): `Bearer` is added.
pub type Minter = Arc<dyn Fn(&str, &[&str]) -> Result<String, String> + Send + Sync>;

/// How Portcullis proves itself to a registry.
#[derive(Clone)]
pub enum Auth {
    /// Nothing: a registry that trusts the gateway (its upstream), or an open one.
    Anonymous,
    /// A token Portcullis signs itself (a registry that trusts its key), when asked.
    Minted(Minter),
    /// `Bearer <token>`: a token Portcullis signed for this use.
    Token(HeaderValue),
    /// A user name and password: sent to the registry's token realm, or as Basic auth.
    Login {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

/// One repository of a registry, with what lets Portcullis in.
pub struct Repository {
    registry: Upstream,
    ca: Option<PathBuf>,
    name: String,
    actions: &'static [&'static str],
    auth: Auth,
    /// The `Authorization` that worked last.
    authorization: Mutex<Option<HeaderValue>>,
}

impl Repository {
    /// `name` at the registry at `origin` (`scheme://host:port`), for `actions` (what a
    /// token is asked for), trusting `ca` for https besides the system's roots.
    pub fn new(
        origin: &str,
        ca: Option<PathBuf>,
        name: &str,
        actions: &'static [&'static str],
        auth: Auth,
    ) -> Result<Repository, String> {
        let registry = Upstream::new(&crate::config::Upstream::at(origin, ca.clone()))?;
        Ok(Repository::at(registry, ca, name, actions, auth))
    }

    /// `name` at `registry`, a client already made (its pool is shared).
    pub fn at(
        registry: Upstream,
        ca: Option<PathBuf>,
        name: &str,
        actions: &'static [&'static str],
        auth: Auth,
    ) -> Repository {
        let authorization = match &auth {
            Auth::Token(token) => Some(token.clone()),
            _ => None,
        };
        Repository {
            registry,
            ca,
            name: name.to_string(),
            actions,
            auth,
            authorization: Mutex::new(authorization),
        }
    }

    /// The repository's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest `point` (a tag or digest) names: its digest (of the bytes served) and
    /// its bytes.
    pub async fn manifest(&self, point: &str) -> Result<(String, Bytes), String> {
        let path = format!("/v2/{}/manifests/{point}", self.name);
        let answer = <Self as Reader>::get(self, &path, MAX_MANIFEST).await?;
        if answer.0 != StatusCode::OK {
            return Err(format!("{}:{point} answered {}", self.name, answer.0));
        }
        Ok((crate::console::manifest::digest_of(&answer.1), answer.1))
    }

    /// The blob `digest`, at most `limit` bytes, checked against its digest.
    pub async fn blob(&self, digest: &str, limit: usize) -> Result<Bytes, String> {
        let path = format!("/v2/{}/blobs/{digest}", self.name);
        let (status, body) = <Self as Reader>::get(self, &path, limit).await?;
        if status != StatusCode::OK {
            return Err(format!("{path} answered {status}"));
        }
        if crate::console::manifest::digest_of(&body) != digest {
            return Err(format!("{path}: the registry served other bytes"));
        }
        Ok(body)
    }

    /// Uploads `blob` unless the repository has it; returns its digest.
    pub async fn push_blob(&self, blob: Bytes) -> Result<String, String> {
        let digest = crate::console::manifest::digest_of(&blob);
        let path = format!("/v2/{}/blobs/{digest}", self.name);
        let there = self
            .send(Method::HEAD, &path, HeaderMap::new(), Bytes::new(), 0)
            .await?;
        if there.status == StatusCode::OK {
            return Ok(digest);
        }
        let start = format!("/v2/{}/blobs/uploads/", self.name);
        let started = self
            .send(
                Method::POST,
                &start,
                HeaderMap::new(),
                Bytes::new(),
                MAX_ANSWER,
            )
            .await?;
        let location = started
            .headers
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.parse::<hyper::Uri>().ok())
            .filter(|_| started.status == StatusCode::ACCEPTED)
            .ok_or_else(|| said(&start, &started))?;
        let separator = if location.query().is_some() { '&' } else { '?' };
        let put = format!("{}{separator}digest={digest}", path_of(&location));
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let answer = self
            .send(Method::PUT, &put, headers, blob, MAX_ANSWER)
            .await?;
        if answer.status != StatusCode::CREATED {
            return Err(said(&put, &answer));
        }
        Ok(digest)
    }

    /// PUTs `manifest` (of `media_type`) under `point`; returns its digest.
    pub async fn push_manifest(
        &self,
        point: &str,
        manifest: Bytes,
        media_type: &'static str,
    ) -> Result<String, String> {
        let digest = crate::console::manifest::digest_of(&manifest);
        let path = format!("/v2/{}/manifests/{point}", self.name);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
        let answer = self
            .send(Method::PUT, &path, headers, manifest, MAX_ANSWER)
            .await?;
        if answer.status != StatusCode::CREATED {
            return Err(said(&path, &answer));
        }
        Ok(digest)
    }

    /// Sends a request with the credentials that worked last, its answer read whole (at
    /// most `limit` bytes); a 401 is answered once as its challenge asks (a token from the
    /// realm, Basic, or a freshly signed token).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
        limit: usize,
    ) -> Result<Fetched, String> {
        let mut authorization = self
            .authorization
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if authorization.is_none()
            && let Auth::Minted(mint) = &self.auth
        {
            authorization = Some(bearer(&mint(&self.name, self.actions)?)?);
        }
        for attempt in 0..2 {
            let mut sent = headers.clone();
            if let Some(authorization) = &authorization {
                sent.insert(AUTHORIZATION, authorization.clone());
            }
            let answer = self
                .registry
                .exchange(method.clone(), path, sent, body.clone(), limit)
                .await
                .map_err(|e| e.to_string())?;
            if answer.status != StatusCode::UNAUTHORIZED {
                *self
                    .authorization
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = authorization;
                return Ok(answer);
            }
            if attempt == 1 {
                let who = match &self.auth {
                    Auth::Anonymous => "a request without credentials".to_string(),
                    Auth::Minted(_) | Auth::Token(_) => {
                        "Portcullis's own token (does it trust [token] certificate?)".to_string()
                    }
                    Auth::Login { username, .. } => format!("the login of {username:?}"),
                };
                return Err(format!("{path}: the registry refused {who} (401)"));
            }
            let challenge = answer
                .headers
                .get(WWW_AUTHENTICATE)
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default()
                .to_string();
            authorization = Some(self.answer(&challenge).await?);
        }
        Err(format!(
            "{path}: the registry refused every credential (401)"
        ))
    }

    /// What answers `challenge` (a `WWW-Authenticate` value).
    async fn answer(&self, challenge: &str) -> Result<HeaderValue, String> {
        let (scheme, parameters) = challenge.split_once(' ').unwrap_or((challenge, ""));
        match (&self.auth, scheme.to_ascii_lowercase().as_str()) {
            (Auth::Minted(mint), _) => bearer(&mint(&self.name, self.actions)?),
            (Auth::Token(_), _) => Err(format!(
                "the registry refused Portcullis's own token ({challenge}): does it trust \
                 [token] certificate?"
            )),
            (Auth::Login { username, password }, "basic") => basic(username, password),
            (_, "bearer") => self.token(&parameters_of(parameters)).await,
            (Auth::Anonymous, _) => Err(format!(
                "the registry asks for credentials ({challenge}): set \
                 [registries.\"<host:port>\"] username and password_file"
            )),
            (Auth::Login { .. }, _) => Err(format!(
                "the registry asks for an unknown kind of credentials: {challenge}"
            )),
        }
    }

    /// A token from the realm a Bearer challenge names, for this repository's actions.
    async fn token(&self, challenge: &[(String, String)]) -> Result<HeaderValue, String> {
        let get = |key: &str| {
            challenge
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let realm = get("realm").ok_or("the registry's Bearer challenge names no realm")?;
        let uri: hyper::Uri = realm
            .parse()
            .map_err(|e| format!("the token realm {realm:?}: {e}"))?;
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(service) = get("service") {
                query.append_pair("service", service);
            }
            query.append_pair(
                "scope",
                &format!("repository:{}:{}", self.name, self.actions.join(",")),
            );
            query.finish()
        };
        let path = format!("{}?{query}", uri.path());
        let realm_client = Upstream::new(&crate::config::Upstream::at(&origin, self.ca.clone()))?;
        let mut headers = HeaderMap::new();
        if let Auth::Login { username, password } = &self.auth {
            headers.insert(AUTHORIZATION, basic(username, password)?);
        }
        let answer = realm_client
            .fetch(Method::GET, &path, headers, MAX_ANSWER)
            .await
            .map_err(|e| e.to_string())?;
        if answer.status != StatusCode::OK {
            return Err(format!(
                "the token realm {realm} refused: {}",
                said(&path, &answer)
            ));
        }
        #[derive(serde::Deserialize)]
        struct Issued {
            token: Option<String>,
            access_token: Option<String>,
        }
        let issued: Issued = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("the token realm {realm} answered no token: {e}"))?;
        let token = issued
            .token
            .or(issued.access_token)
            .ok_or_else(|| format!("the token realm {realm} answered no token"))?;
        bearer(&token)
    }
}

impl Reader for Repository {
    async fn get(&self, path: &str, limit: usize) -> Result<(StatusCode, Bytes), String> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_TYPE));
        let answer = self
            .send(Method::GET, path, headers, Bytes::new(), limit)
            .await?;
        Ok((answer.status, answer.body))
    }
}

fn bearer(token: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| format!("a bad token: {e}"))
}

fn basic(username: &str, password: &str) -> Result<HeaderValue, String> {
    let encoded = data_encoding::BASE64.encode(format!("{username}:{password}").as_bytes());
    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| format!("bad credentials: {e}"))
}

/// The `key="value"` pairs of a challenge.
fn parameters_of(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        pairs.push((key, value.to_string()));
        rest = next.trim_start_matches(',').trim();
    }
    pairs
}

/// The path and query of an upload's `Location` (absolute or not).
pub fn path_of(location: &hyper::Uri) -> String {
    location
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| location.path().to_string())
}

/// What the registry answered to `path`, for an error.
pub fn said(path: &str, answer: &Fetched) -> String {
    let body = String::from_utf8_lossy(&answer.body);
    let body: String = body.chars().take(200).collect();
    format!("{path} answered {}: {}", answer.status, body.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry_and_a_tag_or_digest() {
        let tagged = Reference::parse("127.0.0.1:5000/policies/acl:stable").expect("parses");
        assert_eq!(tagged.registry, "127.0.0.1:5000");
        assert_eq!(tagged.repository, "policies/acl");
        assert_eq!(tagged.point(), "stable");
        assert_eq!(tagged.origin(), "http://127.0.0.1:5000");
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned =
            Reference::parse(&format!("registry.example.com/acl:v1@{digest}")).expect("parses");
        assert_eq!(pinned.point(), digest);
        assert_eq!(pinned.origin(), "https://registry.example.com");
        assert_eq!(
            pinned.to_string(),
            format!("registry.example.com/acl:v1@{digest}")
        );
        for bad in [
            "acl:stable",
            "policies/acl:stable",
            "registry.example.com/acl",
            "registry.example.com/Acl:v1",
            "registry.example.com/acl@sha256:abc",
            "registry.example.com/acl:-v1",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn challenges_are_read_with_quotes_and_commas() {
        let pairs = parameters_of(
            r#"realm="https://auth.example.invalid/token",service="registry",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            pairs,
            [
                (
                    "realm".to_string(),
                    "https://auth.example.invalid/token".to_string()
                ),
                ("service".to_string(), "registry".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
            ]
        );
    }
}
