//! Facts from the registry for the policies (gateway mode): what a tag names now, the digest
//! of a manifest being pushed, which tags name a digest, and which configured keys signed the
//! manifest a pull gets. Gathered only when a policy of the serving or shadow set needs them,
//! and only for the operations they concern; each lookup is bounded, and a registry that
//! cannot answer fails the request closed, saying why.

use crate::console::manifest::{ACCEPT, MAX_MANIFEST_BYTES};
use crate::policy::{
    Facts, Kind, Needs, Operation, Outcome, Reference, Request as PolicyRequest, Said, Signatures,
    TagNow,
};
use crate::proxy::Upstream;
use crate::server::App;
use crate::signatures::{self, Keys};
use hyper::body::Bytes;
use hyper::header::{ACCEPT as ACCEPT_HEADER, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Tags a delete by digest is checked against at most: beyond, the delete is refused.
const MAX_TAGS: usize = 1000;
/// A registry answers a HEAD of a tag being rewritten at that moment with a 500 now and
/// then (distribution 2.8): asked again this many times, waiting twice as long each time.
const RETRIES: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_millis(20);
/// The registry's answers read at most (a tag list; a HEAD has none).
const MAX_LIST_BYTES: usize = 1 << 20;

/// What gathering a fact found wrong: said in the refusal.
pub(super) type FactError = String;

impl App {
    /// What the serving and shadow sets need, together.
    pub(super) fn needs(&self) -> Needs {
        let serving = self.policies.current().needs();
        match &self.shadow {
            Some(shadow) => serving | shadow.policies().current().needs(),
            None => serving,
        }
    }

    /// Sets the time of the decision when a policy needs it.
    pub(super) fn stamp(&self, request: &mut PolicyRequest) {
        if self.needs().contains(Needs::TIME) {
            request.time = crate::identity::unix_now();
        }
    }

    /// Whether a manifest PUT's body must be read before the decision, for its digest.
    pub(super) fn needs_pushed_digest(&self) -> bool {
        self.needs().contains(Needs::TAG_DIGEST)
    }

    /// The facts `operation` on `repository` calls for, given what the policies need;
    /// `pushed` is the digest of a manifest PUT's body, when it was read.
    pub(super) async fn facts(
        &self,
        repository: &str,
        operation: &Operation,
        pushed: Option<&str>,
        accept: Option<&HeaderValue>,
    ) -> Result<Facts, FactError> {
        let mut facts = Facts::none();
        let needs = self.needs();
        let Some(upstream) = &self.upstream else {
            return Ok(facts);
        };
        if operation.kind != Kind::Manifest {
            return Ok(facts);
        }
        let registry = Registry {
            upstream,
            repository,
        };
        match (operation.method.as_str(), &operation.reference) {
            ("PUT" | "DELETE", Some(Reference::Tag(tag))) if needs.contains(Needs::TAG_DIGEST) => {
                facts.tag_digest = Some(registry.tag(tag, None).await?);
                facts.pushed_digest = pushed.map(str::to_string);
            }
            ("GET" | "HEAD", Some(reference)) if needs.contains(Needs::SIGNATURES) => {
                // The manifest the client gets: what the tag names now, as it would be served
                // to this client (its Accept), or the digest it asked for.
                let digest = match reference {
                    Reference::Digest(digest) => digest.clone(),
                    Reference::Tag(tag) => match registry.tag(tag, accept).await? {
                        TagNow::At(digest) => digest,
                        TagNow::Absent => String::new(),
                    },
                };
                let keys = if digest.is_empty() {
                    Vec::new()
                } else {
                    registry.signed_by(&digest, &self.signature_keys()).await?
                };
                facts.signatures = Some(Signatures { digest, keys });
            }
            ("DELETE", Some(Reference::Digest(digest))) if needs.contains(Needs::DIGEST_TAGS) => {
                facts.digest_tags = Some(registry.tags_naming(digest).await?);
            }
            _ => {}
        }
        Ok(facts)
    }
}

/// One repository of the registry, asked by the gateway itself.
struct Registry<'a> {
    upstream: &'a Upstream,
    repository: &'a str,
}

impl Registry<'_> {
    /// What `tag` names now, as served to a client that accepts `accept` (every manifest
    /// type when None).
    async fn tag(&self, tag: &str, accept: Option<&HeaderValue>) -> Result<TagNow, FactError> {
        let path = format!("/v2/{}/manifests/{tag}", self.repository);
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT_HEADER,
            accept
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static(ACCEPT)),
        );
        let mut wait = FIRST_WAIT;
        for attempt in 0..=RETRIES {
            let answer = self
                .upstream
                .fetch(Method::HEAD, &path, headers.clone(), MAX_LIST_BYTES)
                .await
                .map_err(|e| format!("cannot tell what tag {tag:?} names now: {e}"))?;
            match answer.status {
                StatusCode::OK => {
                    let digest = answer
                        .headers
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .filter(|d| d.starts_with("sha256:") || d.starts_with("sha512:"))
                        .ok_or_else(|| {
                            format!(
                                "cannot tell what tag {tag:?} names now: the registry sent no \
                                 Docker-Content-Digest"
                            )
                        })?;
                    return Ok(TagNow::At(digest.to_string()));
                }
                StatusCode::NOT_FOUND => return Ok(TagNow::Absent),
                status if status.is_server_error() && attempt < RETRIES => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                status => {
                    return Err(format!(
                        "cannot tell what tag {tag:?} names now: the registry answered {status}"
                    ));
                }
            }
        }
        Err(format!("cannot tell what tag {tag:?} names now"))
    }

    /// The tags that name `digest` now.
    async fn tags_naming(&self, digest: &str) -> Result<Vec<String>, FactError> {
        let path = format!("/v2/{}/tags/list?n={}", self.repository, MAX_TAGS + 1);
        let answer = self
            .upstream
            .fetch(Method::GET, &path, HeaderMap::new(), MAX_LIST_BYTES)
            .await
            .map_err(|e| format!("cannot list the tags that name {digest}: {e}"))?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if answer.status != StatusCode::OK {
            return Err(format!(
                "cannot list the tags that name {digest}: the registry answered {}",
                answer.status
            ));
        }
        #[derive(serde::Deserialize)]
        struct List {
            tags: Option<Vec<String>>,
        }
        let list: List = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("cannot list the tags that name {digest}: {e}"))?;
        let tags = list.tags.unwrap_or_default();
        if tags.len() > MAX_TAGS {
            return Err(format!(
                "{} has more than {MAX_TAGS} tags: which of them name {digest} is not checked; \
                 delete by tag",
                self.repository
            ));
        }
        let mut naming = Vec::new();
        for tag in tags {
            if matches!(self.tag(&tag, None).await?, TagNow::At(named) if named == digest) {
                naming.push(tag);
            }
        }
        Ok(naming)
    }
}

impl App {
    /// The policies' answer to a request of the gateway's own (the console's reads and
    /// deletes), with the facts its operation calls for, as the gateway decides a client's.
    pub(super) async fn decide_gathered(
        self: &Arc<Self>,
        source: crate::decision_log::Source,
        mut request: PolicyRequest,
    ) -> Arc<Outcome> {
        if let Some(operation) = &request.operation {
            match self.facts(&request.scope.name, operation, None, None).await {
                Ok(facts) => request.facts = facts,
                Err(why) => {
                    let outcome = Arc::new(unknown(&why));
                    self.observe(source, &request, &outcome, false, Duration::ZERO);
                    return outcome;
                }
            }
        }
        self.decide(source, request).await
    }

    /// The configured signature key names.
    pub(super) fn signature_key_names(&self) -> Vec<String> {
        self.signature_keys().names().map(str::to_string).collect()
    }

    /// The keys with a valid signature over `digest` in `repository` (gateway mode), for the
    /// console's image page; None in token-server mode.
    pub(super) async fn signatures_of(
        &self,
        repository: &str,
        digest: &str,
    ) -> Option<Result<Vec<String>, FactError>> {
        let upstream = self.upstream.as_ref()?;
        let registry = Registry {
            upstream,
            repository,
        };
        Some(registry.signed_by(digest, &self.signature_keys()).await)
    }

    /// In token-server mode the registry serves requests itself and no fact exists: the
    /// actions the needed facts guard are withheld (push and delete for the tag facts, pull
    /// for signatures), saying so, and the rest stand as the policies decided.
    pub(super) fn factless(&self, request: &PolicyRequest, outcome: Arc<Outcome>) -> Arc<Outcome> {
        if self.upstream.is_some() || request.scope.type_ != "repository" {
            return outcome;
        }
        let needs = self.needs();
        let mut guarded = Vec::new();
        if needs.contains(Needs::TAG_DIGEST) || needs.contains(Needs::DIGEST_TAGS) {
            guarded.extend(["push", "delete"]);
        }
        if needs.contains(Needs::SIGNATURES) {
            guarded.push("pull");
        }
        let guards = |action: &String| action == "*" || guarded.contains(&action.as_str());
        if guarded.is_empty() || !outcome.granted.iter().any(guards) {
            return outcome;
        }
        let granted: Vec<String> = outcome
            .granted
            .iter()
            .filter(|a| !guards(a))
            .cloned()
            .collect();
        let mut answers = outcome.answers.clone();
        answers.push(Said {
            policy: "portcullis".into(),
            digest: String::new(),
            granted: granted.clone(),
            reason: Some(format!(
                "the policies decide {} with facts from the registry that only gateway mode \
                 gathers: refused in token-server mode",
                guarded.join(" and ")
            )),
            rule: None,
            fault: None,
        });
        Arc::new(Outcome { granted, answers })
    }
}

/// The answer when a fact a policy needs could not be gathered: nothing granted, and why.
pub(super) fn unknown(why: &str) -> Outcome {
    Outcome {
        granted: Vec::new(),
        answers: vec![Said {
            policy: "portcullis".into(),
            digest: String::new(),
            granted: Vec::new(),
            reason: Some(why.to_string()),
            rule: None,
            fault: None,
        }],
    }
}

impl Registry<'_> {
    /// The keys with a valid cosign signature over `digest` in this repository: each layer
    /// of the `sha256-<hex>.sig` manifest is a payload and a signature; a signature counts
    /// when it verifies over the payload's bytes with a key and the payload names exactly
    /// this digest and repository. Remembered by the signature manifest's digest. A lookup
    /// that fails fails the request: an unreadable signature is not an absent one.
    async fn signed_by(&self, digest: &str, keys: &Keys) -> Result<Vec<String>, FactError> {
        let cannot = |why: String| format!("cannot read the signatures of {digest}: {why}");
        let Some((manifest, body)) = signatures::manifest_of(self, self.repository, digest)
            .await
            .map_err(cannot)?
        else {
            return Ok(Vec::new());
        };
        if let Some(found) = keys.remembered(&manifest, digest, self.repository) {
            return Ok(found);
        }
        let stored = signatures::stored_in(self, self.repository, &body)
            .await
            .map_err(cannot)?;
        let found = keys.signers(&stored, digest, self.repository, None);
        keys.remember(&manifest, digest, self.repository, found.clone());
        Ok(found)
    }
}

impl signatures::Reader for Registry<'_> {
    async fn get(&self, path: &str, limit: usize) -> Result<(StatusCode, Bytes), String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT_HEADER,
            HeaderValue::from_static(crate::oci::MANIFEST_TYPE),
        );
        self.upstream
            .fetch(Method::GET, path, headers, limit)
            .await
            .map(|answer| (answer.status, answer.body))
            .map_err(|e| e.to_string())
    }
}

/// The digest of a manifest's bytes, as the registry computes it.
pub(super) fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Manifests larger than this are refused when their digest must be known first.
pub(super) const MAX_PUSHED_MANIFEST: usize = MAX_MANIFEST_BYTES;
