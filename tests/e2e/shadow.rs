//! Issue 20, step 5: a shadow set is decided beside the serving one and never enforced; its
//! disagreements show in `/metrics`, the decision log, `/status` and the console, and it
//! hot-reloads like the serving set.

use crate::console::{console_block, request, sign_in_by_hand};
use crate::util::{SERVICE, Setup, jwt_payload, require, token};
use std::time::{Duration, Instant};

/// Serving: alice pushes to her namespace, root does anything, bob nothing.
const SERVING: &str = r#"{"rules": [
  {"match": {"account": "alice", "name": "alice/**"}, "actions": ["pull", "push"]},
  {"match": {"account": "root"}, "actions": ["*"]}
]}"#;

/// The candidate: alice may only pull (narrowed), bob may pull secret/ (widened).
const CANDIDATE: &str = r#"{"rules": [
  {"match": {"account": "alice", "name": "alice/**"}, "actions": ["pull"]},
  {"match": {"account": "bob", "name": "secret/**"}, "actions": ["pull"]},
  {"match": {"account": "root"}, "actions": ["*"]}
]}"#;

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("root", "root-pw"),
];

fn eventually(what: &str, done: &dyn Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` at `port`: the body.
fn get(port: u16, path: &str) -> String {
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = crate::util::http(port, &head, b"");
    assert_eq!(status, 200, "{path}");
    String::from_utf8_lossy(&body).into_owned()
}

/// The shadow set's count of `change` in `/metrics` (0 before the first).
fn counted(admin_port: u16, change: &str) -> u64 {
    let metrics = get(admin_port, "/metrics");
    let prefix = format!("portcullis_shadow_decisions_total{{change=\"{change}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[test]
fn a_shadow_set_decides_beside_the_serving_one_and_shows_where_it_differs() {
    require("docker-registry");
    let shadow = "[[shadow]]\nname = \"acl\"\nmodule = \"policies/acl.wasm\"\nsettings_file = \"acl-next.json\"\n\n[log]\ndecisions = \"decisions.jsonl\"\n";
    let setup = Setup::gateway(SERVING, USERS, shadow);
    std::fs::write(setup.path("acl-next.json"), CANDIDATE).expect("candidate");
    setup.insert_config(&console_block(&setup, true));
    std::fs::write(setup.path("groups"), "admins: root\n").expect("groups");
    let _registry = setup.start_plain_registry();
    let gateway = setup.start_gateway();
    let granted = |creds: &str, scope: &str| {
        let (status, issued) = token(
            gateway.port,
            &format!("service={SERVICE}&scope={scope}"),
            Some(creds),
        );
        assert_eq!(status, 200, "{issued}");
        jwt_payload(issued["token"].as_str().expect("a token"))["access"][0]["actions"].clone()
    };

    // The serving set decides; the candidate only watches.
    assert_eq!(
        granted("alice:alice-pw", "repository:alice/app:pull,push"),
        serde_json::json!(["pull", "push"]),
        "not narrowed by the shadow"
    );
    assert_eq!(
        granted("bob:bob-pw", "repository:secret/plans:pull"),
        serde_json::json!([]),
        "not widened by the shadow"
    );
    assert_eq!(
        granted("root:root-pw", "repository:any/thing:pull"),
        serde_json::json!(["pull"])
    );
    let admin = setup.admin_port;
    eventually("one decision of each change counted", &|| {
        counted(admin, "widened") == 1
            && counted(admin, "narrowed") == 1
            && counted(admin, "same") >= 1
    });
    assert_eq!(counted(admin, "skipped"), 0);

    // Each decision's line carries what the candidate said.
    let log = setup.path("decisions.jsonl");
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    eventually("three lines logged", &|| lines().len() >= 3);
    let bob = lines()
        .into_iter()
        .find(|l| l["account"] == "bob")
        .expect("bob's line");
    assert_eq!(bob["granted"], serde_json::json!([]), "{bob}");
    assert_eq!(bob["shadow"]["change"], "widened", "{bob}");
    assert_eq!(
        bob["shadow"]["granted"],
        serde_json::json!(["pull"]),
        "{bob}"
    );
    assert!(
        bob["shadow"]["answers"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("acl rule 2")),
        "{bob}"
    );

    // /status and the console.
    let status: serde_json::Value =
        serde_json::from_str(&get(admin, "/status")).expect("status JSON");
    assert_eq!(status["shadow"]["decisions"]["widened"], 1, "{status}");
    assert_eq!(status["shadow"]["policies"][0]["name"], "acl", "{status}");
    let (session, _) = sign_in_by_hand(gateway.port, "root", "root-pw");
    let (code, _, page) = request(
        gateway.port,
        "GET",
        "/ui/admin/shadow",
        &[("Cookie", &session)],
        "",
    );
    assert_eq!(code, 200, "{page}");
    for shown in [
        "repository:secret/plans:pull",
        "widened",
        "narrowed",
        "acl rule 2",
    ] {
        assert!(page.contains(shown), "{shown} not on the page:\n{page}");
    }
    let (alice_session, _) = sign_in_by_hand(gateway.port, "alice", "alice-pw");
    let (code, _, _) = request(
        gateway.port,
        "GET",
        "/ui/admin/shadow",
        &[("Cookie", &alice_session)],
        "",
    );
    assert_eq!(code, 403, "admins only");

    // The candidate reloads in place: made equal to the serving set, it agrees.
    let digest =
        |status: &serde_json::Value| status["shadow"]["policies"][0]["settings_digest"].clone();
    let before = digest(&status);
    let next = setup.path("acl-next.json.new");
    std::fs::write(&next, SERVING).expect("write");
    std::fs::rename(&next, setup.path("acl-next.json")).expect("rename");
    eventually("the candidate reloaded", &|| {
        let now: serde_json::Value =
            serde_json::from_str(&get(admin, "/status")).expect("status JSON");
        digest(&now) != before
    });
    assert_eq!(
        granted("bob:bob-pw", "repository:secret/other:pull"),
        serde_json::json!([])
    );
    eventually("the edited candidate agrees", &|| {
        lines().iter().any(|l| {
            l["scope"] == "repository:secret/other:pull" && l["shadow"]["change"] == "same"
        })
    });
    assert_eq!(counted(admin, "widened"), 1, "no widening since the edit");
}
