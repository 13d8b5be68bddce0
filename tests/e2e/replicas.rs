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

/// A FUSE bind mount (bindfs) of a directory, unmounted when dropped: a file system that
/// raises no events on the mount for writes made through the directory itself, as NFS, EFS
/// or CephFS raise none on one node for another node's writes.
struct BindMount {
    at: tempfile::TempDir,
}

impl BindMount {
    fn of(dir: &std::path::Path) -> BindMount {
        require("bindfs");
        let at = tempfile::tempdir().expect("tempdir");
        let mounted =
            crate::util::run(std::process::Command::new("bindfs").arg(dir).arg(at.path()));
        assert!(mounted.ok, "bindfs: {}", mounted.text);
        BindMount { at }
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fusermount")
            .arg("-u")
            .arg(self.at.path())
            .status();
    }
}

/// Issue 25: replica B reads the shared files through a mount that raises no events for
/// replica A's writes; a personal token A revokes and a user removed from the htpasswd still
/// stop working at B within the documented bound (watch::POLL, 2 s, plus a reload).
#[test]
fn a_replica_whose_storage_raises_no_events_still_sees_revocations_and_user_changes() {
    use crate::console::{console_block, make_token_by_hand, request, sign_in_by_hand};
    require("docker-registry");
    let setup = Setup::gateway(ACL, USERS, "");
    setup.insert_config(&console_block(&setup, true));
    let (config_b, port_b) = setup.replica_config();
    let mount = BindMount::of(setup.dir.path());
    let config_b = mount.at.path().join(config_b.file_name().expect("a name"));
    let _registry = setup.start_plain_registry();
    let a = setup.start_gateway();
    let _b = serve(&config_b, port_b);
    let within = |what: &str, refused: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !refused() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{what}: replica B did not see it within 5 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("{what}: seen at B after {:?}", started.elapsed());
    };
    let token_at_b = |creds: &str| {
        let query = format!("service={SERVICE}&scope=repository:alice/app:pull");
        crate::util::token(port_b, &query, Some(creds)).0
    };

    let (session, csrf) = sign_in_by_hand(a.port, "alice", "alice-pw");
    let laptop = make_token_by_hand(a.port, &session, &csrf, "laptop");
    let creds = format!("alice:{laptop}");
    assert_eq!(token_at_b(&creds), 200, "B takes the token");
    let form = format!("csrf={csrf}&token={laptop}");
    let (status, head, _) = request(
        a.port,
        "POST",
        "/ui/tokens/revoke",
        &[("Cookie", &session)],
        &form,
    );
    assert_eq!(status, 303, "{head}");
    within("a revocation", &|| token_at_b(&creds) == 401);

    assert_eq!(token_at_b("bob:bob-pw"), 200);
    setup.remove_user("bob");
    within("a removed user", &|| token_at_b("bob:bob-pw") == 401);
}
