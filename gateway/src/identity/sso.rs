//! Single sign-on for people: the console sends them to an OpenID provider (authorization
//! code flow with PKCE), and the code it gets back is exchanged for an ID token, verified
//! like a workload's (the provider's keys, audience = our client id, required claims), whose
//! claims make the account. The provider's refresh token, when it grants one, is how a
//! personal token of an SSO person later asks whether they are still there.

use super::{LoginError, OidcIssuer, Principal};
use crate::client::HttpsClient;
use crate::config;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// The provider's token endpoint must answer within this time.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Token responses are a few KiB.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Personal tokens whose owner was confirmed recently, remembered at most.
const REMEMBERED: usize = 10_000;
/// Claims that are the protocol's, not the person's: not kept in sessions or handed on.
const PROTOCOL_CLAIMS: [&str; 13] = [
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "auth_time",
    "sid",
    "azp",
    "jti",
    "acr",
];

/// The configured provider.
pub struct Sso {
    config: config::Sso,
    /// Verifies ID tokens and makes the account from their claims.
    verifier: OidcIssuer,
    client_secret: Option<String>,
    client: HttpsClient<Full<Bytes>>,
    /// Personal tokens (by id) whose owner the provider confirmed, and when.
    confirmed: quick_cache::sync::Cache<String, Instant>,
    /// The provider's discovery document as last fetched (or why not), and when: anyone
    /// can open the sign-in link, and each must not cost a fetch.
    discovered: tokio::sync::Mutex<Option<(Result<Value, String>, Instant)>>,
}

/// How long a discovery document is kept; a failure to fetch it, [`RETRY_DISCOVERY`].
const KEEP_DISCOVERY: Duration = Duration::from_secs(3600);
/// See [`KEEP_DISCOVERY`].
const RETRY_DISCOVERY: Duration = Duration::from_secs(10);

/// What a finished sign-in gives.
pub struct SignedIn {
    /// The person, as the policies will see them.
    pub principal: Principal,
    /// The provider's refresh token, when it granted one (`offline_access`).
    pub refresh_token: Option<String>,
    /// The directory entry's credential, when the provider signs in the directory's people.
    pub credential: Option<String>,
}

impl Sso {
    /// The provider as configured; nothing is fetched until someone signs in.
    pub fn new(config: &config::Sso) -> Result<Sso, String> {
        let at = |e: String| format!("[console.sso] {}: {e}", config.issuer);
        let client_secret = match &config.client_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| at(format!("client_secret_file {}: {e}", path.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => None,
        };
        Ok(Sso {
            verifier: OidcIssuer::new(&config.issuer()).map_err(at)?,
            client: crate::client::https_client(config.ca.as_deref(), "[console.sso] ca", TIMEOUT)
                .map_err(at)?,
            client_secret,
            confirmed: quick_cache::sync::Cache::new(REMEMBERED),
            discovered: tokio::sync::Mutex::new(None),
            config: config.clone(),
        })
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// True when the provider signs in the directory's own people (`directory_users`).
    pub fn directory_users(&self) -> bool {
        self.config.directory_users
    }

    /// Where to send the browser: the provider's authorization endpoint with our client id,
    /// `redirect_uri`, the scopes, `state`, `nonce`, and the PKCE challenge of `verifier`.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, LoginError> {
        let endpoint = self.endpoint("authorization_endpoint").await?;
        let challenge = data_encoding::BASE64URL_NOPAD.encode(&Sha256::digest(verifier.as_bytes()));
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(prompt) = &self.config.prompt {
            query.append_pair("prompt", prompt);
        }
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        Ok(format!("{endpoint}{separator}{}", query.finish()))
    }

    /// Exchanges the provider's `code` for the person: the ID token must verify and carry
    /// `nonce`.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<SignedIn, LoginError> {
        let answer = self
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ])
            .await?;
        let id_token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| self.refused("the provider's answer holds no ID token".into()))?;
        let mut principal = self.verifier.login(id_token).await?;
        if !principal
            .claims
            .iter()
            .any(|(name, value)| name == "nonce" && value == nonce)
        {
            return Err(
                self.refused("the ID token is not the one this sign-in asked for (nonce)".into())
            );
        }
        principal
            .claims
            .retain(|(name, _)| !PROTOCOL_CLAIMS.contains(&name.as_str()));
        Ok(SignedIn {
            principal,
            refresh_token: answer
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_string),
            credential: None,
        })
    }

    /// Whether the provider still knows the owner of personal token `id`, by redeeming
    /// their `refresh_token` (asked at most once per `recheck_seconds` per token).
    pub async fn still_there(&self, id: &str, refresh_token: &str) -> Result<(), LoginError> {
        let period = Duration::from_secs(self.config.recheck_seconds);
        if self
            .confirmed
            .get(id)
            .is_some_and(|at| at.elapsed() < period)
        {
            return Ok(());
        }
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await?;
        self.confirmed.insert(id.to_string(), Instant::now());
        Ok(())
    }

    /// A POST to the provider's token endpoint, authenticated as our client; its JSON.
    async fn token_request(&self, fields: &[(&str, &str)]) -> Result<Value, LoginError> {
        let endpoint = self.endpoint("token_endpoint").await?;
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.extend_pairs(fields);
            if self.client_secret.is_none() {
                form.append_pair("client_id", &self.config.client_id);
            }
            form.finish()
        };
        let unavailable = |why: String| {
            LoginError::Unavailable(format!("the SSO provider {}: {why}", self.config.issuer))
        };
        let mut request = hyper::Request::post(&endpoint)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| unavailable(e.to_string()))?;
        if let Some(secret) = &self.client_secret {
            // RFC 6749 section 2.3.1: both parts form-encoded, then Basic.
            let encode =
                |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic = data_encoding::BASE64.encode(
                format!("{}:{}", encode(&self.config.client_id), encode(secret)).as_bytes(),
            );
            let value = HeaderValue::from_str(&format!("Basic {basic}"))
                .map_err(|e| unavailable(e.to_string()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unavailable(crate::client::describe(&e, "[console.sso] ca")))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .to_bytes();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(json);
            }
            let error = json.get("error").and_then(Value::as_str).unwrap_or("");
            let description = json
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            if status.is_client_error() {
                // invalid_grant: the code is spent or stale, or the person is gone.
                Err(self.refused(format!("the provider said {error}: {description}")))
            } else {
                Err(unavailable(format!("{endpoint} answered {status}")))
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| unavailable(format!("no answer within {} s", TIMEOUT.as_secs())))?
    }

    async fn endpoint(&self, name: &str) -> Result<String, LoginError> {
        let unavailable = |why: String| {
            LoginError::Unavailable(format!("the SSO provider {}: {why}", self.config.issuer))
        };
        let discovery = self.discovery().await.map_err(unavailable)?;
        self.verifier
            .endpoint(&discovery, name)
            .map_err(unavailable)
    }

    /// The discovery document, fetched at most once per [`KEEP_DISCOVERY`] (a failure, once
    /// per [`RETRY_DISCOVERY`]), one fetch at a time.
    async fn discovery(&self) -> Result<Value, String> {
        let mut discovered = self.discovered.lock().await;
        if let Some((document, at)) = &*discovered {
            let keep = if document.is_ok() {
                KEEP_DISCOVERY
            } else {
                RETRY_DISCOVERY
            };
            if at.elapsed() < keep {
                return document.clone();
            }
        }
        let document = self.verifier.discovery().await;
        *discovered = Some((document.clone(), Instant::now()));
        document
    }

    fn refused(&self, why: String) -> LoginError {
        LoginError::Refused(format!("{}: {why}", self.config.issuer))
    }
}
