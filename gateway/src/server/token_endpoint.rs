//! `GET|POST /token`: authenticate (Basic, OAuth2 password or refresh grant, an RFC 8693
//! exchange of a workload token, or anonymous), ask the policies about every scope, and sign
//! a token holding exactly the granted subset.

use super::access::login_refused;
use super::credentials::{Credentials, client_ip, credentials};
use super::{ApiError, App, Body, json};
use crate::decision_log::Source;
use crate::identity::{Narrowed, Origin, Principal};
use crate::policy::{Account, Request as PolicyRequest};
use crate::scope::Scope;
use crate::token::{Access, Issued, SigningKey, TokenError};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Form bodies are a few hundred bytes; anything near this is not a token request.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// More scopes than any client asks for in one token.
const MAX_SCOPES: usize = 100;

/// RFC 8693's grant type: a workload token exchanged for a registry token.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token types a workload token may be presented as.
const SUBJECT_TOKEN_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];

enum Grant {
    None,
    Password {
        user: String,
        password: String,
    },
    Refresh(String),
    /// A workload token from a configured issuer (RFC 8693).
    Exchange(String),
}

/// The refresh token of a response.
enum Refresh {
    /// The client's own: clients keep the first one they get (docker never stores another).
    Keep(String),
    /// A new one, for an offline login, bound to the credential the login matched.
    Mint(String),
}

struct TokenRequest {
    grant: Grant,
    scopes: Vec<Scope>,
    offline: bool,
    account: Option<String>,
}

pub(super) async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let basic = basic_credentials(request.headers())?;
    let client = client_ip(
        request.headers(),
        peer.ip(),
        &app.config.server.trusted_proxies,
    );
    let is_get = request.method() == Method::GET;
    let params: Vec<(String, String)> = if request.method() == Method::POST {
        // The form is a few hundred bytes: a body trickled byte by byte is not a client.
        let wait = Duration::from_secs(app.config.server.header_timeout_seconds);
        let body = tokio::time::timeout(
            wait,
            Limited::new(request.into_body(), MAX_FORM_BYTES).collect(),
        )
        .await
        .map_err(|_| ApiError::SlowBody(wait))?
        .map_err(|e| bad_request("UNSUPPORTED", format!("cannot read the form body: {e}")))?
        .to_bytes();
        form_urlencoded::parse(&body).into_owned().collect()
    } else {
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    };
    if is_get
        && let Some((key, _)) = params
            .iter()
            .find(|(key, _)| ["password", "refresh_token", "subject_token"].contains(&key.as_str()))
    {
        // A query string ends up in access logs and proxies' logs; a form body does not.
        return Err(bad_request(
            "UNSUPPORTED",
            format!(
                "`{key}` in the query of a GET is refused: it would be written to access logs. \
                 POST it as a form, or send the password as Basic credentials"
            ),
        ));
    }
    let token_request = parse(&app, params, basic)?;
    app.issue(token_request, client).await
}

fn bad_request(code: &'static str, message: String) -> ApiError {
    ApiError::BadRequest { code, message }
}

/// `Authorization: Basic ...`, decoded; no header means no credentials.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    match credentials(headers)? {
        Credentials::None => Ok(None),
        Credentials::Basic { user, password } => Ok(Some((user, password))),
        Credentials::Bearer(_) => Err(ApiError::Unauthorized(
            "malformed Authorization header: the token endpoint takes Basic credentials".into(),
        )),
    }
}

fn parse(
    app: &App,
    params: Vec<(String, String)>,
    basic: Option<(String, String)>,
) -> Result<TokenRequest, ApiError> {
    let mut scopes = Vec::new();
    let mut offline = false;
    let mut account = None;
    let mut grant_type = None;
    let (mut username, mut password, mut refresh_token) = (None, None, None);
    let (mut subject_token, mut subject_token_type) = (None, None);
    for (key, value) in params {
        match key.as_str() {
            // Spec: one space-separated value; containers/image: repeated fields. Both work.
            "scope" => {
                for scope in value.split(' ').filter(|s| !s.is_empty()) {
                    if scopes.len() == MAX_SCOPES {
                        return Err(bad_request(
                            "UNSUPPORTED",
                            format!("more than {MAX_SCOPES} scopes in one request"),
                        ));
                    }
                    scopes.push(
                        scope
                            .parse::<Scope>()
                            .map_err(|e| bad_request("NAME_INVALID", e.to_string()))?,
                    );
                }
            }
            "service" if value != app.issuer.service => {
                return Err(bad_request(
                    "UNSUPPORTED",
                    format!(
                        "unknown service {value:?}; this server issues tokens for {:?}",
                        app.issuer.service
                    ),
                ));
            }
            "offline_token" => offline = value == "true",
            "access_type" => offline = value == "offline",
            "account" if !value.is_empty() => account = Some(value),
            "grant_type" => grant_type = Some(value),
            "username" => username = Some(value),
            "password" => password = Some(value),
            "refresh_token" => refresh_token = Some(value),
            "subject_token" => subject_token = Some(value),
            "subject_token_type" => subject_token_type = Some(value),
            _ => {}
        }
    }
    let missing = |field: &str| bad_request("UNSUPPORTED", format!("grant_type needs `{field}`"));
    let grant = match grant_type.as_deref() {
        None => match basic {
            Some((user, password)) => Grant::Password { user, password },
            None => Grant::None,
        },
        Some("password") => Grant::Password {
            user: username.ok_or_else(|| missing("username"))?,
            password: password.ok_or_else(|| missing("password"))?,
        },
        Some("refresh_token") => {
            Grant::Refresh(refresh_token.ok_or_else(|| missing("refresh_token"))?)
        }
        Some(TOKEN_EXCHANGE) => {
            let kind = subject_token_type.ok_or_else(|| missing("subject_token_type"))?;
            if !SUBJECT_TOKEN_TYPES.contains(&kind.as_str()) {
                return Err(bad_request(
                    "UNSUPPORTED",
                    format!(
                        "subject_token_type {kind:?} is not a JWT type; use one of {SUBJECT_TOKEN_TYPES:?}"
                    ),
                ));
            }
            Grant::Exchange(subject_token.ok_or_else(|| missing("subject_token"))?)
        }
        Some(other) => {
            return Err(bad_request(
                "UNSUPPORTED",
                format!(
                    "grant_type {other:?} is not supported (use password, refresh_token or \
                     {TOKEN_EXCHANGE})"
                ),
            ));
        }
    };
    Ok(TokenRequest {
        grant,
        scopes,
        offline,
        account,
    })
}

impl App {
    async fn issue(
        self: &Arc<Self>,
        request: TokenRequest,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, ApiError> {
        // Who asks (nobody: anonymous), as the name they logged in with, and the refresh
        // token to hand back: the one presented, or one to mint for the credential just
        // checked (never for a workload token, which it would outlive).
        let exchange = matches!(request.grant, Grant::Exchange(_));
        // A personal token's narrowing: the token grants no more than it.
        let mut narrowed = None;
        let (principal, refresh): (Option<(Principal, String)>, Option<Refresh>) = match request
            .grant
        {
            Grant::None if self.config.identity.anonymous => (None, None),
            Grant::None => {
                return Err(ApiError::Unauthorized("authentication required".into()));
            }
            Grant::Password { user, password } => {
                let login = self.login(&user, password, client_ip).await?;
                narrowed = login.narrowed;
                (
                    Some((login.principal, user)),
                    login.credential.map(Refresh::Mint),
                )
            }
            Grant::Exchange(token) => {
                let principal = match self.identity.login_token(&token).await {
                    Ok(principal) => principal,
                    Err(error) => {
                        let who = self.identity.claimed_subject(&token);
                        self.refused_login("oidc", &who, client_ip, &error);
                        return Err(login_refused(error));
                    }
                };
                let name = principal.name.clone();
                (Some((principal, name)), None)
            }
            Grant::Refresh(token) => {
                let app = self.clone();
                let (refresh, token) = blocking(move || {
                    let ring = app.keys.load();
                    app.issuer
                        .verify_refresh(&ring.all(), &token)
                        .map(|refresh| (refresh, token))
                        .map_err(|e| ApiError::Unauthorized(e.to_string()))
                })
                .await?;
                let user = refresh.subject;
                let principal = match self.identity.still_holds(&user, &refresh.credential).await {
                    Ok(principal) => principal,
                    Err(error) => {
                        self.refused_login("refresh", &user, client_ip, &error);
                        return Err(login_refused(error));
                    }
                };
                (Some((principal, user)), Some(Refresh::Keep(token)))
            }
        };
        // `account` is the name the client logged in with; a workload's account comes from
        // its token's claims, whatever name came with it.
        if let (Some(asked), Some((principal, logged_in_as))) = (&request.account, &principal)
            && principal.origin == Origin::Htpasswd
            && asked != logged_in_as
        {
            return Err(ApiError::Unauthorized(format!(
                "account {asked:?} does not match the credentials of {logged_in_as:?}"
            )));
        }
        let principal = principal.map(|(principal, _)| principal);
        let account = match &principal {
            Some(principal) => App::account(principal),
            None => Account::anonymous(),
        };
        let mut access = Vec::with_capacity(request.scopes.len());
        for scope in &request.scopes {
            let mut policy_request =
                PolicyRequest::new(account.clone(), scope.into(), &self.issuer.service);
            policy_request.client_ip = Some(client_ip.to_string());
            let outcome = self.decide(Source::Token, policy_request).await;
            let actions = outcome
                .granted
                .iter()
                .filter(|action| {
                    narrowed
                        .as_ref()
                        .is_none_or(|n| n.limit.allows(&scope.resource_type, &scope.name, action))
                })
                .cloned()
                .collect();
            access.push(Access {
                resource_type: scope.resource_type.clone(),
                class: scope.class.clone(),
                name: scope.name.clone(),
                actions,
            });
        }
        let offline = request.offline && self.issuer.refresh_enabled();
        let (app, ring) = (self.clone(), self.keys.load_full());
        let quick = ring.current.signs_quickly();
        let sign = move || {
            app.sign(
                &ring.current,
                principal.as_ref(),
                access,
                refresh,
                offline,
                narrowed.as_ref(),
            )
        };
        let (issued, refresh_token) = if quick {
            sign()?
        } else {
            blocking(sign).await?
        };
        let mut body = serde_json::json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": humantime::format_rfc3339_seconds(issued.issued_at).to_string(),
        });
        if let Some(refresh) = refresh_token {
            body["refresh_token"] = serde_json::Value::String(refresh);
        }
        if exchange {
            body["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token".into();
            body["token_type"] = "Bearer".into();
        }
        Ok(json(StatusCode::OK, &body))
    }

    /// The access token, and the refresh token the client should keep: the one it
    /// presented, or a new one for an offline login. An access token minted with a personal
    /// token carries its id and narrowing.
    fn sign(
        &self,
        key: &SigningKey,
        principal: Option<&Principal>,
        access: Vec<Access>,
        refresh: Option<Refresh>,
        offline: bool,
        narrowed: Option<&Narrowed>,
    ) -> Result<(Issued, Option<String>), ApiError> {
        let failed = |e: TokenError| ApiError::Internal(e.to_string());
        let subject = principal.map_or("", |p| p.name.as_str());
        // Gateway mode does not look up who is not in the htpasswd: the token says it.
        let carried =
            principal
                .filter(|p| p.origin != Origin::Htpasswd)
                .map(|p| crate::token::Principal {
                    source: p.origin.name().to_string(),
                    groups: p.groups.clone(),
                    claims: p.claims.clone(),
                });
        let issued = self
            .issuer
            .access_token(key, subject, access, carried.as_ref(), narrowed)
            .map_err(failed)?;
        let refresh_token = match refresh {
            Some(Refresh::Keep(token)) => Some(token),
            Some(Refresh::Mint(credential)) if offline && !subject.is_empty() => Some(
                self.issuer
                    .refresh_token(key, subject, &credential)
                    .map_err(failed)?,
            ),
            _ => None,
        };
        Ok((issued, refresh_token))
    }
}

/// Runs CPU work (a signature check, an RSA signature) on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("token task failed: {e}")))?
}
