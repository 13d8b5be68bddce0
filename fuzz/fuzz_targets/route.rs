//! Fuzzes the request-to-access mapper: any method, path, query and Content-Type map to
//! scopes or are refused; a mapped request names only repositories that pass the name
//! grammar, and never carries a body the registry would read parameters from (Go's
//! `FormValue` takes a url-encoded or multipart form body of POST, PUT and PATCH).
#![no_main]

use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::Method;
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::Route;
use portcullis::scope::validate_name;

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The media type as Go's `mime.ParseMediaType` reads it for `parsePostForm`.
fn go_media_type(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_lowercase()
}

fuzz_target!(|input: (u8, &[u8], &str)| {
    let (method, content_type, target) = input;
    let method = &METHODS[usize::from(method) % METHODS.len()];
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut headers = HeaderMap::new();
    let sent = HeaderValue::from_bytes(content_type).is_ok_and(|value| {
        headers.insert(CONTENT_TYPE, value);
        true
    });
    if let Ok(route) = Route::parse(method, path, query, &headers) {
        for (scope, _) in route.needs() {
            if scope.type_ == "repository" {
                assert!(validate_name(&scope.name).is_ok(), "{path} mapped to {}", scope.name);
            }
        }
        if sent && matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            let media = go_media_type(&String::from_utf8_lossy(content_type));
            assert!(
                media != "application/x-www-form-urlencoded" && media != "multipart/form-data",
                "a form body passed: {content_type:?}"
            );
        }
    }
});
