//! Property tests for every parser of untrusted input, on stable in the normal suite: the
//! same surfaces the cargo-fuzz targets in `fuzz/` explore for longer. Arbitrary input never
//! panics, and well-formed input means what it says.

use crate::config;
use crate::console::Console;
use crate::console::manifest;
use crate::console::pages::browse::{Image, image};
use crate::console::pages::{Frame, Section};
use crate::identity::{Groups, Htpasswd, PersonalTokens, RevocationStore, Revoked};
use crate::proxy::{Route, RouteError, Target};
use crate::scope::Scope;
use crate::seal::SealKeys;
use crate::server::credentials::{Credentials, credentials};
use crate::token::SigningKey;
use crate::token::tests::{issuer, keys};
use arc_swap::ArcSwap;
use data_encoding::BASE64;
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

/// A repository name by the reference grammar: lowercase components joined by `/`.
fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9]{1,8}([._-][a-z0-9]{1,8})?", 1..4).prop_map(|c| c.join("/"))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::PUT),
        Just(Method::POST),
        Just(Method::PATCH),
        Just(Method::DELETE),
    ]
}

/// A body the registry might read parameters from, and how it is sent.
#[derive(Debug, Clone)]
struct Body {
    content_types: Vec<String>,
    fields: Vec<(String, String)>,
}

/// What distribution reads with Go's `r.FormValue(key)` (net/http's `ParseMultipartForm`),
/// modelled independently of the gateway's code: for POST, PUT and PATCH whose first
/// Content-Type has the media type (before `;`, Unicode-trimmed and lowercased) of a
/// url-encoded form, the body's values come before the query's; for `multipart/form-data`
/// with a boundary, after them. The first value wins.
fn go_form_value(
    method: &Method,
    query: &[(String, String)],
    body: &Body,
    key: &str,
) -> Option<String> {
    let mut form: Vec<(String, String)> = Vec::new();
    let parses_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let media = body.content_types.first().map(|ct| {
        let (base, params) = ct.split_once(';').unwrap_or((ct, ""));
        (
            base.trim().to_lowercase(),
            params.to_lowercase().contains("boundary="),
        )
    });
    match media {
        Some((media, _)) if parses_body && media == "application/x-www-form-urlencoded" => {
            form.extend(body.fields.iter().cloned());
            form.extend(query.iter().cloned());
        }
        Some((media, true)) if parses_body && media == "multipart/form-data" => {
            form.extend(query.iter().cloned());
            form.extend(body.fields.iter().cloned());
        }
        _ => form.extend(query.iter().cloned()),
    }
    form.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn form_body() -> impl Strategy<Value = Body> {
    let content_type = prop_oneof![
        Just("application/octet-stream".to_string()),
        Just("application/x-www-form-urlencoded".to_string()),
        Just("Application/X-WWW-Form-URLENCODED; charset=utf-8".to_string()),
        Just(" application/x-www-form-urlencoded\t".to_string()),
        Just("\u{a0}application/x-www-form-urlencoded".to_string()),
        Just("application/x-www-form-urlencoded;;=".to_string()),
        Just("multipart/form-data; boundary=xyz".to_string()),
        Just("MULTIPART/Form-Data;boundary=\"xyz\"".to_string()),
        Just("application/vnd.oci.image.manifest.v1+json".to_string()),
    ];
    let field = prop_oneof![Just("mount"), Just("from"), Just("digest"), Just("_state")]
        .prop_flat_map(|key| (Just(key.to_string()), value()));
    (
        proptest::collection::vec(content_type, 0..3),
        proptest::collection::vec(field, 0..3),
    )
        .prop_map(|(content_types, fields)| Body {
            content_types,
            fields,
        })
}

/// Values for `mount`, `from` and `digest`, valid and not.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("bob/own".to_string()),
        Just("alice/private".to_string()),
        Just(format!("sha256:{}", "a".repeat(64))),
        Just(format!("sha256:{}", "b".repeat(64))),
    ]
}

/// The fields manifests, indexes, configs and referrers have, so generated documents reach
/// the code that reads them.
const MANIFEST_KEYS: &[&str] = &[
    "schemaVersion",
    "mediaType",
    "config",
    "layers",
    "manifests",
    "platform",
    "os",
    "architecture",
    "variant",
    "digest",
    "size",
    "artifactType",
    "subject",
    "annotations",
    "created",
    "Labels",
];

/// Any JSON a hostile registry could serve, shaped like its documents.
fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(prop::sample::select(MANIFEST_KEYS), inner, 0..8)
                .prop_map(|fields| {
                    Value::Object(
                        fields
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    )
                }),
        ]
    })
}

/// Documents with every field of the right type, so that most parse and reach the page:
/// the sizes, names and platforms a hostile registry chooses.
fn shaped_document() -> impl Strategy<Value = Value> {
    let text = || prop_oneof![Just("<script>alert(1)</script>".to_string()), "\\PC{0,40}"];
    let descriptor = (text(), text(), any::<u64>()).prop_map(|(media_type, digest, size)| {
        serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
    });
    let platform = (text(), text(), proptest::option::of(text())).prop_map(|(os, architecture, variant)| {
        serde_json::json!({"os": os, "architecture": architecture, "variant": variant})
    });
    let entry = (descriptor.clone(), proptest::option::of(platform)).prop_map(|(mut d, p)| {
        d["platform"] = p.unwrap_or(Value::Null);
        d
    });
    let labels = proptest::collection::btree_map(text(), text(), 0..4);
    (
        proptest::option::of(descriptor.clone()),
        proptest::option::of(proptest::collection::vec(descriptor.clone(), 0..4)),
        proptest::option::of(proptest::collection::vec(entry, 0..4)),
        proptest::option::of(descriptor),
        (text(), proptest::option::of(text()), labels),
    )
        .prop_map(
            |(config, layers, manifests, subject, (media_type, created, labels))| {
                // One body is read both as the manifest and as the image's config blob: the
                // config descriptor carries the blob's `Labels` too.
                let config = config.map(|mut c: Value| {
                    c["Labels"] = serde_json::json!(labels);
                    c
                });
                serde_json::json!({
                    "schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers,
                    "manifests": manifests, "subject": subject, "created": created,
                    "os": "linux", "architecture": "amd64",
                })
            },
        )
}

/// The same keys every console case seals and opens with.
fn seal_keys() -> Arc<ArcSwap<SealKeys>> {
    let keys = SealKeys::from_secrets(&[vec![7; 32]]).expect("a key");
    Arc::new(ArcSwap::from_pointee(keys))
}

/// The image page as the console renders what the registry served: never a panic.
fn render(body: &[u8]) -> Option<String> {
    let manifest = manifest::parse(body, None).ok()?;
    let config = manifest::parse_config(body).ok();
    let referrers = manifest::parse_referrers(body).ok();
    let frame = Frame {
        user: "alice",
        source: "htpasswd",
        csrf: "c",
        admin: true,
        tokens: true,
        current: Section::Browse,
    };
    let page = image(
        &frame,
        &Image {
            name: "alice/app",
            reference: "v1",
            pull_host: "registry.example.com",
            manifest: &manifest,
            config: config.as_ref(),
            referrers: referrers.as_deref(),
            deletable: true,
            signatures: Some(Ok(vec!["ci".into()])),
            keys: &["ci".into()],
            moving: Some((false, Some("immutable-tags rule 1".into()))),
        },
    );
    Some(page.into_string())
}

/// One key for every case: generating one takes longer than the properties.
fn key() -> &'static (tempfile::TempDir, SigningKey) {
    static KEY: OnceLock<(tempfile::TempDir, SigningKey)> = OnceLock::new();
    KEY.get_or_init(|| keys(false))
}

proptest! {
    #[test]
    fn any_scope_string_parses_or_is_refused(s in "\\PC{0,80}") {
        let _ = s.parse::<Scope>();
    }

    #[test]
    fn well_formed_scopes_round_trip(name in name(), actions in proptest::collection::vec("[a-z]{1,6}", 1..4)) {
        let text = format!("repository:{name}:{}", actions.join(","));
        let scope = text
            .parse::<Scope>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&scope.name, &name);
        prop_assert_eq!(scope.to_string().parse::<Scope>().ok(), Some(scope));
    }

    #[test]
    fn any_path_maps_or_is_refused_and_needs_an_action(method in method(), path in "/v2/[a-zA-Z0-9%./_:;-]{0,60}", query in proptest::option::of("[a-z=&:%0-9]{0,30}")) {
        if let Ok(route) = Route::parse(&method, &path, query.as_deref(), &HeaderMap::new()) {
            let needs = route.needs();
            // Only `/v2/` needs nothing beyond a login; everything else names its actions.
            prop_assert_eq!(needs.is_empty(), matches!(route.target, Target::Base), "{}", path);
            prop_assert!(needs.iter().all(|(scope, _)| !scope.actions.is_empty()), "{}", path);
        }
    }

    #[test]
    fn the_registry_reads_parameters_only_from_the_query_the_gateway_authorized(
        method in method(),
        uuid in proptest::option::of("[a-z0-9-]{1,12}"),
        query in proptest::collection::vec(
            prop_oneof![Just("mount"), Just("from"), Just("digest")].prop_flat_map(|k| (Just(k.to_string()), value())),
            0..3,
        ),
        body in form_body(),
    ) {
        let path = format!("/v2/bob/f/blobs/uploads/{}", uuid.unwrap_or_default());
        let query_text = form_urlencoded::Serializer::new(String::new()).extend_pairs(&query).finish();
        let mut headers = HeaderMap::new();
        for content_type in &body.content_types {
            let value = HeaderValue::from_bytes(content_type.as_bytes())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            headers.append(CONTENT_TYPE, value);
        }
        let Ok(route) = Route::parse(&method, &path, Some(&query_text), &headers) else {
            return Ok(());
        };
        for key in ["mount", "from", "digest", "_state"] {
            let from_query = query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            prop_assert_eq!(go_form_value(&method, &query, &body, key), from_query, "{}", key);
        }
        if let Target::Repository { mount: Some(mount), .. } = &route.target {
            prop_assert_eq!(Some(mount.digest.clone()), go_form_value(&method, &query, &body, "mount"));
            prop_assert_eq!(Some(mount.from.clone()), go_form_value(&method, &query, &body, "from"));
        }
    }

    #[test]
    fn a_manifest_path_authorizes_exactly_its_repository(name in name(), tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
        let route = Route::parse(&Method::GET, &format!("/v2/{name}/manifests/{tag}"), None, &HeaderMap::new())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let needs = route.needs();
        prop_assert_eq!(needs.len(), 1);
        prop_assert_eq!(&needs[0].0.name, &name);
    }

    #[test]
    fn dot_segments_and_encodings_never_reach_a_repository(
        name in name(),
        trick in prop_oneof![Just("/.."), Just("/."), Just("/"), Just("%2e%2e"), Just("%2F"), Just("%2f")],
    ) {
        let path = format!("/v2/{name}{trick}/x/manifests/latest");
        prop_assert!(matches!(
            Route::parse(&Method::GET, &path, None, &HeaderMap::new()),
            Err(RouteError::Invalid(..) | RouteError::NotFound)
        ), "{path} was routed");
    }

    #[test]
    fn any_htpasswd_or_groups_text_parses_or_names_a_line(text in "\\PC{0,200}") {
        if let Err(e) = Htpasswd::parse("f", &text) {
            prop_assert!(e.line <= text.lines().count());
        }
        if let Err(e) = Groups::parse("g", &text) {
            prop_assert!(e.line <= text.lines().count());
        }
    }

    #[test]
    fn any_authorization_header_parses_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value);
            let _ = credentials(&headers);
        }
    }

    #[test]
    fn basic_credentials_round_trip(user in "[^:\\p{Cc}]{1,20}", password in "\\PC{0,30}") {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", BASE64.encode(format!("{user}:{password}").as_bytes()));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).map_err(|e| TestCaseError::fail(e.to_string()))?);
        let parsed = credentials(&headers).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, Credentials::Basic { user, password });
    }

    #[test]
    fn arbitrary_tokens_never_verify(token in "[A-Za-z0-9_.=-]{0,300}") {
        let (_, key) = key();
        prop_assert!(issuer().verify_access(&[key], &token).is_err());
        prop_assert!(issuer().verify_refresh(&[key], &token).is_err());
    }

    #[test]
    fn a_token_changed_anywhere_never_verifies(at in any::<prop::sample::Index>(), to in "[A-Za-z0-9_-]") {
        let (_, key) = key();
        let issuer = issuer();
        let token = issuer.refresh_token(key, "alice", "c").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = to.as_bytes()[0];
        let changed = String::from_utf8(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Base64url's last character carries spare bits: a change there can decode to the
        // same signature, which is the same token.
        prop_assume!(changed != token && i != token.len() - 1);
        prop_assert!(issuer.verify_refresh(&[key], &changed).is_err(), "{} verified", changed);
    }

    #[test]
    fn any_document_a_registry_serves_reads_and_renders_or_is_refused(doc in prop_oneof![document(), shaped_document()]) {
        let body = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(page) = render(&body) {
            // Whatever the registry wrote is escaped: the page's one script tag is its own.
            prop_assert_eq!(page.matches("<script").count(), 1);
            prop_assert!(page.contains("alice/app"));
        }
    }

    #[test]
    fn any_bytes_a_registry_serves_render_or_are_refused(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        render(&body);
    }

    #[test]
    fn no_cookie_but_a_sealed_one_opens_a_session(cookie in "[ -~]{0,300}", name in prop_oneof![Just("portcullis-session"), Just("__Secure-portcullis-session"), Just("portcullis-flow")]) {
        let console = Console::new(
            &config::Console::default(),
            seal_keys(),
            false,
            None,
            "",
            None,
        );
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&format!("{name}={cookie}; {cookie}")) {
            headers.insert(COOKIE, value);
        }
        prop_assert!(console.session(&headers).is_none());
        prop_assert!(console.flow(&headers).is_none());
    }

    #[test]
    fn no_made_up_personal_token_logs_in(token in "pcp_[A-Za-z0-9_-]{0,300}") {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let tokens = PersonalTokens::new(seal_keys(), RevocationStore::File(dir.path().join("revoked")), 90, None)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(tokens.open("alice", &token).is_err());
        prop_assert!(tokens.open("", &token).is_err());
    }

    #[test]
    fn any_revocation_or_session_key_file_loads_or_names_a_line(text in "\\PC{0,200}") {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("file");
        std::fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let lines = text.lines().count();
        if let Err(e) = Revoked::load(&path) {
            prop_assert!((1..=lines).contains(&e.line), "{}", e);
        }
        if let Err(e) = SealKeys::load(&path) {
            prop_assert!(e.line <= lines, "{}", e);
        }
    }
}
