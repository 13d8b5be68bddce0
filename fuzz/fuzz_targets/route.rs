//! Fuzzes the request-to-access mapper: any method, path and query map to scopes or are
//! refused, and a mapped request names only repositories that pass the name grammar.
#![no_main]

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

fuzz_target!(|input: (u8, &str)| {
    let (method, target) = input;
    let method = &METHODS[usize::from(method) % METHODS.len()];
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if let Ok(route) = Route::parse(method, path, query) {
        for (scope, _) in route.needs() {
            if scope.type_ == "repository" {
                assert!(validate_name(&scope.name).is_ok(), "{path} mapped to {}", scope.name);
            }
        }
    }
});
