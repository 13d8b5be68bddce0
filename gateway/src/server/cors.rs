//! CORS for browser-based registry UIs (Joxit's docker-registry-ui and the like) on origins
//! `[server] cors_origins` names: their pages call the token endpoint with credentials and,
//! in gateway mode, the registry API with a Bearer token, and must read our challenges and
//! digests. Other origins get no CORS headers, so browsers keep their pages out.

use super::Body;
use super::error::full;
use hyper::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, HeaderValue, ORIGIN, VARY,
};
use hyper::{HeaderMap, Method, Response, StatusCode};

/// What a UI's script may read of our answers: the challenge (where to get a token), and
/// what registry clients read (digests, pagination, the API version).
const EXPOSED: &str =
    "WWW-Authenticate, Docker-Content-Digest, Docker-Distribution-Api-Version, Link, Location";
/// What a UI may send: credentials, and what registry requests carry.
const ALLOWED_HEADERS: &str = "Authorization, Accept, Content-Type";
/// Browsers may cache a preflight this long.
const MAX_AGE: &str = "600";

/// The request's `Origin`, when it is one of `allowed`.
pub(super) fn allowed_origin(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed.iter().any(|a| a == text).then(|| origin.clone())
}

/// Why a state-changing registry request from a browser page on another site is refused,
/// if it is one. A browser that remembers Basic credentials for the gateway (as browser UIs
/// rely on) would otherwise add them to a form or script another site makes it send: a push
/// or delete nobody meant. Browsers mark such requests with `Origin` and `Sec-Fetch-Site`;
/// registry clients send neither, and the origins in `allowed` are trusted.
pub(super) fn cross_site(
    method: &Method,
    headers: &HeaderMap,
    own: &str,
    allowed: &[String],
) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok());
    let trusted = |o: &str| o == own || allowed.iter().any(|a| a == o);
    let site = headers
        .get("sec-fetch-site")
        .and_then(|s| s.to_str().ok())
        .unwrap_or("");
    let foreign = match origin {
        Some(origin) => !trusted(origin),
        None => matches!(site, "cross-site" | "same-site"),
    };
    foreign.then(|| {
        format!(
            "a {method} from a page of {} is refused: only [server] cors_origins may send \
             requests that change the registry from a browser",
            origin.unwrap_or("another site")
        )
    })
}

/// True for a CORS preflight (an `OPTIONS` naming the method to come).
pub(super) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from `origin`: which methods `route` takes, and the headers
/// allowed. No credentials are checked: a preflight carries none.
pub(super) fn preflight(origin: HeaderValue, route: &str) -> Response<Body> {
    let methods = match route {
        "token" => "GET, POST",
        "jwks" => "GET",
        _ => "GET, HEAD, POST, PUT, PATCH, DELETE",
    };
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    allow(&mut response, origin);
    response
}

/// Lets `origin` read `response` (errors included: a UI must see a 401's challenge).
pub(super) fn allow(response: &mut Response<Body>, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    headers.append(VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_origins_are_allowed() {
        let allowed = vec!["https://ui.example.com".to_string()];
        let mut headers = HeaderMap::new();
        assert_eq!(allowed_origin(&headers, &allowed), None);
        headers.insert(ORIGIN, HeaderValue::from_static("https://ui.example.com"));
        assert!(allowed_origin(&headers, &allowed).is_some());
        headers.insert(
            ORIGIN,
            HeaderValue::from_static("https://ui.example.com.evil"),
        );
        assert_eq!(allowed_origin(&headers, &allowed), None);
        headers.insert(ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(allowed_origin(&headers, &allowed), None);
    }
}
