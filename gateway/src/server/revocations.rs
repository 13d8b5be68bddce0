//! Revoking personal tokens, and revocations kept in the registry itself
//! (`[console] revoked_tokens_repository`): one tag `r<id>` per revoked id, each on a small
//! manifest of its own, so that replicas sharing no file system read one set (polled) and
//! never overwrite one another's writes. Nobody reaches that repository through Portcullis.

use crate::identity::{Revocation, RevocationStore, Revoked, personal};
use crate::policy::{Outcome, Request as PolicyRequest, Said};
use crate::proxy::{Fetched, Upstream};
use crate::server::App;
use crate::token::Access;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{HeaderMap, Method, StatusCode};

/// The subject of the tokens Portcullis signs for itself in token-server mode.
const SUBJECT: &str = "portcullis-revocations";
/// Tags read per page of the tag list.
const PAGE: usize = 1000;
/// Pages read at most: 100 000 revoked ids of live tokens is far beyond any use.
const MAX_PAGES: usize = 100;
/// Revocations of ended tokens deleted along with each new one, so the set stays small
/// without a sweep of its own.
const DROPPED_PER_REVOCATION: usize = 16;
/// Answers of the registry read at most (a tag list page, an error).
const MAX_ANSWER: usize = 1 << 20;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI empty descriptor's blob, `{}`: config and only layer of every revocation.
const EMPTY: &[u8] = b"{}";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

impl App {
    /// Revokes `id` (a token ending at `until`, when known) for every replica, asked by
    /// `by` and noted with `note` where the store keeps notes. False when it was revoked
    /// already.
    pub(super) async fn revoke(
        &self,
        id: &str,
        until: Option<u64>,
        by: &str,
        note: &str,
    ) -> Result<bool, String> {
        let personal = self
            .identity
            .personal()
            .ok_or("personal tokens are off ([console] token_max_days = 0)")?;
        let Revocation::New { until } = personal.admit(id, until, by)? else {
            return Ok(false);
        };
        let written = match personal.store() {
            RevocationStore::File(path) => personal::write_to_file(path, id, until, note)?,
            RevocationStore::Registry(name) => {
                let repository = self.revocation_repository(name)?;
                let written = repository.add(id).await?;
                let ended: Vec<String> = personal
                    .revoked()
                    .ended(crate::identity::unix_now())
                    .take(DROPPED_PER_REVOCATION)
                    .map(str::to_string)
                    .collect();
                repository.drop_ended(&ended).await;
                written
            }
        };
        personal.remember(id, until);
        Ok(written)
    }

    /// Reads the revocations again when the registry keeps them (files are watched). A
    /// failed read keeps the last set and says why in `/status`.
    pub(super) async fn poll_revocations(&self) {
        let Some(personal) = self.identity.personal() else {
            return;
        };
        let store = personal.store();
        let RevocationStore::Registry(name) = store else {
            return;
        };
        let read = match self.revocation_repository(name) {
            Ok(repository) => repository.tags().await,
            Err(e) => Err(e),
        };
        match read {
            Ok(tags) => {
                let revoked = Revoked::from_tags(store, tags.iter().map(String::as_str));
                personal.set_revoked(revoked);
            }
            Err(why) => {
                let last = personal.revoked();
                if last.problems().iter().all(|p| p.message != why) {
                    tracing::warn!(%store, error = %why, "cannot read the revoked personal tokens; the last set read stays");
                }
                personal.set_revoked(last.kept_after(store, why));
            }
        }
    }

    /// Nobody is granted anything on the repository that keeps the revocations: its answer
    /// when `request` is for it.
    pub(super) fn reserved(&self, request: &PolicyRequest) -> Option<Outcome> {
        self.is_reserved(request).then(|| Outcome {
            granted: Vec::new(),
            answers: vec![Said {
                policy: "portcullis".into(),
                digest: String::new(),
                granted: Vec::new(),
                reason: Some(
                    "this repository keeps the revoked personal tokens ([console] \
                         revoked_tokens_repository): nobody reaches it through Portcullis"
                        .into(),
                ),
                rule: None,
                fault: None,
            }],
        })
    }

    /// The repository of the registry that keeps the revocations, if one does.
    pub(super) fn revocations_repository(&self) -> Option<&str> {
        match self.identity.personal()?.store() {
            RevocationStore::Registry(name) => Some(name),
            RevocationStore::File(_) => None,
        }
    }

    /// Whether `request` is for the repository that keeps the revocations.
    pub(super) fn is_reserved(&self, request: &PolicyRequest) -> bool {
        let scope = &request.scope;
        scope.type_ == "repository" && self.revocations_repository() == Some(&scope.name)
    }

    /// The repository `name` at the registry this config reads, with what lets us in: in
    /// gateway mode the registry trusts the gateway; in token-server mode a token we sign.
    fn revocation_repository<'a>(&'a self, name: &'a str) -> Result<Repository<'a>, String> {
        if let Some(upstream) = &self.upstream {
            return Ok(Repository {
                registry: upstream,
                name,
                bearer: None,
            });
        }
        let registry = self
            .console
            .as_ref()
            .and_then(|console| console.registry.as_ref())
            .ok_or("no registry to keep revocations in ([console] registry_url)")?;
        let access = Access {
            resource_type: "repository".into(),
            class: None,
            name: name.to_string(),
            actions: ["pull", "push", "delete"].map(String::from).to_vec(),
        };
        let bearer = self.bearer(SUBJECT, access).map_err(|e| e.to_string())?;
        Ok(Repository {
            registry,
            name,
            bearer: Some(bearer),
        })
    }
}

/// The repository of the registry that keeps the revocations.
struct Repository<'a> {
    registry: &'a Upstream,
    name: &'a str,
    /// `Bearer <token>` in token-server mode.
    bearer: Option<HeaderValue>,
}

impl Repository<'_> {
    /// Every tag, page by page.
    async fn tags(&self) -> Result<Vec<String>, String> {
        let mut tags = Vec::new();
        let mut next = Some(format!("/v2/{}/tags/list?n={PAGE}", self.name));
        for _ in 0..MAX_PAGES {
            let Some(path) = next.take() else {
                return Ok(tags);
            };
            let answer = self
                .send(Method::GET, &path, HeaderMap::new(), Bytes::new())
                .await?;
            if answer.status == StatusCode::NOT_FOUND
                && error_code(&answer).as_deref() == Some("NAME_UNKNOWN")
            {
                // Nothing was ever revoked here.
                return Ok(tags);
            }
            if answer.status != StatusCode::OK {
                return Err(said(&path, &answer));
            }
            #[derive(serde::Deserialize)]
            struct Page {
                tags: Option<Vec<String>>,
            }
            let page: Page = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("GET {path}: not a tag list: {e}"))?;
            tags.extend(page.tags.unwrap_or_default());
            next = answer
                .headers
                .get(hyper::header::LINK)
                .and_then(|link| link.to_str().ok())
                .and_then(next_page);
        }
        Err(format!(
            "{} holds more than {} tags: delete the ones of ended tokens",
            self.name,
            PAGE * MAX_PAGES
        ))
    }

    /// Tags the revocation of `id`; false when the tag was there already (another replica
    /// revoked it).
    async fn add(&self, id: &str) -> Result<bool, String> {
        let tag = personal::tag(id);
        let path = format!("/v2/{}/manifests/{tag}", self.name);
        let mut accept = HeaderMap::new();
        accept.insert(ACCEPT, HeaderValue::from_static(MANIFEST_TYPE));
        let there = self.send(Method::HEAD, &path, accept, Bytes::new()).await?;
        if there.status == StatusCode::OK {
            return Ok(false);
        }
        self.put_empty_blob().await?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(MANIFEST_TYPE));
        let answer = self.send(Method::PUT, &path, headers, manifest(id)).await?;
        if answer.status != StatusCode::CREATED {
            return Err(said(&path, &answer));
        }
        Ok(true)
    }

    /// Deletes the revocations of these ended tokens (by their manifests' digests, which
    /// only they have). A registry with deletes off keeps them: said once in the log.
    async fn drop_ended(&self, ids: &[String]) {
        for id in ids {
            let path = format!(
                "/v2/{}/manifests/{}",
                self.name,
                super::facts::digest_of(&manifest(id))
            );
            match self
                .send(Method::DELETE, &path, HeaderMap::new(), Bytes::new())
                .await
            {
                Ok(answer)
                    if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND => {}
                Ok(answer) => {
                    tracing::info!(
                        answer = %said(&path, &answer),
                        "revocations of ended tokens are kept: the registry does not delete \
                         them (storage delete enabled: true lets it)"
                    );
                    return;
                }
                Err(e) => {
                    tracing::info!(error = %e, "cannot delete the revocation of an ended token");
                    return;
                }
            }
        }
    }

    /// Uploads `{}` unless the repository has it.
    async fn put_empty_blob(&self) -> Result<(), String> {
        let blob = format!("/v2/{}/blobs/{EMPTY_DIGEST}", self.name);
        if self
            .send(Method::HEAD, &blob, HeaderMap::new(), Bytes::new())
            .await?
            .status
            == StatusCode::OK
        {
            return Ok(());
        }
        let start = format!("/v2/{}/blobs/uploads/", self.name);
        let started = self
            .send(Method::POST, &start, HeaderMap::new(), Bytes::new())
            .await?;
        let location = started
            .headers
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.parse::<hyper::Uri>().ok())
            .filter(|_| started.status == StatusCode::ACCEPTED)
            .ok_or_else(|| said(&start, &started))?;
        let separator = if location.query().is_some() { '&' } else { '?' };
        let put = format!(
            "{}{separator}digest={EMPTY_DIGEST}",
            location_path(&location)
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let answer = self
            .send(Method::PUT, &put, headers, Bytes::from_static(EMPTY))
            .await?;
        if answer.status != StatusCode::CREATED {
            return Err(said(&put, &answer));
        }
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Fetched, String> {
        if let Some(bearer) = &self.bearer {
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        self.registry
            .exchange(method, path, headers, body, MAX_ANSWER)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The manifest that revokes `id`: the same bytes every time, so its digest names it.
fn manifest(id: &str) -> Bytes {
    let empty =
        serde_json::json!({"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": EMPTY.len()});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": empty,
        "layers": [empty],
        "annotations": {"io.portcullis.revoked-token": id},
    });
    Bytes::from(manifest.to_string())
}

/// The path and query of an upload's `Location` (absolute or not).
fn location_path(location: &hyper::Uri) -> String {
    location
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| location.path().to_string())
}

/// The path of the next page a `Link` header names (`</v2/...?n=1000&last=x>; rel="next"`);
/// a registry answers with its own path, or a whole URL.
fn next_page(link: &str) -> Option<String> {
    let (target, parameters) = link.strip_prefix('<')?.split_once('>')?;
    if !parameters.contains("rel=\"next\"") {
        return None;
    }
    let uri: hyper::Uri = target.parse().ok()?;
    Some(location_path(&uri))
}

/// The registry's first error code in an answer.
fn error_code(answer: &Fetched) -> Option<String> {
    let errors: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    Some(
        errors
            .get("errors")?
            .get(0)?
            .get("code")?
            .as_str()?
            .to_string(),
    )
}

/// What the registry answered to `path`, for an error.
fn said(path: &str, answer: &Fetched) -> String {
    let body = String::from_utf8_lossy(&answer.body);
    let body: String = body.chars().take(200).collect();
    format!("{path} answered {}: {}", answer.status, body.trim())
}
