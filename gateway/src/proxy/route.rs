//! Which registry API request a path is, and the access it needs (distribution's
//! `handlers/app.go` table): every path the gateway forwards is parsed here first, strictly,
//! so that the repository it authorizes is the one the registry will serve.

use crate::policy::{Kind, Operation, Reference, Scope};
use crate::scope::validate_name;
use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Method};

/// A parsed `/v2/` request.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method, as the policies see it.
    pub method: Method,
    /// What the request reaches.
    pub target: Target,
}

/// The resource a request reaches.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/v2/`: the API version check; any authenticated caller may make it.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// Anything under `/v2/<name>/`.
    Repository {
        /// The repository.
        name: String,
        /// Manifest, blob, upload, tags or referrers.
        kind: Kind,
        /// The tag or digest the path (or an upload's `digest=`) names.
        reference: Option<Reference>,
        /// A cross-repository mount: `?mount=<digest>&from=<repository>`.
        mount: Option<Mount>,
        /// A manifest PUT's `?tag=` parameters: more tags the registry may write (the OCI
        /// spec's newer text), each decided as a tag push.
        tags: Vec<String>,
    },
}

/// `POST .../blobs/uploads/?mount=<digest>&from=<repository>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The blob to mount.
    pub digest: String,
    /// The repository it is mounted from.
    pub from: String,
}

/// Why a path is not a registry request the gateway forwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such registry endpoint.
    #[error("no registry endpoint at this path")]
    NotFound,
    /// The endpoint exists; the method does not.
    #[error("{0} is not supported on this endpoint")]
    MethodNotAllowed(Method),
    /// A malformed name, reference or query: the registry error code and why.
    #[error("{1}")]
    Invalid(&'static str, String),
    /// Something that cannot exist (a manifest by a reference that is neither a tag nor a
    /// digest): the registry error code and why, answered 404 as the registry does.
    #[error("{1}")]
    Unknown(&'static str, String),
}

/// The action every repository scope lists first: reading is needed for everything but
/// deletion, as in the registry.
const PULL: &str = "pull";

impl Route {
    /// Parses the raw (still percent-encoded) path and query of a request under `/v2/`, and
    /// refuses headers that would let the registry read parameters from elsewhere.
    pub fn parse(
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Route, RouteError> {
        let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?;
        // The registry decodes the path before routing; we refuse instead of decoding, so no
        // encoded `/` or `.` can make it see a different repository than we authorized.
        if rest.contains('%') {
            return Err(RouteError::Invalid(
                "NAME_INVALID",
                "percent-encoded characters are not allowed in registry paths".into(),
            ));
        }
        let params = Params::parse(query)?;
        no_form_body(method, headers)?;
        let target = if rest.is_empty() {
            allow(method, &[Method::GET, Method::HEAD])?;
            Target::Base
        } else if rest == "_catalog" {
            allow(method, &[Method::GET])?;
            Target::Catalog
        } else {
            repository_target(method, rest, &params)?
        };
        Ok(Route {
            method: method.clone(),
            target,
        })
    }

    /// The scopes this request needs, each with the operation the policies see. Empty for
    /// `/v2/`, which needs only an authenticated caller.
    pub fn needs(&self) -> Vec<(Scope, Operation)> {
        let method = self.method.as_str().to_string();
        match &self.target {
            Target::Base => Vec::new(),
            Target::Catalog => vec![(
                scope("registry", "catalog", &["*"]),
                Operation {
                    method,
                    kind: Kind::Catalog,
                    reference: None,
                    mount_from: None,
                },
            )],
            Target::Repository {
                name,
                kind,
                reference,
                mount,
                tags,
            } => {
                let actions: &[&str] = match self.method {
                    Method::GET | Method::HEAD => &[PULL],
                    Method::DELETE => &["delete"],
                    _ => &[PULL, "push"],
                };
                let operation = Operation {
                    method,
                    kind: *kind,
                    reference: reference.clone(),
                    mount_from: mount.as_ref().map(|m| m.from.clone()),
                };
                let mut needs = vec![(scope("repository", name, actions), operation.clone())];
                if let Some(mount) = mount {
                    needs.push((scope("repository", &mount.from, &[PULL]), operation.clone()));
                }
                for tag in tags {
                    let tagged = Operation {
                        reference: Some(Reference::Tag(tag.clone())),
                        ..operation.clone()
                    };
                    needs.push((scope("repository", name, actions), tagged));
                }
                needs
            }
        }
    }
}

fn scope(resource_type: &str, name: &str, actions: &[&str]) -> Scope {
    Scope {
        type_: resource_type.to_string(),
        class: None,
        name: name.to_string(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    }
}

fn allow(method: &Method, allowed: &[Method]) -> Result<(), RouteError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(RouteError::MethodNotAllowed(method.clone()))
    }
}

/// Matches from the end of the path, in the registry's route order: the name is everything
/// before the endpoint's fixed segments, and must then pass the name grammar.
fn repository_target(method: &Method, rest: &str, params: &Params) -> Result<Target, RouteError> {
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    if n < 3 {
        return Err(RouteError::NotFound);
    }
    let (name_len, kind, reference, allowed): (usize, Kind, Option<Reference>, &[Method]) =
        match (segments[n - 3], segments[n - 2], segments[n - 1]) {
            (_, "manifests", reference) => (
                n - 2,
                Kind::Manifest,
                Some(tag_or_digest(reference).map_err(|e| match (method, e) {
                    // A read of what cannot exist, answered as the registry answers it.
                    (&Method::GET | &Method::HEAD, RouteError::Invalid(_, why)) => {
                        RouteError::Unknown("MANIFEST_UNKNOWN", why)
                    }
                    (_, e) => e,
                })?),
                &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            ),
            ("blobs", "uploads", "") => (
                n - 3,
                Kind::Upload,
                params.digest.as_deref().map(digest).transpose()?,
                &[Method::POST],
            ),
            ("blobs", "uploads", uuid) => {
                if !uuid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
                {
                    return Err(RouteError::Invalid(
                        "BLOB_UPLOAD_INVALID",
                        format!("{uuid:?} is not an upload id"),
                    ));
                }
                (
                    n - 3,
                    Kind::Upload,
                    params.digest.as_deref().map(digest).transpose()?,
                    &[Method::GET, Method::PATCH, Method::PUT, Method::DELETE],
                )
            }
            (_, "blobs", reference) => (
                n - 2,
                Kind::Blob,
                Some(digest(reference)?),
                &[Method::GET, Method::HEAD, Method::DELETE],
            ),
            (_, "tags", "list") => (n - 2, Kind::Tags, None, &[Method::GET]),
            (_, "referrers", reference) => (
                n - 2,
                Kind::Referrers,
                Some(digest(reference)?),
                &[Method::GET],
            ),
            _ => return Err(RouteError::NotFound),
        };
    let name = segments[..name_len].join("/");
    repository_name(&name)?;
    allow(method, allowed)?;
    let writes = !matches!(*method, Method::GET | Method::HEAD);
    let tags = match (kind, method) {
        (Kind::Manifest, &Method::PUT) => params.tags.clone(),
        _ => Vec::new(),
    };
    if writes {
        // The registry executes exactly what was authorized: a parameter the gateway does
        // not understand could change what is written, so it is refused, not passed on.
        let understood: &[&str] = match kind {
            Kind::Upload => &["digest", "mount", "from", "_state"],
            Kind::Manifest if *method == Method::PUT => &["tag"],
            _ => &[],
        };
        if let Some(other) = params
            .keys
            .iter()
            .find(|k| !understood.contains(&k.as_str()))
        {
            return Err(RouteError::Invalid(
                "UNSUPPORTED",
                format!(
                    "query parameter `{other}` is not understood here: the registry could act \
                     on it without it being authorized"
                ),
            ));
        }
    }
    let mount = match (kind, &params.mount, &params.from) {
        (Kind::Upload, Some(blob), Some(from)) if *method == Method::POST => {
            repository_name(from)?;
            digest(blob)?;
            Some(Mount {
                digest: blob.clone(),
                from: from.clone(),
            })
        }
        _ => None,
    };
    Ok(Target::Repository {
        name,
        kind,
        reference,
        mount,
        tags,
    })
}

/// A repository name in a path: the reference grammar without a registry host.
pub fn repository_name(name: &str) -> Result<(), RouteError> {
    let invalid = |why: String| {
        RouteError::Invalid(
            "NAME_INVALID",
            format!("invalid repository name {name:?}: {why}"),
        )
    };
    if name.contains(':') {
        return Err(invalid("a name in a path has no host or port".into()));
    }
    validate_name(name).map_err(invalid)
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or a digest.
pub fn tag_or_digest(reference: &str) -> Result<Reference, RouteError> {
    if reference.contains(':') {
        return digest(reference);
    }
    let bytes = reference.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(Reference::Tag(reference.to_string()))
    } else {
        Err(RouteError::Invalid(
            "TAG_INVALID",
            format!("{reference:?} is neither a tag nor a digest"),
        ))
    }
}

/// A digest the registry can verify: `sha256:`, `sha384:` or `sha512:` and that many
/// lowercase hex digits. Anything else the registry would read as a tag (and fail on), or
/// refuse, so it is refused here before anything is decided.
fn digest(value: &str) -> Result<Reference, RouteError> {
    let invalid = || {
        RouteError::Invalid(
            "DIGEST_INVALID",
            format!("{value:?} is not a digest (sha256:, sha384: or sha512: and its hex)"),
        )
    };
    let (algorithm, encoded) = value.split_once(':').ok_or_else(invalid)?;
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(invalid()),
    };
    let hex = encoded.len() == length
        && encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        Ok(Reference::Digest(value.to_string()))
    } else {
        Err(invalid())
    }
}

/// Refuses a body the registry would read request parameters from. It reads `mount`, `from`,
/// `digest` and `_state` with Go's `r.FormValue`, which for POST, PUT and PATCH also parses a
/// body sent as `application/x-www-form-urlencoded` (any case, with parameters) or
/// `multipart/form-data`, and prefers the body's values to the query's: a `from=` there would
/// mount a blob from a repository nobody authorized. No registry client sends a form, so any
/// hint of one is refused, as are several or unreadable `Content-Type`s (Go reads the first).
fn no_form_body(method: &Method, headers: &HeaderMap) -> Result<(), RouteError> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(RouteError::Invalid(
            "UNSUPPORTED",
            format!(
                "{why}: the registry would read request parameters from the body, which the \
                 gateway does not authorize; send them in the query"
            ),
        ))
    };
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (types.next(), types.next()) else {
        return match headers.get(CONTENT_TYPE) {
            None => Ok(()),
            Some(_) => refuse("more than one Content-Type"),
        };
    };
    let Ok(value) = value.to_str() else {
        return refuse("a Content-Type that is not plain ASCII");
    };
    let value = value.to_ascii_lowercase();
    if ["form-urlencoded", "form-data", "multipart/"]
        .iter()
        .any(|form| value.contains(form))
    {
        return refuse(&format!("a form body (Content-Type: {value})"));
    }
    Ok(())
}

/// The query parameters authorization depends on. Each may appear once: the registry reads
/// the first of repeated values, and a second one must not smuggle in another repository.
#[derive(Default)]
struct Params {
    mount: Option<String>,
    from: Option<String>,
    digest: Option<String>,
    /// Every `tag=`, each a valid tag.
    tags: Vec<String>,
    /// Every key the query holds, once each.
    keys: Vec<String>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, RouteError> {
        let mut params = Params::default();
        let Some(query) = query else {
            return Ok(params);
        };
        // Go refuses `;` as a separator; we refuse the whole query rather than guess.
        if query.contains(';') {
            return Err(RouteError::Invalid(
                "UNSUPPORTED",
                "`;` is not allowed in the query".into(),
            ));
        }
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if !params.keys.iter().any(|k| *k == key) {
                params.keys.push(key.to_string());
            }
            if key == "tag" {
                match tag_or_digest(&value)? {
                    Reference::Tag(tag) => params.tags.push(tag),
                    Reference::Digest(_) => {
                        return Err(RouteError::Invalid(
                            "TAG_INVALID",
                            format!("`tag={value}` names a digest, not a tag"),
                        ));
                    }
                }
                continue;
            }
            let slot = match key.as_ref() {
                "mount" => &mut params.mount,
                "from" => &mut params.from,
                "digest" => &mut params.digest,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(RouteError::Invalid(
                    "UNSUPPORTED",
                    format!("query parameter `{key}` is given twice"),
                ));
            }
        }
        Ok(params)
    }
}

/// The query without `mount` and `from`: a mount whose source the caller may not read is
/// forwarded as a plain upload start, and the client then uploads the blob itself.
pub fn without_mount(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let key: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            key != "mount" && key != "from"
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests;
