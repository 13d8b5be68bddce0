//! Gateway mode, `/v2/`: authenticate the caller (a Bearer token we issued, Basic
//! credentials, or nobody), let the policies decide with the operation in view, then forward
//! to the registry; the catalog is filtered for callers who may not list it whole.

use super::credentials::{Credentials, client_ip, credentials};
use super::error::full;
use super::facts::{FactError, MAX_PUSHED_MANIFEST, digest_of};
use super::{ApiError, App, Body, json};
use crate::decision_log::Source;
use crate::identity::{Limit, Origin, Principal};
use crate::policy::{Account, Facts, Operation, Reference, Request as PolicyRequest, Scope};
use crate::proxy::{
    CatalogPage, CatalogQuery, Forwarded, Route, Target, UpstreamError, next_link, without_mount,
};
use crate::token::Verified;
use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, CONTENT_LENGTH, EXPECT, HOST, HeaderValue, LINK, TRANSFER_ENCODING,
};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Filtering stops after this many upstream pages (10 000 repositories, as many decisions)
/// and hands the client a `Link` to go on: one request, even an anonymous one, costs a
/// bounded amount of work.
const MAX_CATALOG_PAGES: usize = 10;
/// How long a listing waits for the listing lane before it is answered 503: a flood of
/// listings gets quick refusals instead of piling up connections.
const LISTING_WAIT: Duration = Duration::from_secs(5);
/// A refused request's body is read this far at most before the connection closes: a
/// manifest is at most 4 MiB in distribution; larger bodies (blobs) are cut off.
const MAX_DRAIN: usize = 8 << 20;
/// ... and for this long at most.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Repositories decided together, in one turn of the listing lane: long enough to make
/// the hop to a blocking thread cheap, short enough that no one waits long behind it.
const CATALOG_BATCH: usize = 100;

/// Who sends a request, and how they proved it.
struct Caller {
    account: Account,
    via: Via,
    /// A personal token's narrowing, when that is what logged them in (or minted their
    /// Bearer token).
    limit: Option<Limit>,
}

enum Via {
    /// A token this gateway issued; it bounds what the request may do.
    Bearer(Arc<Verified>),
    /// A password checked here: curl and other tools that skip the token dance.
    Basic,
    /// No credentials, with anonymous access enabled.
    Anonymous,
}

pub(super) async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let Some(upstream) = &app.upstream else {
        return Err(ApiError::NotFound);
    };
    // The body stays unread until the request is admitted: only then does the registry get
    // it, and a refused one is drained (bounded), not cut off. A manifest PUT whose digest a
    // policy decides with (a fact) is read first, whole, and forwarded as read.
    let (parts, body) = request.into_parts();
    let head = Request::from_parts(parts, ());
    let (body, pushed) = if head.method() == Method::PUT
        && head.uri().path().contains("/manifests/")
        && app.needs_pushed_digest()
    {
        let bytes = read_manifest(&app, body).await?;
        let digest = digest_of(&bytes);
        (full(bytes), Some(digest))
    } else {
        (body.map_err(Into::into).boxed(), None)
    };
    match admit(&app, &head, peer, pushed.as_deref()).await {
        Ok(Admitted::Forward {
            forwarded,
            query,
            path,
        }) => {
            let (mut parts, ()) = head.into_parts();
            if let Some(path) = path {
                parts.uri = hyper::Uri::builder()
                    .path_and_query(path)
                    .build()
                    .map_err(|e| ApiError::Internal(format!("cannot forward by digest: {e}")))?;
            }
            let request = Request::from_parts(parts, body);
            Ok(upstream.forward(request, &forwarded, query).await?)
        }
        Ok(Admitted::Answer(response)) => Ok(response),
        Err(error) if has_body(head.headers()) => {
            Ok(refused_unread(error, head.headers(), body).await)
        }
        Err(error) => Err(error),
    }
}

/// What an admitted request becomes.
enum Admitted {
    /// Forwarded to the registry, with this query in place of the client's when set, and
    /// this path in place of the client's when set (a pull by tag, forwarded by digest).
    Forward {
        forwarded: Forwarded,
        query: Option<String>,
        path: Option<String>,
    },
    /// Answered here (a filtered catalog).
    Answer(Response<Body>),
}

/// A manifest PUT's body, read whole: at most a manifest's size, within the upstream's idle
/// timeout.
async fn read_manifest(app: &App, body: Incoming) -> Result<Bytes, ApiError> {
    let idle = app
        .config
        .upstream
        .as_ref()
        .map_or(Duration::from_secs(60), |u| {
            Duration::from_secs(u.idle_timeout_seconds)
        });
    let read = http_body_util::Limited::new(body, MAX_PUSHED_MANIFEST).collect();
    match tokio::time::timeout(idle, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(ApiError::BadRequest {
            code: "MANIFEST_INVALID",
            message: format!(
                "the manifest could not be read whole (at most {} MiB): {e}",
                MAX_PUSHED_MANIFEST >> 20
            ),
        }),
        Err(_) => Err(ApiError::BadRequest {
            code: "MANIFEST_INVALID",
            message: "the manifest was not sent in time".into(),
        }),
    }
}

/// Parses, authenticates and decides a request, without its body; `pushed` is the digest
/// of a manifest PUT's body when it was read first.
async fn admit(
    app: &Arc<App>,
    request: &Request<()>,
    peer: SocketAddr,
    pushed: Option<&str>,
) -> Result<Admitted, ApiError> {
    let forwarded = app.forwarded(request, peer.ip());
    if let Some(why) = super::cors::cross_site(
        request.method(),
        request.headers(),
        &forwarded.origin(),
        &app.config.server.cors_origins,
    ) {
        return Err(ApiError::Denied(why));
    }
    let realm = app.realm(&forwarded);
    let route = Route::parse(
        request.method(),
        request.uri().path(),
        request.uri().query(),
        request.headers(),
    )?;
    let client = client_ip(
        request.headers(),
        peer.ip(),
        &app.config.server.trusted_proxies,
    );
    let needs = route.needs();
    // As the registry does, a challenge names every scope to ask a token for (a mount's
    // source too): browser UIs (Joxit's) fetch a token only from a challenge that does.
    let scopes: Vec<&Scope> = needs.iter().map(|(scope, _)| scope).collect();
    let caller = app
        .authenticate(request.headers(), client, &realm, &scopes)
        .await?;
    // The facts of the request's own operation (a mount's source needs none), gathered
    // once, for an authenticated request only.
    let facts = match needs.first() {
        Some((scope, operation)) => Some(
            app.facts(
                &scope.name,
                operation,
                pushed,
                request.headers().get(hyper::header::ACCEPT),
            )
            .await,
        ),
        None => None,
    };
    let mut query = None;
    for (i, (scope, operation)) in needs.iter().enumerate() {
        let known = if i == 0 { facts.clone() } else { None };
        let Err(why) = app.allowed(&caller, scope, operation, client, known).await else {
            continue;
        };
        match (&route.target, why) {
            // The second scope of a mount is its source. A token that lacks it while the
            // policies grant it: the registry's own answer, a challenge naming both
            // scopes, and the client comes back with a token that mounts.
            (Target::Repository { mount: Some(_), .. }, Denial::Token) if i == 1 => {
                return Err(challenge(
                    &realm,
                    &app.issuer.service,
                    &scopes,
                    Some("insufficient_scope"),
                    &format!("a mount from {} needs a token for its pull too", scope.name),
                ));
            }
            // Not granted at all: the registry is asked for a plain upload, and the client
            // uploads the blob it could not mount.
            (Target::Repository { mount: Some(_), .. }, _) if i == 1 => {
                query = Some(without_mount(request.uri().query().unwrap_or("")));
            }
            (Target::Catalog, _) => {
                return app
                    .filtered_catalog(&caller, client, request.uri().query())
                    .await
                    .map(Admitted::Answer);
            }
            (_, why) => {
                return Err(denied(
                    &caller,
                    scope,
                    &scopes,
                    why,
                    &realm,
                    &app.issuer.service,
                ));
            }
        }
    }
    if matches!(route.target, Target::Catalog) && app.revocations_repository().is_some() {
        // Even a caller who may list everything must not see where revocations are kept.
        return app
            .filtered_catalog(&caller, client, request.uri().query())
            .await
            .map(Admitted::Answer);
    }
    if matches!(route.target, Target::Base) && matches!(caller.via, Via::Anonymous) {
        // Clients learn the realm from this 401, then come back with a token.
        return Err(challenge(
            &realm,
            &app.issuer.service,
            &[],
            None,
            "authentication required",
        ));
    }
    // A pull by tag allowed for the manifest the tag named when its signatures were checked
    // gets exactly that manifest, even if the tag moves in between: forwarded by digest.
    let path = match (&facts, needs.first()) {
        (Some(Ok(facts)), Some((scope, operation))) => {
            match (&facts.signatures, &operation.reference) {
                (Some(signatures), Some(Reference::Tag(_))) if !signatures.digest.is_empty() => {
                    Some(format!(
                        "/v2/{}/manifests/{}",
                        scope.name, signatures.digest
                    ))
                }
                _ => None,
            }
        }
        _ => None,
    };
    Ok(Admitted::Forward {
        forwarded,
        query,
        path,
    })
}

/// A refused request's body is read and dropped, up to [`MAX_DRAIN`] bytes for
/// [`DRAIN_TIME`], before the answer closes the connection: a client still sending a large
/// body (a manifest PUT without credentials) then reads the answer instead of a broken
/// pipe. A client that waits for `100 Continue` has sent nothing, and is not asked to.
async fn refused_unread(error: ApiError, headers: &HeaderMap, body: Body) -> Response<Body> {
    let waits = headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits {
        let drain = async {
            let mut body = std::pin::pin!(body);
            let mut read = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |data| data.len());
                if read > MAX_DRAIN {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// True when a request says it carries a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `Bearer realm="...",service="..."[,scope="..."][,error="..."]`, identical realm and
/// service on every 401; several scopes are space-separated in one `scope`, as the registry
/// writes them.
fn challenge(
    realm: &str,
    service: &str,
    scopes: &[&Scope],
    error: Option<&str>,
    message: &str,
) -> ApiError {
    let mut value = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
    if !scopes.is_empty() {
        let text: Vec<String> = scopes.iter().map(|scope| scope_text(scope)).collect();
        value.push_str(&format!(",scope=\"{}\"", text.join(" ")));
    }
    if let Some(error) = error {
        // RFC 6750's `error_description`: what docker prints for a refusal ("denied: ...").
        value.push_str(&format!(
            ",error=\"{error}\",error_description=\"{}\"",
            description(message)
        ));
    }
    ApiError::Challenge {
        challenge: value,
        message: message.to_string(),
    }
}

/// `text` as an `error_description` may carry it (RFC 6750 section 3): printable ASCII
/// without `"` or `\`; anything else becomes `?`.
fn description(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '?',
        })
        .collect()
}

fn scope_text(scope: &Scope) -> String {
    format!("{}:{}:{}", scope.type_, scope.name, scope.actions.join(","))
}

/// A refusal the caller can act on: a token holder gets `insufficient_scope`, an anonymous
/// caller a challenge to log in naming every scope of the request (`all`: a mount's source
/// too), a Basic caller (already logged in) a 403. Authenticated callers are told which
/// policy said no, and why.
fn denied(
    caller: &Caller,
    scope: &Scope,
    all: &[&Scope],
    why: Denial,
    realm: &str,
    service: &str,
) -> ApiError {
    let mut message = format!("access to {} is not granted", scope_text(scope));
    match why {
        Denial::Token => message.push_str(" by the token"),
        Denial::Limit => message.push_str(" by the personal token (it is narrowed to less)"),
        Denial::Policy(Some(reason)) => message.push_str(&format!(" ({reason})")),
        Denial::Policy(None) => {}
    }
    match caller.via {
        Via::Bearer(_) => challenge(
            realm,
            service,
            &[scope],
            Some("insufficient_scope"),
            &message,
        ),
        Via::Anonymous => challenge(realm, service, all, None, "authentication required"),
        Via::Basic => ApiError::Denied(message),
    }
}

/// Why a scope was refused.
enum Denial {
    /// The caller's Bearer token does not hold it: get a new token for this scope.
    Token,
    /// The policies withheld it; the first policy that did, with its reason.
    Policy(Option<String>),
    /// The personal token the caller logged in with is narrowed to less.
    Limit,
}

impl App {
    /// How the client reached us: `public_url` when set (a client's Host header then
    /// changes nothing); else, from a trusted proxy (an Ingress terminating TLS), the
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` it sends; else the Host the client used.
    pub(super) fn forwarded<B>(&self, request: &Request<B>, peer: IpAddr) -> Forwarded {
        let headers = request.headers();
        let trusted = self
            .config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer));
        // A proxy's header, the first value of a list (the proxy nearest the client).
        let from_proxy = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|_| trusted)
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let scheme = match from_proxy("x-forwarded-proto") {
            Some(proto @ ("http" | "https")) => proto,
            _ if self.tls.is_some() => "https",
            _ => "http",
        };
        let (proto, host) = match &self.public_origin {
            Some((proto, host)) => (proto.clone(), host.clone()),
            // HTTP/2 carries the host in the URI (`:authority`), HTTP/1.1 in `Host`.
            None => (
                scheme.to_string(),
                from_proxy("x-forwarded-host")
                    .filter(|h| is_host(h))
                    .or_else(|| headers.get(HOST).and_then(|h| h.to_str().ok()))
                    .or_else(|| request.uri().authority().map(|a| a.as_str()))
                    .filter(|h| is_host(h))
                    .map(str::to_string)
                    .unwrap_or_else(|| self.config.server.listen.to_string()),
            ),
        };
        let earlier = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .filter(|_| trusted);
        let chain = match earlier {
            Some(earlier) => format!("{earlier}, {peer}"),
            None => peer.to_string(),
        };
        Forwarded { proto, host, chain }
    }

    fn realm(&self, forwarded: &Forwarded) -> String {
        format!("{}/token", forwarded.origin())
    }

    async fn authenticate(
        self: &Arc<Self>,
        headers: &HeaderMap,
        client: IpAddr,
        realm: &str,
        scopes: &[&Scope],
    ) -> Result<Caller, ApiError> {
        let service = &self.issuer.service;
        let unauthorized = |message: &str| challenge(realm, service, scopes, None, message);
        match credentials(headers).map_err(|e| unauthorized(&e.to_string()))? {
            Credentials::None if self.config.identity.anonymous => Ok(Caller {
                account: Account::anonymous(),
                via: Via::Anonymous,
                limit: None,
            }),
            Credentials::None => Err(unauthorized("authentication required")),
            Credentials::Bearer(token) => {
                let verified = self.verify_bearer(token).await.map_err(|message| {
                    challenge(realm, service, &[], Some("invalid_token"), &message)
                })?;
                let account = match (&verified.principal, verified.subject.as_str()) {
                    (_, "") => Account::anonymous(),
                    // Not in the htpasswd: what the token says the policies saw at issue.
                    (Some(carried), subject) => Account::user(subject, carried.groups.clone())
                        .from_source(&carried.source, carried.claims.clone()),
                    (None, subject) => App::account(&self.identity.principal(subject)),
                };
                Ok(Caller {
                    account,
                    limit: verified.narrowed.as_ref().map(|n| n.limit.clone()),
                    via: Via::Bearer(verified),
                })
            }
            Credentials::Basic { user, password } => {
                let login = self
                    .login(&user, password, client)
                    .await
                    .map_err(|e| match e {
                        ApiError::Unauthorized(why) => unauthorized(&why),
                        other => other,
                    })?;
                Ok(Caller {
                    account: App::account(&login.principal),
                    via: Via::Basic,
                    limit: login.narrowed.map(|n| n.limit),
                })
            }
        }
    }

    /// Checks a Bearer token: the signature once per key ring (then from memory); on every
    /// request its expiry, the account's existence (an htpasswd user) or its name still being
    /// its source's own (any other), and the personal token it was minted with not being
    /// revoked, so a removed user or a revoked token stops at once.
    async fn verify_bearer(self: &Arc<Self>, token: String) -> Result<Arc<Verified>, String> {
        let ring = self.keys.load_full();
        let verified = match ring.verified.get(&token) {
            Some(verified) => verified,
            None => {
                let issuer_ring = ring.clone();
                let app = self.clone();
                let verified = tokio::task::spawn_blocking(move || {
                    app.issuer
                        .verify_access(&issuer_ring.all(), &token)
                        .map(|v| (token, Arc::new(v)))
                })
                .await
                .map_err(|e| format!("token check failed: {e}"))?
                .map_err(|e| e.to_string())?;
                ring.verified.insert(verified.0, verified.1.clone());
                verified.1
            }
        };
        if verified.expires_at <= SystemTime::now() {
            return Err("the token has expired".into());
        }
        if verified.subject.is_empty() {
            // Anonymous access may have been switched off since the token was issued.
            if !self.config.identity.anonymous {
                return Err("anonymous access is disabled".into());
            }
        } else if let Some(carried) = &verified.principal {
            // A directory user's or a workload's token lives its few minutes (ttl_seconds)
            // without a lookup of the user, but its name must still be its source's.
            let principal = Principal {
                name: verified.subject.clone(),
                groups: Vec::new(),
                origin: Origin::of(&carried.source),
                claims: Vec::new(),
            };
            self.identity
                .name_belongs(&principal)
                .await
                .map_err(|e| e.to_string())?;
        } else if !self.identity.exists(&verified.subject) {
            // An htpasswd user must still be there.
            return Err(format!("account {:?} no longer exists", verified.subject));
        }
        if let (Some(narrowed), Some(personal)) = (&verified.narrowed, self.identity.personal())
            && personal.revoked().contains(&narrowed.id)
        {
            return Err("the personal token this token was minted with was revoked".into());
        }
        Ok(verified)
    }

    /// Whether the caller may do every action of `scope`: the token (if any) must grant
    /// them, and so must the policies, asked with the operation.
    async fn allowed(
        self: &Arc<Self>,
        caller: &Caller,
        scope: &Scope,
        operation: &Operation,
        client: IpAddr,
        facts: Option<Result<Facts, FactError>>,
    ) -> Result<(), Denial> {
        // "Every action of none" holds for anyone: a request that needs no action is one
        // the route mapping did not understand, and it grants nothing.
        if scope.actions.is_empty() {
            return Err(Denial::Policy(Some("the request needs no action".into())));
        }
        if let Via::Bearer(token) = &caller.via
            && !scope
                .actions
                .iter()
                .all(|action| token.allows(&scope.type_, &scope.name, action))
        {
            // Most often the token lacks it because the policies withheld it when it was
            // issued: ask them, so the refusal says who said no and why.
            return Err(
                match self
                    .policies_deny(caller, scope, operation, client, facts)
                    .await
                {
                    Some(why) => Denial::Policy(why),
                    None => Denial::Token,
                },
            );
        }
        if let Some(limit) = &caller.limit
            && !scope
                .actions
                .iter()
                .all(|action| limit.allows(&scope.type_, &scope.name, action))
        {
            return Err(Denial::Limit);
        }
        match self
            .policies_deny(caller, scope, operation, client, facts)
            .await
        {
            Some(why) => Err(Denial::Policy(why)),
            None => Ok(()),
        }
    }

    /// None when the policies grant every action of `scope` with the operation; else the
    /// first policy that withheld one, with its reason.
    async fn policies_deny(
        self: &Arc<Self>,
        caller: &Caller,
        scope: &Scope,
        operation: &Operation,
        client: IpAddr,
        facts: Option<Result<Facts, FactError>>,
    ) -> Option<Option<String>> {
        let mut request = PolicyRequest {
            account: caller.account.clone(),
            scope: scope.clone(),
            service: self.issuer.service.clone(),
            client_ip: Some(client.to_string()),
            operation: Some(operation.clone()),
            time: 0,
            facts: Facts::none(),
        };
        let outcome = match facts.unwrap_or_else(|| Ok(Facts::none())) {
            Ok(facts) => {
                request.facts = facts;
                self.decide(Source::Gateway, request).await
            }
            Err(why) => {
                // Fails closed, and is logged as a decision like any other refusal.
                let outcome = Arc::new(super::facts::unknown(&why));
                self.observe(Source::Gateway, &request, &outcome, false, Duration::ZERO);
                outcome
            }
        };
        if scope.actions.iter().all(|a| outcome.granted.contains(a)) {
            None
        } else {
            Some(outcome.withheld_by(&scope.actions))
        }
    }

    /// The registry's listing, keeping the repositories the caller may pull.
    async fn filtered_catalog(
        self: &Arc<Self>,
        caller: &Caller,
        client: IpAddr,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let Some(upstream) = &self.upstream else {
            return Err(ApiError::NotFound);
        };
        let wanted = CatalogQuery::parse(query)?;
        // The registry walks its storage for every page, and each page is a thousand
        // decisions: one listing at a time, however many callers ask.
        let _lane = tokio::time::timeout(LISTING_WAIT, self.lanes.listing())
            .await
            .map_err(|_| ApiError::Busy("too many catalog listings at once"))?;
        let mut listed = Vec::new();
        let mut cursor = wanted.last.clone();
        let mut next = None;
        if wanted.n > 0 {
            for page_number in 1..=MAX_CATALOG_PAGES {
                let (json, link) = upstream
                    .get_json(&CatalogQuery::upstream_path(cursor.as_deref()))
                    .await?;
                let page =
                    CatalogPage::from_upstream(&json, link.as_deref()).map_err(|reason| {
                        UpstreamError::Failed {
                            origin: upstream.origin().to_string(),
                            reason,
                        }
                    })?;
                'page: for names in page.repositories.chunks(CATALOG_BATCH) {
                    let pulls = self.pullable(caller, names, client).await;
                    for (name, pull) in names.iter().zip(pulls) {
                        cursor = Some(name.clone());
                        if pull {
                            listed.push(name.clone());
                            if listed.len() == wanted.n {
                                break 'page;
                            }
                        }
                    }
                }
                if listed.len() == wanted.n || (page.more && page_number == MAX_CATALOG_PAGES) {
                    next = cursor.clone();
                    break;
                }
                if !page.more {
                    break;
                }
            }
        }
        let mut response = json(
            StatusCode::OK,
            &serde_json::json!({ "repositories": listed }),
        );
        if let Some(last) = next
            && let Ok(link) = HeaderValue::from_str(&next_link(wanted.n, &last))
        {
            response.headers_mut().insert(LINK, link);
        }
        Ok(response)
    }

    /// Whether the caller may pull each of `names`, by the policies alone (a listing is not
    /// bounded by the scopes of the caller's token), decided as one batch.
    async fn pullable(
        self: &Arc<Self>,
        caller: &Caller,
        names: &[String],
        client: IpAddr,
    ) -> Vec<bool> {
        let operation = Operation {
            method: "GET".into(),
            kind: crate::policy::Kind::Catalog,
            reference: None,
            mount_from: None,
        };
        let requests = names
            .iter()
            .map(|name| PolicyRequest {
                account: caller.account.clone(),
                scope: Scope {
                    type_: "repository".into(),
                    class: None,
                    name: name.clone(),
                    actions: vec!["pull".into()],
                },
                service: self.issuer.service.clone(),
                client_ip: Some(client.to_string()),
                operation: Some(operation.clone()),
                time: 0,
                facts: Facts::none(),
            })
            .collect();
        self.decide_all(Source::Gateway, requests)
            .await
            .iter()
            .zip(names)
            .map(|(outcome, name)| {
                outcome.granted.iter().any(|a| a == "pull")
                    && caller
                        .limit
                        .as_ref()
                        .is_none_or(|limit| limit.allows("repository", name, "pull"))
            })
            .collect()
    }
}

/// A Host header worth building URLs from: a name or address and an optional port.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}
