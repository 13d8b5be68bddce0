//! Revoking personal tokens, and revocations kept in the registry itself
//! (`[console] revoked_tokens_repository`): one tag `r<id>` per revoked id, each on a small
//! manifest of its own, so that replicas sharing no file system read one set (polled) and
//! never overwrite one another's writes. Nobody reaches that repository through Portcullis.

use crate::identity::{Revocation, RevocationStore, Revoked, personal};
use crate::oci::{Auth, MANIFEST_TYPE, Repository, path_of, said};
use crate::policy::{Outcome, Request as PolicyRequest, Said};
use crate::proxy::Fetched;
use crate::server::App;
use crate::token::Access;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, HeaderValue};
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
                let written = add(&repository, id).await?;
                let ended: Vec<String> = personal
                    .revoked()
                    .ended(crate::identity::unix_now())
                    .take(DROPPED_PER_REVOCATION)
                    .map(str::to_string)
                    .collect();
                drop_ended(&repository, &ended).await;
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
            Ok(repository) => tags(&repository).await,
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
    fn revocation_repository(&self, name: &str) -> Result<Repository, String> {
        const ACTIONS: &[&str] = &["pull", "push", "delete"];
        if let Some(upstream) = &self.upstream {
            return Ok(Repository::at(
                upstream.clone(),
                None,
                name,
                ACTIONS,
                Auth::Anonymous,
            ));
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
            actions: ACTIONS.iter().map(|a| a.to_string()).collect(),
        };
        let bearer = self.bearer(SUBJECT, access).map_err(|e| e.to_string())?;
        Ok(Repository::at(
            registry.clone(),
            None,
            name,
            ACTIONS,
            Auth::Token(bearer),
        ))
    }
}

/// Every tag of the repository, page by page.
async fn tags(repository: &Repository) -> Result<Vec<String>, String> {
    let mut tags = Vec::new();
    let mut next = Some(format!("/v2/{}/tags/list?n={PAGE}", repository.name()));
    for _ in 0..MAX_PAGES {
        let Some(path) = next.take() else {
            return Ok(tags);
        };
        let answer = repository
            .send(
                Method::GET,
                &path,
                HeaderMap::new(),
                Bytes::new(),
                MAX_ANSWER,
            )
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
        repository.name(),
        PAGE * MAX_PAGES
    ))
}

/// Tags the revocation of `id`; false when the tag was there already (another replica
/// revoked it).
async fn add(repository: &Repository, id: &str) -> Result<bool, String> {
    let tag = personal::tag(id);
    let path = format!("/v2/{}/manifests/{tag}", repository.name());
    let mut accept = HeaderMap::new();
    accept.insert(ACCEPT, HeaderValue::from_static(MANIFEST_TYPE));
    let there = repository
        .send(Method::HEAD, &path, accept, Bytes::new(), 0)
        .await?;
    if there.status == StatusCode::OK {
        return Ok(false);
    }
    repository.push_blob(Bytes::from_static(EMPTY)).await?;
    repository
        .push_manifest(&tag, manifest(id), MANIFEST_TYPE)
        .await?;
    Ok(true)
}

/// Deletes the revocations of these ended tokens (by their manifests' digests, which only
/// they have). A registry with deletes off keeps them: said once in the log.
async fn drop_ended(repository: &Repository, ids: &[String]) {
    for id in ids {
        let path = format!(
            "/v2/{}/manifests/{}",
            repository.name(),
            super::facts::digest_of(&manifest(id))
        );
        match repository
            .send(
                Method::DELETE,
                &path,
                HeaderMap::new(),
                Bytes::new(),
                MAX_ANSWER,
            )
            .await
        {
            Ok(answer) if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND => {}
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

/// The path of the next page a `Link` header names (`</v2/...?n=1000&last=x>; rel="next"`);
/// a registry answers with its own path, or a whole URL.
fn next_page(link: &str) -> Option<String> {
    let (target, parameters) = link.strip_prefix('<')?.split_once('>')?;
    if !parameters.contains("rel=\"next\"") {
        return None;
    }
    let uri: hyper::Uri = target.parse().ok()?;
    Some(path_of(&uri))
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
