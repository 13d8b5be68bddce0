//! The one place errors become responses: every failure of a request is an [`ApiError`],
//! answered with its status and a registry-style `{"errors": [...]}` body.

use super::Body;
use crate::proxy::{RouteError, UpstreamError};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use std::time::Duration;

/// Everything that can go wrong in a request, mapped to a status and a registry-style body
/// in [`ApiError::into_response`] only.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Malformed input; the code is a registry error code.
    #[error("{message}")]
    BadRequest {
        /// Registry error code, e.g. `NAME_INVALID`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such route.
    #[error("not found")]
    NotFound,
    /// Something that cannot exist; the code is a registry error code.
    #[error("{message}")]
    Unknown {
        /// Registry error code, e.g. `MANIFEST_UNKNOWN`.
        code: &'static str,
        /// Why it cannot exist.
        message: String,
    },
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A registry request without usable credentials or access: 401 with a Bearer
    /// challenge (`WWW-Authenticate`), so clients know where to get a token.
    #[error("{message}")]
    Challenge {
        /// The `WWW-Authenticate` value.
        challenge: String,
        /// What is missing.
        message: String,
    },
    /// Authenticated, not allowed (Basic credentials: no token to upgrade).
    #[error("{0}")]
    Denied(String),
    /// A request body (a token request's form) that did not arrive in time.
    #[error("the request body did not arrive within {} s", .0.as_secs())]
    SlowBody(Duration),
    /// Too many failed logins: wait this long.
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    TooManyRequests(Duration),
    /// Work of this kind is queued past its bound (catalog listings): 503, retry shortly.
    #[error("{0}; retry shortly")]
    Busy(&'static str),
    /// The registry behind the gateway failed; details are logged, not sent.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Our fault; details are logged, not sent.
    #[error("{0}")]
    Internal(String),
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> ApiError {
        match error {
            RouteError::NotFound => ApiError::NotFound,
            RouteError::MethodNotAllowed(_) => ApiError::MethodNotAllowed,
            RouteError::Invalid(code, message) => ApiError::BadRequest { code, message },
            RouteError::Unknown(code, message) => ApiError::Unknown { code, message },
        }
    }
}

impl ApiError {
    pub(super) fn into_response(self) -> Response<Body> {
        let (status, code) = match &self {
            ApiError::Unauthorized(_) | ApiError::Challenge { .. } => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
            }
            ApiError::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            ApiError::Upstream(UpstreamError::Unavailable { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            ApiError::Upstream(UpstreamError::Timeout { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE")
            }
            ApiError::Upstream(UpstreamError::Failed { .. }) => {
                (StatusCode::BAD_GATEWAY, "UNKNOWN")
            }
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, *code),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::Unknown { code, .. } => (StatusCode::NOT_FOUND, *code),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            ApiError::SlowBody(_) => (StatusCode::REQUEST_TIMEOUT, "UNKNOWN"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        };
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_string()
            }
            ApiError::Upstream(error) => {
                tracing::warn!(%error, "upstream registry failed");
                "the registry behind the gateway is unavailable; try again".to_string()
            }
            other => other.to_string(),
        };
        let body =
            serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
        let mut response = json(status, &body);
        let retry_after = match &self {
            ApiError::TooManyRequests(wait) => Some(wait.as_secs().max(1)),
            ApiError::Busy(_) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        let challenge = match &self {
            ApiError::Challenge { challenge, .. } => HeaderValue::from_str(challenge).ok(),
            ApiError::Unauthorized(_) => {
                Some(HeaderValue::from_static("Basic realm=\"portcullis\""))
            }
            _ => None,
        };
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(hyper::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}
