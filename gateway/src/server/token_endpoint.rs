//! `GET|POST /token`: authenticate (Basic, OAuth2 password or refresh grant, or anonymous),
//! ask the policies about every scope, and sign a token holding exactly the granted subset.

use super::credentials::{Credentials, client_ip, credentials};
use super::{ApiError, App, Body, json};
use crate::decision_log::Source;
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

enum Grant {
    None,
    Password { user: String, password: String },
    Refresh(String),
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
            .find(|(key, _)| key == "password" || key == "refresh_token")
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
        Some(other) => {
            return Err(bad_request(
                "UNSUPPORTED",
                format!("grant_type {other:?} is not supported (use password or refresh_token)"),
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
        // The refresh token to hand back: the one presented, or one to mint for the
        // credential just checked.
        let (user, refresh) = match request.grant {
            Grant::None if self.config.identity.anonymous => (None, None),
            Grant::None => {
                return Err(ApiError::Unauthorized("authentication required".into()));
            }
            Grant::Password { user, password } => {
                let Some(credential) = self.login(&user, password, client_ip).await? else {
                    return Err(ApiError::Unauthorized(
                        "invalid username or password".into(),
                    ));
                };
                (Some(user), Some(Refresh::Mint(credential)))
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
                self.identity
                    .still_holds(&user, &refresh.credential)
                    .map_err(ApiError::Unauthorized)?;
                (Some(user), Some(Refresh::Keep(token)))
            }
        };
        if let (Some(asked), Some(user)) = (&request.account, &user)
            && asked != user
        {
            return Err(ApiError::Unauthorized(format!(
                "account {asked:?} does not match the credentials of {user:?}"
            )));
        }
        let account = match &user {
            Some(name) => self.account(name),
            None => Account::anonymous(),
        };
        let mut access = Vec::with_capacity(request.scopes.len());
        for scope in &request.scopes {
            let mut policy_request =
                PolicyRequest::new(account.clone(), scope.into(), &self.issuer.service);
            policy_request.client_ip = Some(client_ip.to_string());
            let outcome = self.decide(Source::Token, policy_request).await;
            access.push(Access {
                resource_type: scope.resource_type.clone(),
                class: scope.class.clone(),
                name: scope.name.clone(),
                actions: outcome.granted.clone(),
            });
        }
        let offline = request.offline && self.issuer.refresh_enabled();
        let (app, ring) = (self.clone(), self.keys.load_full());
        let quick = ring.current.signs_quickly();
        let sign = move || app.sign(&ring.current, user, access, refresh, offline);
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
        Ok(json(StatusCode::OK, &body))
    }

    /// The access token, and the refresh token the client should keep: the one it
    /// presented, or a new one for an offline login.
    fn sign(
        &self,
        key: &SigningKey,
        user: Option<String>,
        access: Vec<Access>,
        refresh: Option<Refresh>,
        offline: bool,
    ) -> Result<(Issued, Option<String>), ApiError> {
        let failed = |e: TokenError| ApiError::Internal(e.to_string());
        let subject = user.as_deref().unwrap_or("");
        let issued = self
            .issuer
            .access_token(key, subject, access)
            .map_err(failed)?;
        let refresh_token = match (refresh, &user) {
            (Some(Refresh::Keep(token)), _) => Some(token),
            (Some(Refresh::Mint(credential)), Some(user)) if offline => Some(
                self.issuer
                    .refresh_token(key, user, &credential)
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
