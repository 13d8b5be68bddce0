//! Issue 21: policies that decide with facts from the registry. `immutable-tags` in gateway
//! mode against the real registry with skopeo: a new tag is pushed, the same digest again is
//! fine, moving or deleting it (by tag, or by the digest it names) is refused with a reason
//! that says so, and the registry still serves what the tag named; the decision log holds
//! the facts, so a replay decides exactly as the gateway did. In token-server mode no fact
//! exists: push and delete are withheld, pulls stand.

use crate::util::{
    SERVICE, Setup, basic, http, jwt_payload, oci_image, push, require, token, wasm,
};

/// alice may do anything in releases/.
const ACL: &str = r#"{"rules": [
  {"match": {"account": "alice", "name": "releases/**"}, "actions": ["pull", "push", "delete"]}
]}"#;

const USERS: &[(&str, &str)] = &[("alice", "alice-pw")];

const IMMUTABLE: &str = r#"
[[policy]]
name = "immutable-tags"
module = "policies/immutable_tags.wasm"
settings = { rules = [{ repositories = "releases/**", tags = ["v*"] }] }
"#;

/// `method path` straight at the registry (no auth): status and headers.
fn at_registry(port: u16, method: &str, path: &str) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n"
    );
    let (status, headers, _) = http(port, &head, b"");
    (status, headers)
}

/// The digest the registry serves for `reference` of releases/app.
fn digest_at_registry(port: u16, reference: &str) -> String {
    let (status, headers) = at_registry(
        port,
        "HEAD",
        &format!("/v2/releases/app/manifests/{reference}"),
    );
    assert_eq!(status, 200, "{headers}");
    headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("docker-content-digest: ")
                .map(|d| d.trim().to_string())
        })
        .expect("a digest")
}

/// `DELETE path` through the gateway as alice: status and body.
fn delete(port: u16, path: &str) -> (u16, String) {
    let head = format!(
        "DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        basic("alice", "alice-pw")
    );
    let (status, _, body) = http(port, &head, b"");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn immutable_tags_hold_through_the_gateway_and_a_replay_is_exact() {
    require("docker-registry");
    require("skopeo");
    let extra = format!("{IMMUTABLE}\n[log]\ndecisions = \"decisions.jsonl\"\n");
    let setup = Setup::gateway(ACL, USERS, &extra);
    std::fs::copy(
        wasm("immutable_tags"),
        setup.path("policies/immutable_tags.wasm"),
    )
    .expect("copy the module");
    setup.insert_config(&crate::console::console_block(&setup, true));
    let _registry = setup.start_plain_registry();
    let gateway = setup.start_gateway();
    let home = tempfile::tempdir().expect("tempdir");
    let (first, second) = (home.path().join("first"), home.path().join("second"));
    oci_image(&first, b"release one");
    oci_image(&second, b"something else");
    let creds = "alice:alice-pw";
    let to = |image: &std::path::Path, reference: &str| {
        push(home.path(), image, creds, gateway.port, reference)
    };

    let (ok, err) = to(&first, "releases/app:v1");
    assert!(ok, "a new immutable tag is pushed: {err}");
    let v1 = digest_at_registry(setup.registry_port, "v1");
    let (ok, err) = to(&first, "releases/app:v1");
    assert!(ok, "the same digest again (a CI retry): {err}");
    let (ok, err) = to(&second, "releases/app:v1");
    assert!(!ok, "v1 moved");
    assert!(
        err.contains("immutable"),
        "the reason reaches skopeo: {err}"
    );
    assert_eq!(
        digest_at_registry(setup.registry_port, "v1"),
        v1,
        "v1 still names the first image"
    );
    let (ok, err) = to(&second, "releases/app:latest");
    assert!(ok, "latest is not immutable: {err}");
    let (ok, err) = to(&first, "releases/app:latest");
    assert!(ok, "and moves: {err}");

    let (status, body) = delete(gateway.port, "/v2/releases/app/manifests/v1");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("cannot be deleted"), "{body}");
    let (status, body) = delete(gateway.port, &format!("/v2/releases/app/manifests/{v1}"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("named by the immutable tag \\\"v1\\\""),
        "{body}"
    );
    assert_eq!(
        digest_at_registry(setup.registry_port, "v1"),
        v1,
        "nothing was deleted"
    );
    // A manifest no immutable tag names is deleted by digest.
    let (ok, err) = to(&second, "releases/app:latest");
    assert!(ok, "{err}");
    let loose = digest_at_registry(setup.registry_port, "latest");
    let (ok, err) = to(&first, "releases/app:latest");
    assert!(ok, "{err}");
    let (status, body) = delete(gateway.port, &format!("/v2/releases/app/manifests/{loose}"));
    assert_eq!(status, 202, "{body}");

    // The console's image page says which tags are immutable.
    let (session, _) = crate::console::sign_in_by_hand(gateway.port, "alice", "alice-pw");
    let page = |reference: &str| {
        let (status, _, page) = crate::console::request(
            gateway.port,
            "GET",
            &format!("/ui/manifest?name=releases/app&ref={reference}"),
            &[("Cookie", &session)],
            "",
        );
        assert_eq!(status, 200, "{page}");
        page
    };
    let v1_page = page("v1");
    assert!(
        v1_page.contains("Immutable") && v1_page.contains("immutable-tags rule 1"),
        "{v1_page}"
    );
    assert!(page("latest").contains("let you move this tag"));

    // Every decision's line holds the facts it was made with: a replay is exact.
    let log = setup.path("decisions.jsonl");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("the log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let refused_move = lines
        .iter()
        .find(|l| {
            l["operation"]["method"] == "PUT"
                && l["operation"]["tag"] == "v1"
                && l["granted"] == serde_json::json!(["pull"])
        })
        .expect("the refused move is logged");
    assert_eq!(
        refused_move["facts"]["tag_digest"],
        v1.as_str(),
        "{refused_move}"
    );
    assert!(
        refused_move["facts"]["pushed_digest"].is_string(),
        "{refused_move}"
    );
    let (log_path, config_path) = (log.display().to_string(), setup.path("portcullis.toml"));
    let out = crate::util::portcullis(
        &[
            "policy",
            "replay",
            "--json",
            "--log",
            &log_path,
            "--config",
            &config_path.display().to_string(),
        ],
        None,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["unchanged"], report["decisions"], "{report}");
    assert!(
        report["decisions"].as_u64().is_some_and(|n| n >= 10),
        "{report}"
    );
}

#[test]
fn token_server_mode_withholds_what_needs_a_fact() {
    let setup = Setup::new(ACL, USERS);
    std::fs::copy(
        wasm("immutable_tags"),
        setup.path("policies/immutable_tags.wasm"),
    )
    .expect("copy the module");
    let config = setup.path("portcullis.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}\n{IMMUTABLE}")).expect("config");
    let gateway = setup.start_gateway();
    let (status, issued) = token(
        gateway.port,
        &format!("service={SERVICE}&scope=repository:releases/app:pull,push,delete"),
        Some("alice:alice-pw"),
    );
    assert_eq!(status, 200, "{issued}");
    let access = jwt_payload(issued["token"].as_str().expect("a token"));
    assert_eq!(
        access["access"][0]["actions"],
        serde_json::json!(["pull"]),
        "{access}"
    );
    // With signed-images too, pulls need a fact as well: nothing is left.
    std::fs::copy(
        wasm("signed_images"),
        setup.path("policies/signed_images.wasm"),
    )
    .expect("copy the module");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "{text}\n[[policy]]\nname = \"signed-images\"\nmodule = \"policies/signed_images.wasm\"\nsettings = {{ rules = [{{ repositories = \"releases/**\", keys = [\"ci\"] }}] }}\n"
        ),
    )
    .expect("config");
    let refused = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_, issued) = token(
            gateway.port,
            &format!("service={SERVICE}&scope=repository:releases/app:pull,push"),
            Some("alice:alice-pw"),
        );
        issued["token"]
            .as_str()
            .is_some_and(|t| jwt_payload(t)["access"][0]["actions"] == serde_json::json!([]))
    });
    assert!(refused, "the edited config withholds pull too");
}
