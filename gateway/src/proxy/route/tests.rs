//! The access table of registry-auth-protocol.md section 5, and the paths that must never
//! reach the registry.

use super::*;

fn route(method: Method, path_and_query: &str) -> Result<Route, RouteError> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    Route::parse(&method, path, query, &HeaderMap::new())
}

/// `type:name:actions` of every scope a request needs.
fn needs(method: Method, path: &str) -> Vec<String> {
    route(method, path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .needs()
        .iter()
        .map(|(s, _)| format!("{}:{}:{}", s.type_, s.name, s.actions.join(",")))
        .collect()
}

const DIGEST: &str = "sha256:4d3c5fe3e2f4e3f0d0b6b0b4e0d6c6f5a6e1b9c0d0e0f0a0b0c0d0e0f0a0b0c0";

#[test]
fn the_access_table() {
    let m = format!("/v2/team/app/manifests/{DIGEST}");
    let b = format!("/v2/team/app/blobs/{DIGEST}");
    let cases: Vec<(Method, String, Vec<&str>)> = vec![
        (Method::GET, "/v2/".into(), vec![]),
        (Method::HEAD, "/v2/".into(), vec![]),
        (
            Method::GET,
            "/v2/_catalog".into(),
            vec!["registry:catalog:*"],
        ),
        (
            Method::GET,
            "/v2/team/app/manifests/latest".into(),
            vec!["repository:team/app:pull"],
        ),
        (Method::HEAD, m.clone(), vec!["repository:team/app:pull"]),
        (
            Method::PUT,
            "/v2/team/app/manifests/v1".into(),
            vec!["repository:team/app:pull,push"],
        ),
        (Method::DELETE, m, vec!["repository:team/app:delete"]),
        (Method::GET, b.clone(), vec!["repository:team/app:pull"]),
        (Method::DELETE, b, vec!["repository:team/app:delete"]),
        (
            Method::GET,
            "/v2/team/app/tags/list".into(),
            vec!["repository:team/app:pull"],
        ),
        (
            Method::GET,
            format!("/v2/team/app/referrers/{DIGEST}"),
            vec!["repository:team/app:pull"],
        ),
        (
            Method::POST,
            "/v2/team/app/blobs/uploads/".into(),
            vec!["repository:team/app:pull,push"],
        ),
        (
            Method::PATCH,
            "/v2/team/app/blobs/uploads/0b6e-41_a.=".into(),
            vec!["repository:team/app:pull,push"],
        ),
        (
            Method::PUT,
            format!("/v2/team/app/blobs/uploads/u1?_state=x&digest={DIGEST}"),
            vec!["repository:team/app:pull,push"],
        ),
        (
            Method::GET,
            "/v2/team/app/blobs/uploads/u1".into(),
            vec!["repository:team/app:pull"],
        ),
        (
            Method::DELETE,
            "/v2/team/app/blobs/uploads/u1".into(),
            vec!["repository:team/app:delete"],
        ),
        (
            Method::POST,
            format!("/v2/team/app/blobs/uploads/?mount={DIGEST}&from=other/lib"),
            vec!["repository:team/app:pull,push", "repository:other/lib:pull"],
        ),
    ];
    for (method, path, expected) in cases {
        assert_eq!(needs(method.clone(), &path), expected, "{method} {path}");
    }
}

#[test]
fn the_operation_carries_kind_reference_and_mount_source() {
    let r = route(Method::PUT, "/v2/a/manifests/v1.0-rc_1").expect("route");
    let (_, op) = &r.needs()[0];
    assert_eq!((op.method.as_str(), op.kind), ("PUT", Kind::Manifest));
    assert!(matches!(&op.reference, Some(Reference::Tag(t)) if t == "v1.0-rc_1"));

    let r = route(Method::GET, &format!("/v2/a/manifests/{DIGEST}")).expect("route");
    assert!(matches!(&r.needs()[0].1.reference, Some(Reference::Digest(d)) if d == DIGEST));

    let r = route(
        Method::POST,
        &format!("/v2/a/blobs/uploads/?from=b&mount={DIGEST}"),
    )
    .expect("route");
    let Target::Repository { mount, .. } = &r.target else {
        panic!("repository")
    };
    assert_eq!(mount.as_ref().map(|m| m.from.as_str()), Some("b"));
    for (_, op) in r.needs() {
        assert_eq!(op.kind, Kind::Upload);
        assert_eq!(op.mount_from.as_deref(), Some("b"));
    }
    // `from` without `mount` (or on another method) is no mount.
    let r = route(Method::POST, "/v2/a/blobs/uploads/?from=b").expect("route");
    assert_eq!(r.needs().len(), 1);

    let r = route(Method::GET, "/v2/_catalog?n=10&last=x").expect("route");
    assert_eq!(r.needs()[0].1.kind, Kind::Catalog);
}

#[test]
fn names_may_hold_endpoint_words_like_the_registry_router_allows() {
    assert_eq!(
        needs(Method::GET, "/v2/a/manifests/b/manifests/latest"),
        ["repository:a/manifests/b:pull"]
    );
    assert_eq!(
        needs(Method::GET, &format!("/v2/x/manifests/blobs/{DIGEST}")),
        ["repository:x/manifests:pull"]
    );
    assert_eq!(
        needs(Method::GET, "/v2/tags/tags/list"),
        ["repository:tags:pull"]
    );
    assert_eq!(
        needs(Method::POST, "/v2/blobs/blobs/uploads/"),
        ["repository:blobs:pull,push"]
    );
}

#[test]
fn path_tricks_never_reach_the_registry() {
    let refused = [
        "/v2/a/%2e%2e/b/manifests/latest",
        "/v2/a%2fb/manifests/latest",
        "/v2/../v2/a/manifests/latest",
        "/v2/a/../b/manifests/latest",
        "/v2/a//b/manifests/latest",
        "/v2//a/manifests/latest",
        "/v2/./a/manifests/latest",
        "/v2/A/manifests/latest",
        "/v2/a:5000/b/manifests/latest",
        "/v2/a/manifests/-bad",
        "/v2/a/manifests/",
        "/v2/a/blobs/not-a-digest",
        "/v2/a/blobs/sha256:",
        "/v2/a/blobs/uploads/u/x",
        "/v2/a/blobs/uploads/bad$id",
        "/v2/a/tags/list/",
        "/v2/a/unknown/x",
        "/v2/a",
        "/v2",
        "/v2/_catalog/",
        "/v1/a/manifests/latest",
    ];
    for path in refused {
        assert!(route(Method::GET, path).is_err(), "{path} must be refused");
    }
    let too_long_tag = format!("/v2/a/manifests/{}", "t".repeat(129));
    assert!(route(Method::GET, &too_long_tag).is_err());
}

#[test]
fn errors_say_what_kind_of_refusal_it_is() {
    assert_eq!(
        route(Method::GET, "/v2/a/unknown/x").err(),
        Some(RouteError::NotFound)
    );
    assert_eq!(
        route(Method::POST, "/v2/a/manifests/latest").err(),
        Some(RouteError::MethodNotAllowed(Method::POST))
    );
    assert_eq!(
        route(Method::DELETE, "/v2/_catalog").err(),
        Some(RouteError::MethodNotAllowed(Method::DELETE))
    );
    assert!(matches!(
        route(Method::GET, "/v2/A/tags/list"),
        Err(RouteError::Invalid("NAME_INVALID", _))
    ));
    assert!(matches!(
        route(Method::GET, "/v2/a/manifests/%41"),
        Err(RouteError::Invalid("NAME_INVALID", _))
    ));
}

#[test]
fn queries_that_could_smuggle_a_repository_are_refused() {
    let twice = format!("/v2/a/blobs/uploads/?mount={DIGEST}&from=ok&from=secret");
    assert!(
        matches!(route(Method::POST, &twice), Err(RouteError::Invalid(_, m)) if m.contains("`from` is given twice"))
    );
    let semicolon = format!("/v2/a/blobs/uploads/?mount={DIGEST}&from=ok;from=secret");
    assert!(route(Method::POST, &semicolon).is_err());
    let bad_from = format!("/v2/a/blobs/uploads/?mount={DIGEST}&from=..%2Fsecret");
    assert!(route(Method::POST, &bad_from).is_err());
    // An encoded key is the same key.
    let encoded = format!("/v2/a/blobs/uploads/?mount={DIGEST}&from=ok&fr%6Fm=secret");
    assert!(route(Method::POST, &encoded).is_err());
}

#[test]
fn a_refused_mount_becomes_a_plain_upload_start() {
    assert_eq!(without_mount(&format!("mount={DIGEST}&from=b")), "");
    assert_eq!(without_mount("x=1&mount=d&fr%6Fm=b&y=2"), "x=1&y=2");
    assert_eq!(without_mount("digest=sha256:ab"), "digest=sha256:ab");
}

/// Issue 24: a reference is a valid tag or a digest the registry can verify, before anything
/// is decided; a read of one that cannot exist is the registry's 404, a write a 400.
#[test]
fn references_are_tags_or_verifiable_digests() {
    for bad in [
        "sha256:baddigeststring",
        "sha256:ABCDEF",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:4D3C5FE3E2F4E3F0D0B6B0B4E0D6C6F5A6E1B9C0D0E0F0A0B0C0D0E0F0A0B0C0",
    ] {
        let path = format!("/v2/a/manifests/{bad}");
        assert!(
            matches!(
                route(Method::GET, &path),
                Err(RouteError::Unknown("MANIFEST_UNKNOWN", _))
            ),
            "{bad}"
        );
        assert!(
            matches!(
                route(Method::PUT, &path),
                Err(RouteError::Invalid("DIGEST_INVALID", _))
            ),
            "{bad}"
        );
        assert!(
            route(Method::GET, &format!("/v2/a/blobs/{bad}")).is_err(),
            "{bad}"
        );
    }
    assert!(matches!(
        route(Method::HEAD, "/v2/a/manifests/.INVALID_MANIFEST_NAME"),
        Err(RouteError::Unknown("MANIFEST_UNKNOWN", _))
    ));
    assert!(matches!(
        route(Method::PUT, "/v2/a/manifests/.INVALID_MANIFEST_NAME"),
        Err(RouteError::Invalid("TAG_INVALID", _))
    ));
    let sha512 = format!("sha512:{}", "0".repeat(128));
    assert!(route(Method::GET, &format!("/v2/a/manifests/{sha512}")).is_ok());
    assert!(route(Method::GET, &format!("/v2/a/manifests/{DIGEST}")).is_ok());
}

/// Issue 24: every `?tag=` of a manifest PUT is decided as a push of that tag; a write with
/// a parameter the gateway does not understand is refused rather than passed on.
#[test]
fn tag_parameters_are_decided_and_unknown_write_parameters_refused() {
    let put = route(
        Method::PUT,
        &format!("/v2/a/manifests/{DIGEST}?tag=v1&tag=latest"),
    )
    .expect("a PUT with tags");
    let references: Vec<String> = put
        .needs()
        .into_iter()
        .map(|(scope, operation)| {
            assert_eq!(
                format!("{}:{}", scope.name, scope.actions.join(",")),
                "a:pull,push"
            );
            match operation.reference {
                Some(Reference::Digest(digest)) => format!("digest {digest}"),
                Some(Reference::Tag(tag)) => format!("tag {tag}"),
                None => "none".into(),
            }
        })
        .collect();
    assert_eq!(
        references,
        [
            format!("digest {DIGEST}"),
            "tag v1".into(),
            "tag latest".into()
        ]
    );
    assert!(matches!(
        route(Method::PUT, &format!("/v2/a/manifests/{DIGEST}?tag=-bad")),
        Err(RouteError::Invalid("TAG_INVALID", _))
    ));
    for refused in [
        format!("/v2/a/manifests/{DIGEST}?tags=v1"),
        format!("/v2/a/manifests/{DIGEST}?from=b"),
        "/v2/a/manifests/v1?overwrite=true".to_string(),
        format!("/v2/a/blobs/uploads/?tag=v1&digest={DIGEST}"),
    ] {
        let method = if refused.contains("uploads") {
            Method::POST
        } else {
            Method::PUT
        };
        assert!(
            matches!(route(method, &refused), Err(RouteError::Invalid("UNSUPPORTED", m)) if m.contains("not understood")),
            "{refused}"
        );
    }
    assert!(matches!(
        route(Method::DELETE, &format!("/v2/a/manifests/{DIGEST}?tag=v1")),
        Err(RouteError::Invalid("UNSUPPORTED", _))
    ));
    // What clients send still passes: an upload's state and digest, reads with paging.
    assert!(
        route(
            Method::PUT,
            &format!("/v2/a/blobs/uploads/u1?_state=x&digest={DIGEST}")
        )
        .is_ok()
    );
    assert!(route(Method::PATCH, "/v2/a/blobs/uploads/u1?_state=x").is_ok());
    assert!(route(Method::GET, "/v2/a/tags/list?n=10&last=v1").is_ok());
}
