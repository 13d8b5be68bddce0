//! `/ui/`: the web console's requests. Who is signed in comes from the sealed session
//! cookie, checked against the identity sources at every request (a removed user's session
//! ends at once); every POST must come from our own pages (its Origin, and the session's
//! CSRF token in the form); every answer forbids framing, caching and inline script.

mod admin;
mod browse;
mod explain;
mod tokens;

use super::access::login_refused;
use super::credentials::client_ip;
use super::error::full;
use super::{ApiError, App, Body};
use crate::console::pages::{self, Frame, Section};
use crate::console::{Console, Cookie, Session, same_token};
use crate::identity::{LoginError, Origin, Principal};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION,
    REFERRER_POLICY, SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use maud::Markup;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Console forms are small; anything near this is not one.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Nothing inline, nothing from elsewhere, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                      connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                      base-uri 'none'";

/// A console request, parsed: what every handler needs.
struct Visit {
    app: Arc<App>,
    console: Arc<Console>,
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    client: IpAddr,
    /// `scheme://host` as the browser sees us, for the Origin check.
    origin: String,
    body: Option<Incoming>,
}

impl Visit {
    /// A query parameter, trimmed; empty when absent.
    fn field(&self, key: &str) -> String {
        self.query
            .get(key)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }
}

/// A signed-in person: their session and who the identity sources say they are now.
struct Person {
    session: Session,
    principal: Principal,
    admin: bool,
}

/// What a console handler answers.
enum Answer {
    /// A page, with the status and any cookies to set.
    Page {
        status: StatusCode,
        markup: Markup,
        cookies: Vec<HeaderValue>,
    },
    /// A redirect after a form or to the sign-in page (303: the browser GETs it).
    Redirect {
        to: String,
        cookies: Vec<HeaderValue>,
    },
    /// A static file of ours.
    Asset {
        body: &'static str,
        content_type: &'static str,
    },
}

impl Answer {
    fn page(markup: Markup) -> Answer {
        Answer::Page {
            status: StatusCode::OK,
            markup,
            cookies: Vec::new(),
        }
    }

    fn redirect(to: impl Into<String>) -> Answer {
        Answer::Redirect {
            to: to.into(),
            cookies: Vec::new(),
        }
    }
}

/// Why a console request failed, shown as a page.
struct Failure {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            title,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "Bad request", message)
    }

    fn internal(message: impl std::fmt::Display) -> Failure {
        tracing::error!(error = %message, "console request failed");
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The request could not be completed; the details are in the gateway's log.",
        )
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        match error {
            ApiError::TooManyRequests(wait) => Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                format!(
                    "Too many failed sign-ins: try again in {} s.",
                    wait.as_secs().max(1)
                ),
            ),
            ApiError::Busy(why) => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                format!("{why}; try again shortly."),
            ),
            ApiError::Upstream(error) => {
                tracing::warn!(%error, "the console could not read the registry");
                Failure::new(
                    StatusCode::BAD_GATEWAY,
                    "Registry unavailable",
                    "The registry did not answer; try again shortly.",
                )
            }
            ApiError::Internal(detail) => Failure::internal(detail),
            other => Failure::new(StatusCode::BAD_REQUEST, "Refused", other.to_string()),
        }
    }
}

pub(super) async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(console) = app.console.clone() else {
        return ApiError::NotFound.into_response();
    };
    let client = client_ip(
        request.headers(),
        peer.ip(),
        &app.config.server.trusted_proxies,
    );
    let origin = app.forwarded(&request, peer.ip()).origin();
    let (parts, body) = request.into_parts();
    let query = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect::<HashMap<_, _>>();
    let mut visit = Visit {
        app,
        console,
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers,
        client,
        origin,
        body: Some(body),
    };
    let answer = route(&mut visit).await;
    respond(answer)
}

async fn route(visit: &mut Visit) -> Result<Answer, Failure> {
    let path = visit.path.clone();
    match (visit.method.clone(), path.as_str()) {
        (Method::GET, "/ui" | "/ui/") => Ok(Answer::redirect("/ui/repositories")),
        (Method::GET, "/ui/assets/console.css") => Ok(Answer::Asset {
            body: pages::STYLESHEET,
            content_type: "text/css; charset=utf-8",
        }),
        (Method::GET, "/ui/assets/console.js") => Ok(Answer::Asset {
            body: pages::SCRIPT,
            content_type: "text/javascript; charset=utf-8",
        }),
        (Method::GET, "/ui/login") => sign_in_page(visit, None, StatusCode::OK),
        (Method::POST, "/ui/login") => sign_in(visit).await,
        (Method::POST, "/ui/logout") => sign_out(visit).await,
        (Method::GET, "/ui/sso") => sso_start(visit).await,
        (Method::GET, "/ui/sso/callback") => sso_finish(visit).await,
        (Method::GET | Method::POST, _) => {
            let person = match signed_in(visit).await? {
                Ok(person) => person,
                Err(answer) => return Ok(answer),
            };
            let answer = match (visit.method.clone(), path.as_str()) {
                (Method::GET, "/ui/repositories") => browse::repositories(visit, &person).await,
                (Method::GET, "/ui/repository") => browse::repository(visit, &person).await,
                (Method::GET, "/ui/manifest") => browse::image(visit, &person).await,
                (Method::GET, "/ui/delete") => browse::confirm_delete(visit, &person).await,
                (Method::GET, "/ui/explain") => explain::explain(visit, &person).await,
                (Method::GET, "/ui/admin/status") => admin::status(visit, &person),
                (Method::GET, "/ui/admin/decisions") => admin::decisions(visit, &person),
                (Method::GET, "/ui/admin/shadow") => admin::shadow(visit, &person),
                (Method::POST, "/ui/delete") => match posted(visit, &person).await {
                    Ok(form) => browse::delete(visit, &person, &form).await,
                    Err(failure) => Err(failure),
                },
                (Method::GET, "/ui/tokens") => tokens::page(visit, &person),
                (Method::POST, "/ui/tokens") => posted(visit, &person)
                    .await
                    .and_then(|form| tokens::make(visit, &person, &form)),
                (Method::POST, "/ui/tokens/revoke") => match posted(visit, &person).await {
                    Ok(form) => tokens::revoke(visit, &person, &form).await,
                    Err(failure) => Err(failure),
                },
                _ => Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "There is no such page in the console.",
                )),
            };
            // A signed-in person's problems are shown with the navigation around them.
            Ok(answer.unwrap_or_else(|failure| Answer::Page {
                status: failure.status,
                markup: pages::problem(
                    Some(&frame(visit, &person, Section::None)),
                    failure.title,
                    &failure.message,
                ),
                cookies: Vec::new(),
            }))
        }
        _ => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "The console answers GET and POST only.",
        )),
    }
}

/// The navigation around a signed-in person's page.
fn frame<'a>(visit: &'a Visit, person: &'a Person, current: Section) -> Frame<'a> {
    Frame {
        user: &person.session.user,
        source: &person.session.source,
        csrf: &person.session.csrf,
        admin: person.admin,
        tokens: visit.app.identity.personal().is_some(),
        current,
    }
}

/// The signed-in person, or the answer that sends the browser to sign in: no session, an
/// ended one, or an account that no longer holds the credential it signed in with.
async fn signed_in(visit: &Visit) -> Result<Result<Person, Answer>, Failure> {
    let to_sign_in = |cookies: Vec<HeaderValue>| Answer::Redirect {
        to: "/ui/login".into(),
        cookies,
    };
    let Some(session) = visit.console.session(&visit.headers) else {
        return Ok(Err(to_sign_in(Vec::new())));
    };
    let principal = match &session.credential {
        Some(credential) => {
            match visit
                .app
                .identity
                .still_holds(&session.user, credential)
                .await
            {
                Ok(principal) => principal,
                Err(LoginError::Unavailable(why)) => {
                    return Err(Failure::from(login_refused(LoginError::Unavailable(why))));
                }
                Err(_) => {
                    let clear = visit.console.clear_cookie(Cookie::Session);
                    return Ok(Err(to_sign_in(vec![clear])));
                }
            }
        }
        None => {
            let principal = Principal {
                name: session.user.clone(),
                groups: session.groups.clone(),
                origin: Origin::Oidc(session.source.clone()),
                claims: session.claims.clone(),
            };
            // Another source may have come to hold this name since the sign-in.
            match visit.app.identity.name_belongs(&principal).await {
                Ok(()) => principal,
                Err(LoginError::Unavailable(why)) => {
                    return Err(Failure::from(login_refused(LoginError::Unavailable(why))));
                }
                Err(_) => {
                    let clear = visit.console.clear_cookie(Cookie::Session);
                    return Ok(Err(to_sign_in(vec![clear])));
                }
            }
        }
    };
    let admin = visit.console.is_admin(&principal.groups);
    Ok(Ok(Person {
        session,
        principal,
        admin,
    }))
}

fn sign_in_page(
    visit: &Visit,
    error: Option<(&str, &str)>,
    status: StatusCode,
) -> Result<Answer, Failure> {
    if error.is_none() && visit.console.session(&visit.headers).is_some() {
        return Ok(Answer::redirect("/ui/repositories"));
    }
    // A flow already under way (another tab) is kept, so both forms stay good.
    let (flow, cookies) = match visit.console.flow(&visit.headers) {
        Some(flow) => (flow, Vec::new()),
        None => {
            let flow = visit.console.start_flow().map_err(Failure::internal)?;
            let cookie = visit
                .console
                .flow_cookie(&flow)
                .map_err(Failure::internal)?;
            (flow, vec![cookie])
        }
    };
    let (user, message) = error.unwrap_or(("", ""));
    let markup = pages::sign_in(
        &flow.csrf,
        user,
        (!message.is_empty()).then_some(message),
        visit.app.identity.sso().is_some(),
    );
    Ok(Answer::Page {
        status,
        markup,
        cookies,
    })
}

async fn sign_in(visit: &mut Visit) -> Result<Answer, Failure> {
    check_origin(visit)?;
    let form = read_form(visit).await?;
    let field = |name: &str| form.get(name);
    let flow = visit.console.flow(&visit.headers);
    if !flow.is_some_and(|flow| same_token(&flow.csrf, field("csrf"))) {
        // The form is older than its flow (or came from elsewhere): a fresh one.
        return sign_in_page(
            visit,
            Some((
                field("user"),
                "The sign-in form expired; please sign in again.",
            )),
            StatusCode::FORBIDDEN,
        );
    }
    let (user, password) = (field("user").to_string(), field("password").to_string());
    if user.is_empty() || password.is_empty() {
        return sign_in_page(
            visit,
            Some((&user, "Enter your user name and password.")),
            StatusCode::BAD_REQUEST,
        );
    }
    if visit.app.identity.source_of(&user, &password) == "oidc" {
        return sign_in_page(
            visit,
            Some((
                &user,
                "A workload token signs clients in, not people: use your password or SSO.",
            )),
            StatusCode::UNAUTHORIZED,
        );
    }
    let login = match visit.app.login(&user, password, visit.client).await {
        Ok(login) => login,
        Err(ApiError::Unauthorized(why)) => {
            return sign_in_page(visit, Some((&user, &why)), StatusCode::UNAUTHORIZED);
        }
        Err(ApiError::TooManyRequests(wait)) => {
            let message = format!(
                "Too many failed sign-ins: try again in {} s.",
                wait.as_secs().max(1)
            );
            return sign_in_page(
                visit,
                Some((&user, &message)),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        Err(other) => return Err(other.into()),
    };
    let Some(credential) = login.credential else {
        return Err(Failure::bad_request(
            "This credential cannot sign in to the console.",
        ));
    };
    let session = visit
        .console
        .start_session(
            &login.principal.name,
            login.principal.origin.name(),
            Some(credential),
        )
        .map_err(Failure::internal)?;
    let cookie = visit
        .console
        .session_cookie(&session)
        .map_err(Failure::internal)?;
    // The registry's list takes a while to make: made while the first page loads (and
    // only for someone signed in: an anonymous visitor makes the registry do nothing).
    visit.app.start_console_listing();
    Ok(Answer::Redirect {
        to: "/ui/repositories".into(),
        cookies: vec![cookie, visit.console.clear_cookie(Cookie::Flow)],
    })
}

/// `GET /ui/sso`: off to the provider, with a new flow holding what its answer must match.
async fn sso_start(visit: &Visit) -> Result<Answer, Failure> {
    let Some(sso) = visit.app.identity.sso() else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "SSO is off",
            "This gateway has no SSO provider ([console.sso]).",
        ));
    };
    let mut flow = match visit.console.flow(&visit.headers) {
        // The sign-in form of this flow stays good.
        Some(flow) => flow,
        None => visit.console.start_flow().map_err(Failure::internal)?,
    };
    let token = || crate::console::random_token().map_err(Failure::internal);
    let (state, nonce, verifier) = (token()?, token()?, format!("{}{}", token()?, token()?));
    let url = sso
        .authorization_url(&redirect_uri(visit), &state, &nonce, &verifier)
        .await
        .map_err(|e| Failure::from(login_refused(e)))?;
    flow.state = Some(state);
    flow.nonce = Some(nonce);
    flow.verifier = Some(verifier);
    let cookie = visit
        .console
        .flow_cookie(&flow)
        .map_err(Failure::internal)?;
    Ok(Answer::Redirect {
        to: url,
        cookies: vec![cookie],
    })
}

/// `GET /ui/sso/callback?code=&state=`: the provider's answer, checked against the flow.
async fn sso_finish(visit: &Visit) -> Result<Answer, Failure> {
    let field = |key: &str| visit.query.get(key).map(String::as_str).unwrap_or("");
    if !field("error").is_empty() {
        // Anyone can send a browser here with any text: the page says only what the
        // protocol's error codes mean, and the provider's words go to the log.
        tracing::info!(
            error = %field("error").chars().take(64).collect::<String>(),
            description = %field("error_description").chars().take(200).collect::<String>(),
            "the SSO provider did not sign someone in"
        );
        let message = match field("error") {
            "access_denied" => "The SSO provider did not sign you in: the sign-in was declined.",
            "login_required" | "interaction_required" | "consent_required" => {
                "The SSO provider did not sign you in: it needs you to sign in or consent there."
            }
            _ => "The SSO provider did not sign you in; please try again.",
        };
        return sign_in_page(visit, Some(("", message)), StatusCode::UNAUTHORIZED);
    }
    let flow = visit.console.flow(&visit.headers);
    let Some((nonce, verifier)) = flow
        .filter(|flow| {
            flow.state
                .as_deref()
                .is_some_and(|s| same_token(s, field("state")))
        })
        .and_then(|flow| Some((flow.nonce?, flow.verifier?)))
    else {
        // Not the answer to a sign-in started in this browser (or it took too long).
        return sign_in_page(
            visit,
            Some((
                "",
                "The SSO sign-in expired or was not started here; please try again.",
            )),
            StatusCode::FORBIDDEN,
        );
    };
    if !visit.console.spend(field("state")) {
        // A replayed answer: its code was exchanged (or refused) once already.
        return sign_in_page(
            visit,
            Some((
                "",
                "This SSO sign-in was used already; please sign in again.",
            )),
            StatusCode::FORBIDDEN,
        );
    }
    let signed_in = match visit
        .app
        .identity
        .sso_sign_in(field("code"), &verifier, &redirect_uri(visit), &nonce)
        .await
    {
        Ok(signed_in) => signed_in,
        Err(LoginError::Refused(why)) => {
            visit.app.metrics.login("sso", "refused");
            visit
                .app
                .refused_login("sso", "?", visit.client, &LoginError::Refused(why.clone()));
            return sign_in_page(visit, Some(("", &why)), StatusCode::UNAUTHORIZED);
        }
        Err(other) => {
            visit.app.metrics.login("sso", "unavailable");
            return Err(Failure::from(login_refused(other)));
        }
    };
    visit.app.metrics.login("sso", "ok");
    let principal = signed_in.principal;
    let mut session = visit
        .console
        .start_session(
            &principal.name,
            principal.origin.name(),
            signed_in.credential.clone(),
        )
        .map_err(Failure::internal)?;
    if signed_in.credential.is_none() {
        // The directory's people are looked up again at every request; others keep what
        // the provider said.
        session.groups = principal.groups;
        session.claims = principal.claims;
        session.provider_refresh = signed_in.refresh_token;
    }
    let cookie = visit
        .console
        .session_cookie(&session)
        .map_err(|why| Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "Cannot sign you in", why))?;
    visit.app.start_console_listing();
    Ok(Answer::Redirect {
        to: "/ui/repositories".into(),
        cookies: vec![cookie, visit.console.clear_cookie(Cookie::Flow)],
    })
}

/// Where the provider sends people back: the same for the start and the code exchange.
fn redirect_uri(visit: &Visit) -> String {
    format!("{}/ui/sso/callback", visit.origin)
}

async fn sign_out(visit: &mut Visit) -> Result<Answer, Failure> {
    check_origin(visit)?;
    let form = read_form(visit).await?;
    if let Some(session) = visit.console.session(&visit.headers)
        && !same_token(&session.csrf, form.get("csrf"))
    {
        return Err(csrf_refused());
    }
    Ok(Answer::Redirect {
        to: "/ui/login".into(),
        cookies: vec![visit.console.clear_cookie(Cookie::Session)],
    })
}

/// The form of a signed-in person's POST, once its origin and CSRF token are checked.
async fn posted(visit: &mut Visit, person: &Person) -> Result<Form, Failure> {
    check_origin(visit)?;
    let form = read_form(visit).await?;
    let given = form.get("csrf");
    if !same_token(&person.session.csrf, given) {
        return Err(csrf_refused());
    }
    Ok(form)
}

fn csrf_refused() -> Failure {
    Failure::new(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form did not come from this session (CSRF check): reload the page and try again.",
    )
}

/// A POST must come from our own pages: browsers send `Origin` (and `Sec-Fetch-Site`) with
/// every form, and no other site can make them say ours.
fn check_origin(visit: &Visit) -> Result<(), Failure> {
    let header = |name: &str| {
        visit
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let foreign_origin = header("origin").is_some_and(|o| o != visit.origin);
    let foreign_site =
        header("sec-fetch-site").is_some_and(|site| site != "same-origin" && site != "none");
    if foreign_origin || foreign_site {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form was sent from another site.",
        ));
    }
    Ok(())
}

/// A url-encoded form, as sent.
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    /// The first value of `key`, or "".
    pub(super) fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `key` (checkboxes).
    pub(super) fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A url-encoded form body, bounded in size and time.
async fn read_form(visit: &mut Visit) -> Result<Form, Failure> {
    let Some(body) = visit.body.take() else {
        return Ok(Form(Vec::new()));
    };
    let wait = Duration::from_secs(visit.app.config.server.header_timeout_seconds);
    let bytes = tokio::time::timeout(wait, Limited::new(body, MAX_FORM_BYTES).collect())
        .await
        .map_err(|_| Failure::bad_request("The form did not arrive in time."))?
        .map_err(|e| Failure::bad_request(format!("The form could not be read: {e}")))?
        .to_bytes();
    Ok(Form(form_urlencoded::parse(&bytes).into_owned().collect()))
}

/// The HTTP response of an answer, with the headers every console answer carries.
fn respond(answer: Result<Answer, Failure>) -> Response<Body> {
    let answer = answer.unwrap_or_else(|failure| Answer::Page {
        status: failure.status,
        markup: pages::problem(None, failure.title, &failure.message),
        cookies: Vec::new(),
    });
    let mut response = match answer {
        Answer::Page {
            status,
            markup,
            cookies,
        } => {
            let mut response = Response::new(full(markup.into_string()));
            *response.status_mut() = status;
            set(&mut response, CONTENT_TYPE, "text/html; charset=utf-8");
            add_cookies(&mut response, cookies);
            response
        }
        Answer::Redirect { to, cookies } => {
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(location) = HeaderValue::from_str(&to) {
                response.headers_mut().insert(LOCATION, location);
            }
            add_cookies(&mut response, cookies);
            response
        }
        Answer::Asset { body, content_type } => {
            let mut response = Response::new(full(body));
            set(&mut response, CONTENT_TYPE, content_type);
            response
        }
    };
    set(&mut response, CACHE_CONTROL, "no-store");
    set(&mut response, CONTENT_SECURITY_POLICY, POLICY);
    set(&mut response, X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(&mut response, X_FRAME_OPTIONS, "DENY");
    set(&mut response, REFERRER_POLICY, "same-origin");
    response
}

fn set(response: &mut Response<Body>, name: HeaderName, value: &'static str) {
    response
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

fn add_cookies(response: &mut Response<Body>, cookies: Vec<HeaderValue>) {
    for cookie in cookies {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
}
