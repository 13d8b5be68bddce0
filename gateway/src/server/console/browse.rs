//! Browsing for a signed-in person: the repositories, tags and images the policies let them
//! pull, and deleting what they let them delete. Every read is decided first, as gateway
//! mode decides a client's; in token-server mode the registry is then read with a token
//! minted for exactly what was granted. One exception, as in gateway mode's filtered
//! catalog: the list of names is read whole (a token for `registry:catalog:*`, never shown)
//! and only the names the person may pull leave the gateway.

use super::{Answer, Failure, Person, Visit, frame};
use crate::console::manifest::{self, ImageConfig, Kind, Referrer};
use crate::console::pages::Section;
use crate::console::pages::browse::{self, Image, PAGE};
use crate::decision_log::Source;
use crate::policy::{Kind as OperationKind, Operation, Reference, Request as PolicyRequest, Scope};
use crate::proxy::{
    CatalogPage, CatalogQuery, Fetched, UpstreamError, repository_name, tag_or_digest,
};
use crate::server::{ApiError, App};
use crate::token::Access;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Repositories decided together while filtering the list.
const BATCH: usize = 100;
/// How long a listing waits for the listing lane (shared with gateway mode's catalog).
const LISTING_WAIT: Duration = Duration::from_secs(5);
/// The most repositories the console lists: beyond, the list is cut (and says so in the log).
const MAX_REPOSITORIES: usize = 200_000;
/// Tags shown per page.
const TAGS_PAGE: usize = 100;
/// A tags page or a referrers index is small; a registry sending more is cut off.
const MAX_LIST_BYTES: usize = 4 << 20;
/// Searches longer than this are not names.
const MAX_QUERY: usize = 256;
/// The subject of the catalog-only token the console lists names with (token-server mode).
const LISTING_SUBJECT: &str = "portcullis-console";

/// `/ui/repositories?q=&page=`.
pub(super) async fn repositories(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    let query: String = visit
        .query
        .get("q")
        .map(|q| q.trim().to_lowercase())
        .unwrap_or_default()
        .chars()
        .take(MAX_QUERY)
        .collect();
    let page = visit
        .query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_REPOSITORIES / PAGE);
    let app = &visit.app;
    let names = visit
        .console
        .catalog(app.clone().list_repositories())
        .await
        .map_err(|_| {
            // The listing logged why.
            Failure::new(
                StatusCode::BAD_GATEWAY,
                "Registry unavailable",
                "The registry did not list its repositories; try again shortly.",
            )
        })?;
    // Thousands of decisions for one page: in the listing lane, as gateway mode's catalog.
    let _lane = tokio::time::timeout(LISTING_WAIT, app.lanes.listing())
        .await
        .map_err(|_| Failure::from(ApiError::Busy("too many listings at once")))?;
    // Decided in order until the page and one more are found: the one more says "Next".
    let wanted = page * PAGE + 1;
    let mut pullable = Vec::with_capacity(wanted);
    let matching = names.iter().filter(|name| name.contains(&query));
    let matching: Vec<&String> = matching.collect();
    for batch in matching.chunks(BATCH) {
        let requests = batch
            .iter()
            .map(|name| read_request(visit, person, name, OperationKind::Catalog, None))
            .collect();
        let outcomes = app.decide_all(Source::Console, requests).await;
        for (name, outcome) in batch.iter().zip(outcomes) {
            if outcome.granted.iter().any(|a| a == "pull") {
                pullable.push((*name).clone());
            }
        }
        if pullable.len() >= wanted {
            break;
        }
    }
    let more = pullable.len() > page * PAGE;
    let shown: Vec<String> = pullable
        .into_iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .collect();
    Ok(Answer::page(browse::repositories(
        &frame(visit, person, Section::Browse),
        &query,
        &shown,
        page,
        more,
    )))
}

/// `/ui/repository?name=&last=`: a repository's tags.
pub(super) async fn repository(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    let name = name_of(visit)?;
    may_pull(visit, person, &name, OperationKind::Tags, None).await?;
    let mut path = format!("/v2/{name}/tags/list?n={TAGS_PAGE}");
    if let Some(last) = visit.query.get("last") {
        tag_or_digest(last).map_err(|e| Failure::bad_request(ApiError::from(e).to_string()))?;
        path.push_str(&format!("&last={last}"));
    }
    let fetched = visit
        .app
        .console_fetch(visit, person, Method::GET, &path, None, &name, &["pull"])
        .await?;
    let (tags, next) = match fetched.status {
        StatusCode::OK => {
            let json: serde_json::Value = serde_json::from_slice(&fetched.body)
                .map_err(|e| Failure::internal(format!("{path}: not JSON: {e}")))?;
            let tags: Vec<String> = json["tags"]
                .as_array()
                .map(|tags| {
                    tags.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let more = fetched
                .headers
                .get(hyper::header::LINK)
                .is_some_and(|l| l.to_str().is_ok_and(|l| l.contains("rel=\"next\"")));
            let next = more.then(|| tags.last().cloned()).flatten();
            (tags, next)
        }
        // A repository nobody pushed to yet: nothing to show, and nothing said about others.
        StatusCode::NOT_FOUND => (Vec::new(), None),
        status => return Err(registry_refused(&path, status)),
    };
    // Echoed only when shaped like what the delete form redirects with: a link cannot make
    // the page say anything else.
    let notice = visit
        .query
        .get("deleted")
        .filter(|reference| shown_reference(reference))
        .map(|reference| format!("Deleted {reference}."));
    Ok(Answer::page(browse::repository(
        &frame(visit, person, Section::Browse),
        &name,
        &visit.app.pull_host(visit),
        &tags,
        next.as_deref(),
        notice.as_deref(),
    )))
}

/// `/ui/manifest?name=&ref=`: one image or index.
pub(super) async fn image(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    let name = name_of(visit)?;
    let (text, reference) = reference_of(visit)?;
    may_pull(
        visit,
        person,
        &name,
        OperationKind::Manifest,
        Some(reference.clone()),
    )
    .await?;
    let app = &visit.app;
    let path = format!("/v2/{name}/manifests/{text}");
    let fetched = app
        .console_fetch(
            visit,
            person,
            Method::GET,
            &path,
            Some(manifest::ACCEPT),
            &name,
            &["pull"],
        )
        .await?;
    match fetched.status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(not_found(&name)),
        status => return Err(registry_refused(&path, status)),
    }
    let content_type = fetched
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed = manifest::parse(&fetched.body, content_type)
        .map_err(|e| Failure::internal(format!("{path}: {e}")))?;
    let config = match &parsed.kind {
        Kind::Image { config, .. } => image_config(visit, person, &name, &config.digest).await,
        _ => None,
    };
    let referrers = referrers(visit, person, &name, &parsed.digest).await;
    let deletable = may(
        visit,
        person,
        &name,
        "delete",
        delete_operation(reference.clone()),
    )
    .await;
    let keys: Vec<String> = app.signature_key_names();
    let signatures = match keys.is_empty() {
        true => None,
        false => app.signatures_of(&name, &parsed.digest).await,
    };
    let moving = match &reference {
        Reference::Tag(tag) if app.needs().contains(crate::policy::Needs::TAG_DIGEST) => {
            let mut request = request(
                visit,
                person,
                &name,
                "push",
                Operation {
                    method: "PUT".into(),
                    kind: OperationKind::Manifest,
                    reference: Some(Reference::Tag(tag.clone())),
                    mount_from: None,
                },
            );
            request.facts.tag_digest = Some(crate::policy::TagNow::At(parsed.digest.clone()));
            request.facts.pushed_digest = Some(format!("sha256:{}", "0".repeat(64)));
            let outcome = app.explain_as_asked(request).await;
            let allowed = outcome.granted.iter().any(|a| a == "push");
            Some((allowed, outcome.withheld_by(&["push".to_string()])))
        }
        _ => None,
    };
    Ok(Answer::page(browse::image(
        &frame(visit, person, Section::Browse),
        &Image {
            name: &name,
            reference: &text,
            pull_host: &app.pull_host(visit),
            manifest: &parsed,
            config: config.as_ref(),
            referrers: referrers.as_deref(),
            deletable,
            signatures,
            keys: &keys,
            moving,
        },
    )))
}

/// `GET /ui/delete?name=&ref=`: the confirmation.
pub(super) async fn confirm_delete(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    let name = name_of(visit)?;
    let (text, reference) = reference_of(visit)?;
    may_delete(visit, person, &name, reference.clone()).await?;
    let digest = matches!(reference, Reference::Digest(_)).then_some(text.as_str());
    Ok(Answer::page(browse::confirm_delete(
        &frame(visit, person, Section::Browse),
        &name,
        &text,
        digest,
    )))
}

/// `POST /ui/delete`: deletes a manifest (or, where the registry can, a tag alone).
pub(super) async fn delete(
    visit: &Visit,
    person: &Person,
    form: &super::Form,
) -> Result<Answer, Failure> {
    let field = |key: &str| form.get(key).to_string();
    let name = field("name");
    repository_name(&name).map_err(|e| Failure::bad_request(ApiError::from(e).to_string()))?;
    let text = field("ref");
    let reference =
        tag_or_digest(&text).map_err(|e| Failure::bad_request(ApiError::from(e).to_string()))?;
    may_delete(visit, person, &name, reference.clone()).await?;
    let path = format!("/v2/{name}/manifests/{text}");
    let fetched = visit
        .app
        .console_fetch(
            visit,
            person,
            Method::DELETE,
            &path,
            None,
            &name,
            &["delete"],
        )
        .await?;
    match (fetched.status, &reference) {
        (StatusCode::ACCEPTED | StatusCode::OK, _) => Ok(Answer::redirect(format!(
            "{}&deleted={}",
            browse::repository_link(&name),
            form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
        ))),
        (StatusCode::NOT_FOUND, _) => Err(not_found(&name)),
        (StatusCode::METHOD_NOT_ALLOWED, _) => Err(Failure::new(
            StatusCode::CONFLICT,
            "Deleting is off",
            "The registry does not allow deletes (its storage.delete.enabled is false).",
        )),
        // Registry 2.x deletes manifests by digest only: say what deleting by digest means.
        (StatusCode::BAD_REQUEST, Reference::Tag(tag)) => Err(Failure::new(
            StatusCode::CONFLICT,
            "A tag alone cannot be deleted here",
            format!(
                "This registry deletes whole manifests, by digest, and with them every tag that \
                 points at them (registry 2.x cannot delete a tag alone). Open {tag} and delete \
                 its digest if that is what you want."
            ),
        )),
        (status, _) => Err(registry_refused(&path, status)),
    }
}

/// The image's config blob, when the registry serves it directly (not a redirect to
/// object storage) and it reads as a config.
async fn image_config(
    visit: &Visit,
    person: &Person,
    name: &str,
    digest: &str,
) -> Option<ImageConfig> {
    tag_or_digest(digest).ok()?;
    let path = format!("/v2/{name}/blobs/{digest}");
    pulled_document(visit, person, name, &path, manifest::parse_config).await
}

/// The manifests that refer to `digest`; None when the registry does not serve the
/// referrers API.
async fn referrers(
    visit: &Visit,
    person: &Person,
    name: &str,
    digest: &str,
) -> Option<Vec<Referrer>> {
    let path = format!("/v2/{name}/referrers/{digest}");
    pulled_document(visit, person, name, &path, manifest::parse_referrers).await
}

/// A document of repository `name` the person may pull, read as `parse` reads it; None when
/// the registry does not serve it or serves something else.
async fn pulled_document<T>(
    visit: &Visit,
    person: &Person,
    name: &str,
    path: &str,
    parse: fn(&[u8]) -> Result<T, String>,
) -> Option<T> {
    let fetched = visit
        .app
        .console_fetch(visit, person, Method::GET, path, None, name, &["pull"])
        .await
        .ok()?;
    (fetched.status == StatusCode::OK)
        .then(|| parse(&fetched.body).ok())
        .flatten()
}

fn name_of(visit: &Visit) -> Result<String, Failure> {
    let name = visit.field("name");
    repository_name(&name).map_err(|e| Failure::bad_request(ApiError::from(e).to_string()))?;
    Ok(name)
}

fn reference_of(visit: &Visit) -> Result<(String, Reference), Failure> {
    let text = visit.field("ref");
    let reference =
        tag_or_digest(&text).map_err(|e| Failure::bad_request(ApiError::from(e).to_string()))?;
    Ok((text, reference))
}

/// The same answer whether the repository is missing or not the person's to see: the
/// console tells no one what exists beyond what they may pull.
fn not_found(name: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("There is no {name} that you may pull."),
    )
}

fn registry_refused(path: &str, status: StatusCode) -> Failure {
    Failure::internal(format!("the registry answered {status} to {path}"))
}

/// A read of `name` as the policies are asked for it.
fn read_request(
    visit: &Visit,
    person: &Person,
    name: &str,
    kind: OperationKind,
    reference: Option<Reference>,
) -> PolicyRequest {
    request(
        visit,
        person,
        name,
        "pull",
        Operation {
            method: "GET".into(),
            kind,
            reference,
            mount_from: None,
        },
    )
}

fn delete_operation(reference: Reference) -> Operation {
    Operation {
        method: "DELETE".into(),
        kind: OperationKind::Manifest,
        reference: Some(reference),
        mount_from: None,
    }
}

fn request(
    visit: &Visit,
    person: &Person,
    name: &str,
    action: &str,
    operation: Operation,
) -> PolicyRequest {
    PolicyRequest {
        account: App::account(&person.principal),
        scope: Scope {
            type_: "repository".into(),
            class: None,
            name: name.to_string(),
            actions: vec![action.to_string()],
        },
        service: visit.app.issuer.service.clone(),
        client_ip: Some(visit.client.to_string()),
        operation: Some(operation),
        time: 0,
        facts: crate::policy::Facts::none(),
    }
}

/// Whether the policies grant `action` on `name` with `operation`.
async fn may(
    visit: &Visit,
    person: &Person,
    name: &str,
    action: &str,
    operation: Operation,
) -> bool {
    let outcome = visit
        .app
        .decide_gathered(
            Source::Console,
            request(visit, person, name, action, operation),
        )
        .await;
    outcome.granted.iter().any(|a| a == action)
}

async fn may_pull(
    visit: &Visit,
    person: &Person,
    name: &str,
    kind: OperationKind,
    reference: Option<Reference>,
) -> Result<(), Failure> {
    let request = read_request(visit, person, name, kind, reference);
    let outcome = visit.app.decide_gathered(Source::Console, request).await;
    if outcome.granted.iter().any(|a| a == "pull") {
        Ok(())
    } else {
        Err(not_found(name))
    }
}

async fn may_delete(
    visit: &Visit,
    person: &Person,
    name: &str,
    reference: Reference,
) -> Result<(), Failure> {
    // Only someone who may see it learns why they may not delete it.
    may_pull(
        visit,
        person,
        name,
        OperationKind::Manifest,
        Some(reference.clone()),
    )
    .await?;
    let request = request(visit, person, name, "delete", delete_operation(reference));
    let outcome = visit.app.decide_gathered(Source::Console, request).await;
    if outcome.granted.iter().any(|a| a == "delete") {
        return Ok(());
    }
    let why = outcome
        .withheld_by(&["delete".to_string()])
        .map(|reason| format!(" ({reason})"))
        .unwrap_or_default();
    Err(Failure::new(
        StatusCode::FORBIDDEN,
        "Not allowed",
        format!("The policies do not let you delete from {name}{why}."),
    ))
}

impl App {
    /// Starts listing the registry's repositories for the console, when it is on, so that
    /// nobody waits for the list: when someone opens the sign-in page.
    pub fn start_console_listing(self: &Arc<Self>) {
        if let Some(console) = &self.console {
            console.list_in_background(self.clone().list_repositories());
        }
    }

    /// The whole list of repository names, page by page, for the console's cache.
    async fn list_repositories(self: Arc<Self>) -> Result<Vec<String>, String> {
        self.list_all().await.map_err(|e| e.to_string())
    }

    async fn list_all(&self) -> Result<Vec<String>, UpstreamError> {
        let (registry, tokens) = match (&self.upstream, &self.console) {
            (Some(upstream), _) => (upstream, false),
            (None, Some(console)) => match &console.registry {
                Some(registry) => (registry, true),
                None => return Ok(Vec::new()),
            },
            (None, None) => return Ok(Vec::new()),
        };
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut headers = HeaderMap::new();
            if tokens {
                let access = Access {
                    resource_type: "registry".into(),
                    class: None,
                    name: "catalog".into(),
                    actions: vec!["*".into()],
                };
                headers.insert(AUTHORIZATION, self.bearer(LISTING_SUBJECT, access)?);
            }
            let path = CatalogQuery::upstream_path(cursor.as_deref());
            let fetched = registry
                .fetch(Method::GET, &path, headers, MAX_LIST_BYTES)
                .await?;
            let failed = |reason: String| UpstreamError::Failed {
                origin: registry.origin().to_string(),
                reason,
            };
            if !fetched.status.is_success() {
                return Err(failed(format!("GET {path} answered {}", fetched.status)));
            }
            let json = serde_json::from_slice(&fetched.body)
                .map_err(|e| failed(format!("{path}: not JSON: {e}")))?;
            let link = fetched
                .headers
                .get(hyper::header::LINK)
                .and_then(|v| v.to_str().ok());
            let page = CatalogPage::from_upstream(&json, link).map_err(failed)?;
            cursor = page.repositories.last().cloned();
            names.extend(page.repositories);
            if !page.more || cursor.is_none() {
                break;
            }
            if names.len() >= MAX_REPOSITORIES {
                tracing::warn!(
                    "the registry holds more than {MAX_REPOSITORIES} repositories: the console lists the first"
                );
                break;
            }
        }
        Ok(names)
    }

    /// The registry the console reads, and whether it wants tokens (token-server mode).
    fn console_registry<'a>(
        &'a self,
        visit: &'a Visit,
    ) -> (Option<&'a crate::proxy::Upstream>, bool) {
        match (&self.upstream, &visit.console.registry) {
            (Some(upstream), _) => (Some(upstream), false),
            (None, Some(registry)) => (Some(registry), true),
            (None, None) => (None, false),
        }
    }

    /// `Bearer <token>` for `subject` holding exactly `access`.
    pub(in crate::server) fn bearer(
        &self,
        subject: &str,
        access: Access,
    ) -> Result<HeaderValue, UpstreamError> {
        let ring = self.keys.load();
        let issued = self
            .issuer
            .access_token(&ring.current, subject, vec![access], None, None)
            .map_err(|e| UpstreamError::Failed {
                origin: "the console".into(),
                reason: format!("cannot sign a token: {e}"),
            })?;
        HeaderValue::from_str(&format!("Bearer {}", issued.token)).map_err(|e| {
            UpstreamError::Failed {
                origin: "the console".into(),
                reason: e.to_string(),
            }
        })
    }

    /// A request to the registry for `person`, who the policies already let do `actions`
    /// on `name`: in token-server mode with a token holding exactly that.
    #[allow(clippy::too_many_arguments)]
    async fn console_fetch(
        &self,
        visit: &Visit,
        person: &Person,
        method: Method,
        path: &str,
        accept: Option<&'static str>,
        name: &str,
        actions: &[&str],
    ) -> Result<Fetched, Failure> {
        let (registry, tokens) = self.console_registry(visit);
        let registry = registry.ok_or_else(|| Failure::internal("the console has no registry"))?;
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
        }
        if tokens {
            let access = Access {
                resource_type: "repository".into(),
                class: None,
                name: name.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
            };
            let bearer = self
                .bearer(&person.principal.name, access)
                .map_err(|e| Failure::from(ApiError::from(e)))?;
            headers.insert(AUTHORIZATION, bearer);
        }
        let limit = if path.contains("/manifests/") {
            manifest::MAX_MANIFEST_BYTES
        } else if path.contains("/blobs/") {
            manifest::MAX_CONFIG_BYTES
        } else {
            MAX_LIST_BYTES
        };
        registry
            .fetch(method, path, headers, limit)
            .await
            .map_err(|e| Failure::from(ApiError::from(e)))
    }

    /// The host people pull from, for `docker pull` lines: `[console] pull_host`, else the
    /// gateway's own (gateway mode) or the registry's (token-server mode).
    pub(super) fn pull_host(&self, visit: &Visit) -> String {
        if let Some(host) = &visit.console.config.pull_host {
            return host.clone();
        }
        match (&self.upstream, &visit.console.config.registry_url) {
            (None, Some(url)) => url
                .split_once("://")
                .map_or(url.as_str(), |(_, rest)| rest)
                .trim_end_matches('/')
                .to_string(),
            _ => visit
                .origin
                .split_once("://")
                .map_or(visit.origin.as_str(), |(_, rest)| rest)
                .to_string(),
        }
    }
}

/// A tag, or a sha256 or sha512 digest in hex: what a deletion's notice may echo.
fn shown_reference(reference: &str) -> bool {
    let hex = |text: &str, length: usize| {
        text.len() == length && text.bytes().all(|b| b.is_ascii_hexdigit())
    };
    match reference.split_once(':') {
        Some(("sha256", encoded)) => hex(encoded, 64),
        Some(("sha512", encoded)) => hex(encoded, 128),
        Some(_) => false,
        None => tag_or_digest(reference).is_ok(),
    }
}
