//! Issue 25: revocations kept in the registry (`[console] revoked_tokens_repository`), for
//! replicas that share no file system: a token revoked at one replica is refused at another
//! within a poll, still after a restart, in both modes; the repository that keeps them is out
//! of everyone's reach through Portcullis; revocations of ended tokens are deleted.

use crate::console::{console_block, make_token_by_hand, request, sign_in_by_hand};
use crate::util::{SERVICE, Setup, basic, http, require, serve, token};
use std::time::{Duration, Instant};

const REPOSITORY: &str = "portcullis/revocations";

/// alice owns her namespace; root may do anything anywhere, the catalog included.
const ACL: &str = r#"{"rules": [
  {"match": {"account": "alice", "name": "alice/**"}, "actions": ["pull", "push"]},
  {"match": {"account": "root"}, "actions": ["*"]},
  {"match": {"account": "root", "type": "registry"}, "actions": ["*"]}
]}"#;

const USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("root", "root-pw")];

/// The console block with the registry store in place of the file.
fn registry_store(setup: &Setup, gateway_mode: bool) {
    let block = console_block(setup, gateway_mode).replace(
        "revoked_tokens = \"revoked\"",
        &format!("revoked_tokens_repository = \"{REPOSITORY}\""),
    );
    setup.insert_config(&block);
    std::fs::remove_file(setup.path("revoked")).expect("no revocation file");
    std::fs::write(setup.path("groups"), "admins: root\n").expect("groups");
}

/// Waits until `refused` holds, at most 5 s.
fn within_5s(what: &str, refused: &dyn Fn() -> bool) {
    let started = Instant::now();
    while !refused() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Revokes `token_or_id` in the console at `port`: the answer's status.
fn revoke(port: u16, session: &str, csrf: &str, token_or_id: &str) -> u16 {
    let form = format!("csrf={csrf}&token={token_or_id}");
    let (status, head, page) = request(
        port,
        "POST",
        "/ui/tokens/revoke",
        &[("Cookie", session)],
        &form,
    );
    assert!(status == 303, "{head}\n{page}");
    status
}

/// `method path` at `port` as `user:password` (Basic): the status and body.
fn call(port: u16, method: &str, path: &str, creds: &str) -> (u16, String) {
    let (user, password) = creds.split_once(':').expect("user:password");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        basic(user, password)
    );
    let (status, _, body) = http(port, &head, b"");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An id shaped as the console makes them, of a token that ended at unix time 1000 (its tag
/// is not checked for an admin's revocation by id).
fn ended_id() -> String {
    let mut bytes = vec![7u8; 12];
    bytes.extend(1000u64.to_be_bytes());
    bytes.extend([0u8; 8]);
    data_encoding::BASE64URL_NOPAD.encode(&bytes)
}

/// The registry's tags of the revocation repository, asked directly (no auth in gateway
/// mode).
fn tags_at_registry(port: u16) -> Vec<String> {
    let head = format!(
        "GET /v2/{REPOSITORY}/tags/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = http(port, &head, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let list: serde_json::Value = serde_json::from_slice(&body).expect("a tag list");
    list["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gateway_mode_replicas_share_revocations_through_the_registry_and_nobody_reaches_them() {
    require("docker-registry");
    let setup = Setup::gateway(ACL, USERS, "");
    registry_store(&setup, true);
    let (config_b, port_b) = setup.replica_config();
    let registry = setup.start_plain_registry();
    let a = setup.start_gateway();
    let b = serve(&config_b, port_b);
    let token_at_b = |creds: &str| {
        let query = format!("service={SERVICE}&scope=repository:alice/app:pull");
        token(port_b, &query, Some(creds)).0
    };

    let (session, csrf) = sign_in_by_hand(a.port, "alice", "alice-pw");
    let laptop = make_token_by_hand(a.port, &session, &csrf, "laptop");
    let creds = format!("alice:{laptop}");
    assert_eq!(token_at_b(&creds), 200, "read before B's first accept");
    revoke(a.port, &session, &csrf, &laptop);
    within_5s("the revocation at B", &|| token_at_b(&creds) == 401);
    let tags = tags_at_registry(setup.registry_port);
    assert!(
        tags.len() == 1 && tags[0].starts_with('r'),
        "one tag per revoked id: {tags:?}"
    );

    // A restarted replica reads them from the registry, not from its memory.
    drop(b);
    let b = serve(&config_b, port_b);
    assert_eq!(token_at_b(&creds), 401, "still revoked after a restart");
    assert_eq!(
        token_at_b("alice:alice-pw"),
        200,
        "alice herself still works"
    );

    // The attacker's view: root may do anything, yet not to the revocations.
    let root = "root:root-pw";
    for (method, path) in [
        ("GET", format!("/v2/{REPOSITORY}/tags/list")),
        ("GET", format!("/v2/{REPOSITORY}/manifests/{}", tags[0])),
        ("DELETE", format!("/v2/{REPOSITORY}/manifests/{}", tags[0])),
        ("POST", format!("/v2/{REPOSITORY}/blobs/uploads/")),
    ] {
        let (status, body) = call(a.port, method, &path, root);
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("revoked personal tokens"), "{body}");
    }
    let (status, body) = call(a.port, "GET", "/v2/_catalog", root);
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains(REPOSITORY),
        "hidden from the catalog: {body}"
    );
    let (status, issued) = token(
        a.port,
        &format!("service={SERVICE}&scope=repository:{REPOSITORY}:pull,push,delete"),
        Some(root),
    );
    assert_eq!(status, 200);
    let access = crate::util::jwt_payload(issued["token"].as_str().expect("a token"));
    assert_eq!(
        access["access"][0]["actions"],
        serde_json::json!([]),
        "{access}"
    );
    assert_eq!(
        tags_at_registry(setup.registry_port),
        tags,
        "nothing changed"
    );

    // An admin revokes an ended token's id; the next revocation deletes it again.
    let (admin_session, admin_csrf) = sign_in_by_hand(a.port, "root", "root-pw");
    let ended = ended_id();
    revoke(a.port, &admin_session, &admin_csrf, &ended);
    assert!(
        tags_at_registry(setup.registry_port).contains(&format!("r{ended}")),
        "written first"
    );
    let phone = make_token_by_hand(a.port, &admin_session, &admin_csrf, "phone");
    revoke(a.port, &admin_session, &admin_csrf, &phone);
    let now = tags_at_registry(setup.registry_port);
    assert_eq!(
        now.len(),
        2,
        "the ended one deleted, two live ones kept: {now:?}"
    );
    assert!(!now.contains(&format!("r{ended}")), "{now:?}");
    drop((a, b, registry));
}

#[test]
fn token_server_mode_keeps_revocations_in_the_registry_with_a_token_of_its_own() {
    require("docker-registry");
    let setup = Setup::new(ACL, USERS);
    registry_store(&setup, false);
    let (config_b, port_b) = setup.replica_config();
    let _registry = setup.start_registry(&setup.path("keys/token.crt"));
    let a = setup.start_gateway();
    let b = serve(&config_b, port_b);
    let token_at = |port: u16, creds: &str| {
        let query = format!("service={SERVICE}&scope=repository:alice/app:pull");
        token(port, &query, Some(creds)).0
    };

    let (session, csrf) = sign_in_by_hand(a.port, "alice", "alice-pw");
    let laptop = make_token_by_hand(a.port, &session, &csrf, "laptop");
    let creds = format!("alice:{laptop}");
    assert_eq!(
        token_at(port_b, &creds),
        200,
        "read before B's first accept"
    );
    revoke(a.port, &session, &csrf, &laptop);
    assert_eq!(
        token_at(a.port, &creds),
        401,
        "at once where it was revoked"
    );
    within_5s("the revocation at B", &|| token_at(port_b, &creds) == 401);
    drop(a);
    let a = setup.start_gateway();
    assert_eq!(
        token_at(a.port, &creds),
        401,
        "still revoked after a restart"
    );

    // Nobody gets a token for the repository, root included.
    let (status, issued) = token(
        a.port,
        &format!("service={SERVICE}&scope=repository:{REPOSITORY}:pull"),
        Some("root:root-pw"),
    );
    assert_eq!(status, 200);
    let access = crate::util::jwt_payload(issued["token"].as_str().expect("a token"));
    assert_eq!(access["access"][0]["actions"], serde_json::json!([]));
    drop(b);
}
