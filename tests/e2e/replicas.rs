//! Scale-out: two gateway replicas that share nothing but the files they read (one signing
//! key, one htpasswd, one policy directory) behave as one. A token from either works at the
//! other and at the registry, a refresh token from one is redeemed at the other, and a policy
//! edit reaches both.

use crate::util::{
    SERVICE, Setup, basic, free_port, http, oci_image, push, registry, require, serve,
};

const ACL: &str = r#"{"rules": [
  {"match": {"account": "/.+/", "name": "${account}/**"}, "actions": ["pull", "push"]}
]}"#;

const USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("bob", "bob-pw")];

fn get(port: u16, path: &str, auth: &str) -> (u16, serde_json::Value) {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = http(port, &head, b"");
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn two_replicas_with_one_key_act_as_one() {
    require("docker-registry");
    require("skopeo");
    let setup = Setup::gateway(ACL, USERS, "");
    // Replica B: the same config and files, another port.
    let (config_b, port_b) = setup.replica_config();
    let _plain = setup.start_plain_registry();
    let a = setup.start_gateway();
    let b = serve(&config_b, port_b);
    // A registry of its own checking tokens, trusting the shared certificate.
    let token_registry_port = free_port();
    let token_registry_config = setup.path("token-registry.yml");
    std::fs::write(
        &token_registry_config,
        format!(
            "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {data}}}}}\nhttp: {{addr: 127.0.0.1:{token_registry_port}, secret: shared}}\nauth: {{token: {{realm: http://127.0.0.1:{port_b}/token, service: {SERVICE}, issuer: portcullis, rootcertbundle: {bundle}}}}}\n",
            data = setup.path("token-data").display(),
            bundle = setup.path("keys/token.crt").display(),
        ),
    )
    .expect("registry config");
    let _token_registry = registry(
        &token_registry_config,
        token_registry_port,
        &[],
        &setup.path("token-registry.log"),
    );

    // Push through A, read through B with a token A issued.
    let home = tempfile::tempdir().expect("tempdir");
    let image = home.path().join("image");
    oci_image(&image, b"two replicas");
    let (ok, err) = push(
        home.path(),
        &image,
        "alice:alice-pw",
        a.port,
        "alice/app:latest",
    );
    assert!(ok, "push through replica A: {err}");
    let alice = format!("Basic {}", basic("alice", "alice-pw"));
    let (status, issued) = get(
        a.port,
        &format!("/token?service={SERVICE}&scope=repository:alice/app:pull&offline_token=true"),
        &alice,
    );
    assert_eq!(status, 200);
    let bearer = format!("Bearer {}", issued["token"].as_str().expect("a token"));
    let (status, tags) = get(b.port, "/v2/alice/app/tags/list", &bearer);
    assert_eq!(status, 200, "replica B accepts replica A's token");
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
    let (status, _) = get(token_registry_port, "/v2/", &bearer);
    assert_eq!(status, 200, "the registry accepts it too");

    // A refresh token from A is redeemed at B.
    let refresh = issued["refresh_token"].as_str().expect("a refresh token");
    let form = format!(
        "grant_type=refresh_token&refresh_token={refresh}&service={SERVICE}&client_id=e2e&scope=repository%3Aalice%2Fapp%3Apull"
    );
    let (status, body) = crate::util::post_token(b.port, &form);
    assert_eq!(status, 200, "{body}");

    // One policy edit reaches both replicas.
    let (status, _) = get(b.port, "/v2/alice/app/tags/list", &alice);
    assert_eq!(status, 200);
    let tmp = setup.path("acl.json.new");
    std::fs::write(
        &tmp,
        r#"{"rules": [{"match": {"account": "bob"}, "actions": ["pull"]}]}"#,
    )
    .expect("write");
    std::fs::rename(&tmp, setup.path("acl.json")).expect("rename");
    let denied_everywhere = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(30));
        [a.port, b.port]
            .iter()
            .all(|&port| get(port, "/v2/alice/app/tags/list", &alice).0 == 403)
    });
    assert!(
        denied_everywhere,
        "the policy edit did not reach both replicas"
    );
}
