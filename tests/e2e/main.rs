//! End to end: Debian's docker-registry (distribution 2.8, the registry:2 code) and skopeo
//! (containers/image) against the `portcullis` binary. Here token-server mode, the registry
//! with `auth.token` pointing at `portcullis serve`; gateway mode in [`gateway`]; docker,
//! containerd and podman in both modes in [`clients`].

mod artifacts;
mod browser;
mod clients;
mod compose;
mod console;
mod facts;
mod gateway;
mod ldap;
mod oidc;
mod replicas;
mod revocations;
mod shadow;
mod signatures;
mod util;

use util::{
    SERVICE, Setup, basic, http, jwt_part, jwt_payload, oci_image, portcullis, require, skopeo,
};

const ACL: &str = r#"{"rules": [
  {"match": {"account": "admin"}, "actions": ["*"]},
  {"match": {"account": "/.+/", "name": "${account}/*"}, "actions": ["pull", "push", "delete"]},
  {"match": {"group": "ci", "name": "apps/*"}, "actions": ["pull", "push"]},
  {"match": {"account": "", "name": "public/*"}, "actions": ["pull"]}
]}"#;

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("admin", "admin-pw"),
    ("carol", "carol-pw"),
];

/// Fields drop in order: the processes stop before their directories are removed.
struct World {
    _gateway: util::Running,
    registry: util::Running,
    setup: Setup,
    home: tempfile::TempDir,
    image: std::path::PathBuf,
}

impl World {
    fn start() -> World {
        require("docker-registry");
        require("skopeo");
        let setup = Setup::new(ACL, USERS);
        let gateway = setup.start_gateway();
        let registry = setup.start_registry(&setup.path("keys/token.crt"));
        let home = tempfile::tempdir().expect("tempdir");
        let image = home.path().join("image");
        oci_image(&image, b"hello from the portcullis e2e suite");
        World {
            setup,
            _gateway: gateway,
            registry,
            home,
            image,
        }
    }

    fn push(&self, creds: Option<&str>, repo: &str) -> (bool, String) {
        let src = format!("oci:{}:latest", self.image.display());
        let dest = format!("docker://127.0.0.1:{}/{repo}:latest", self.registry.port);
        let mut args = vec!["copy", "--retry-times", "0", "--dest-tls-verify=false"];
        match creds {
            Some(c) => args.extend(["--dest-creds", c]),
            None => args.push("--dest-no-creds"),
        }
        args.extend([src.as_str(), dest.as_str()]);
        skopeo(self.home.path(), &args)
    }

    fn inspect(&self, creds: Option<&str>, repo: &str) -> (bool, String) {
        let src = format!("docker://127.0.0.1:{}/{repo}:latest", self.registry.port);
        let mut args = vec![
            "inspect",
            "--retry-times",
            "0",
            "--tls-verify=false",
            "--raw",
        ];
        match creds {
            Some(c) => args.extend(["--creds", c]),
            None => args.push("--no-creds"),
        }
        args.push(src.as_str());
        skopeo(self.home.path(), &args)
    }

    fn token(&self, query: &str, creds: Option<&str>) -> (u16, serde_json::Value) {
        util::token(self.setup.gateway_port, query, creds)
    }
}

#[test]
fn push_pull_and_denials_through_the_real_registry() {
    let w = World::start();

    let (ok, err) = w.push(Some("alice:alice-pw"), "alice/app");
    assert!(ok, "alice pushes into her namespace: {err}");
    let (ok, err) = w.inspect(Some("alice:alice-pw"), "alice/app");
    assert!(ok, "alice pulls it back: {err}");
    let (ok, err) = w.inspect(Some("bob:bob-pw"), "alice/app");
    assert!(!ok, "bob may not pull alice's repository");
    assert!(
        err.contains("denied")
            || err.contains("unauthorized")
            || err.contains("authentication required"),
        "{err}"
    );

    let (ok, err) = w.push(Some("bob:bob-pw"), "alice/evil");
    assert!(!ok, "bob may not push into alice's namespace");
    assert!(!err.is_empty());
    let (ok, _) = w.inspect(Some("admin:admin-pw"), "alice/evil");
    assert!(!ok, "the denied push left nothing behind");

    let (ok, err) = w.push(Some("alice:wrong"), "alice/app2");
    assert!(!ok, "a wrong password fails");
    assert!(
        err.contains("401")
            || err.contains("unauthorized")
            || err.contains("invalid username/password"),
        "{err}"
    );

    let (ok, err) = w.push(Some("admin:admin-pw"), "public/base");
    assert!(ok, "admin pushes anywhere: {err}");
    let (ok, err) = w.inspect(None, "public/base");
    assert!(ok, "anonymous pull of a public repository: {err}");
    let (ok, _) = w.inspect(None, "alice/app");
    assert!(!ok, "anonymous pull of a private repository is denied");
    let (ok, _) = w.push(None, "public/base2");
    assert!(!ok, "anonymous push is denied");
}

#[test]
fn skopeo_login_stores_working_credentials() {
    let w = World::start();
    let registry = format!("127.0.0.1:{}", w.registry.port);
    let out = std::process::Command::new("skopeo")
        .args([
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "--password-stdin",
            &registry,
        ])
        .env("REGISTRY_AUTH_FILE", w.home.path().join("auth.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"alice-pw\n")?;
            child.wait_with_output()
        })
        .expect("skopeo login runs");
    assert!(
        out.status.success(),
        "login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the stored credentials and no --creds, the push authenticates as alice.
    let src = format!("oci:{}:latest", w.image.display());
    let dest = format!("docker://{registry}/alice/logged-in:latest");
    let (ok, err) = skopeo(
        w.home.path(),
        &["copy", "--dest-tls-verify=false", &src, &dest],
    );
    assert!(ok, "push after login: {err}");
}

#[test]
fn token_endpoint_speaks_the_protocol() {
    let w = World::start();
    // Partial grant: asked pull+push on bob's repository, alice gets a token with nothing.
    let (status, body) = w.token(
        &format!("service={SERVICE}&scope=repository%3Abob%2Fapp%3Apull%2Cpush&scope=repository:alice/x:push"),
        Some("alice:alice-pw"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_u64() >= Some(60));
    assert!(
        body["issued_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token unless offline"
    );
    let payload = jwt_payload(body["token"].as_str().expect("token"));
    assert_eq!(payload["access"][0]["name"], "bob/app");
    assert_eq!(payload["access"][0]["actions"], serde_json::json!([]));
    assert_eq!(payload["access"][1]["actions"], serde_json::json!(["push"]));

    let (status, body) = w.token(
        &format!("service={SERVICE}&scope=repository:Bad:pull"),
        Some("alice:alice-pw"),
    );
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], "NAME_INVALID", "{body}");
    // Every answer of ours carries the registry API version header, 401s a Basic challenge.
    let head = "GET /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, head, _) = http(w.setup.gateway_port, head, b"");
    assert_eq!(status, 200, "anonymous is enabled in this setup");
    assert!(
        head.to_ascii_lowercase()
            .contains("docker-distribution-api-version: registry/2.0"),
        "{head}"
    );
    let (status, _) = w.token("service=other.registry", Some("alice:alice-pw"));
    assert_eq!(status, 400, "tokens only for our own service");
    let (status, _) = w.token(
        &format!("service={SERVICE}&account=bob"),
        Some("alice:alice-pw"),
    );
    assert_eq!(status, 401, "account must match the credentials");
    let many: String = (0..101)
        .map(|i| format!("&scope=repository:r{i}:pull"))
        .collect();
    let (status, body) = w.token(&format!("service={SERVICE}{many}"), Some("alice:alice-pw"));
    assert_eq!(status, 400, "{body}");
    for (path, expected) in [("/healthz", 200), ("/nowhere", 404)] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(http(w.setup.gateway_port, &head, b"").0, expected, "{path}");
    }
    let head = "DELETE /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(http(w.setup.gateway_port, head, b"").0, 405);

    // containerd's first try: the OAuth2 password grant as a form POST.
    let form = format!(
        "grant_type=password&username=alice&password=alice-pw&service={SERVICE}&client_id=containerd&access_type=offline&scope=repository%3Aalice%2Fapp%3Apull+repository%3Abob%2Fapp%3Apull"
    );
    let (status, _, body) = http(
        w.setup.gateway_port,
        &head_for_post(form.len()),
        form.as_bytes(),
    );
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(status, 200, "{body}");
    assert!(
        body["refresh_token"].is_string(),
        "access_type=offline asks for one"
    );
    let payload = jwt_payload(body["token"].as_str().expect("token"));
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["access"][0]["actions"], serde_json::json!(["pull"]));
    assert_eq!(
        payload["access"][1]["actions"],
        serde_json::json!([]),
        "space-separated scopes"
    );
    let form = format!("grant_type=password&username=alice&password=wrong&service={SERVICE}");
    assert_eq!(
        http(
            w.setup.gateway_port,
            &head_for_post(form.len()),
            form.as_bytes()
        )
        .0,
        401
    );
    let form = "grant_type=client_credentials".to_string();
    assert_eq!(
        http(
            w.setup.gateway_port,
            &head_for_post(form.len()),
            form.as_bytes()
        )
        .0,
        400
    );

    let (status, body) = w.token(&format!("service={SERVICE}"), Some("alice:nope"));
    assert_eq!(status, 401);
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
}

#[test]
fn repeated_wrong_passwords_are_throttled_for_that_account_only() {
    let w = World::start();
    let query = format!("service={SERVICE}&scope=repository:bob/app:pull");
    for _ in 0..5 {
        assert_eq!(w.token(&query, Some("bob:guess")).0, 401);
    }
    let head = format!(
        "GET /token?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        basic("bob", "bob-pw")
    );
    let (status, head, body) = http(w.setup.gateway_port, &head, b"");
    assert_eq!(
        status,
        429,
        "even the right password waits: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&body).contains("TOOMANYREQUESTS"));
    // Another account from the same address is not affected.
    assert_eq!(w.token(&query, Some("alice:alice-pw")).0, 200);
}

#[test]
fn refresh_token_from_offline_login_is_redeemed_by_post_and_accepted_by_the_registry() {
    let w = World::start();
    let (ok, err) = w.push(Some("alice:alice-pw"), "alice/app");
    assert!(ok, "{err}");
    // What `docker login` does: no scope, offline_token=true.
    let (status, body) = w.token(
        &format!("account=alice&client_id=docker&offline_token=true&service={SERVICE}"),
        Some("alice:alice-pw"),
    );
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();
    // Redeemed the way containers/image sends forms: a chunked POST body.
    let form = format!(
        "grant_type=refresh_token&refresh_token={refresh}&service={SERVICE}&client_id=e2e&scope=repository%3Aalice%2Fapp%3Apull"
    );
    let chunked = format!("{:x}\r\n{form}\r\n0\r\n\r\n", form.len());
    let head = "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let (status, _, body) = http(w.setup.gateway_port, head, chunked.as_bytes());
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token");
    // The registry accepts it with only the certificate in its rootcertbundle.
    let head = format!(
        "GET /v2/alice/app/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = http(w.registry.port, &head, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("latest"));

    // Removing the user from the htpasswd stops the refresh token.
    w.setup.remove_user("alice");
    let started = std::time::Instant::now();
    loop {
        let (status, _, _) = http(
            w.setup.gateway_port,
            head_for_post(form.len()).as_str(),
            form.as_bytes(),
        );
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 5,
            "the removed user's refresh token still works"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn head_for_post(len: usize) -> String {
    format!(
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn a_policy_swap_takes_effect_for_the_next_token() {
    let w = World::start();
    let (ok, _) = w.push(Some("bob:bob-pw"), "shared/app");
    assert!(!ok, "nobody may push to shared/ yet");
    let swapped = ACL.replace(
        r#"{"match": {"account": "admin"}, "actions": ["*"]},"#,
        r#"{"match": {"account": "admin"}, "actions": ["*"]},
  {"match": {"account": "bob", "name": "shared/*"}, "actions": ["pull", "push"]},"#,
    );
    let tmp = w.setup.path("acl.json.new");
    std::fs::write(&tmp, swapped).expect("write");
    std::fs::rename(&tmp, w.setup.path("acl.json")).expect("rename");
    let started = std::time::Instant::now();
    loop {
        let (status, body) = w.token(
            &format!("service={SERVICE}&scope=repository:shared/app:push"),
            Some("bob:bob-pw"),
        );
        assert_eq!(status, 200);
        if jwt_payload(body["token"].as_str().expect("token"))["access"][0]["actions"]
            == serde_json::json!(["push"])
        {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 5,
            "the new policy did not take effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, err) = w.push(Some("bob:bob-pw"), "shared/app");
    assert!(ok, "bob pushes after the swap: {err}");
}

#[test]
fn a_groups_file_edit_changes_the_next_token() {
    let w = World::start();
    let query = format!("service={SERVICE}&scope=repository:apps/web:push");
    let pushes = |w: &World| {
        let (status, body) = w.token(&query, Some("carol:carol-pw"));
        assert_eq!(status, 200, "{body}");
        jwt_payload(body["token"].as_str().expect("token"))["access"][0]["actions"]
            == serde_json::json!(["push"])
    };
    assert!(!pushes(&w), "carol is not in ci yet");
    let tmp = w.setup.path("groups.new");
    std::fs::write(&tmp, "ci: robot carol\n").expect("write");
    std::fs::rename(&tmp, w.setup.path("groups")).expect("rename");
    let started = std::time::Instant::now();
    while !pushes(&w) {
        assert!(
            started.elapsed().as_secs() < 5,
            "the groups edit did not take effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A broken edit keeps the last good groups.
    std::fs::write(w.setup.path("groups"), "not a groups line\n").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(pushes(&w), "a groups file that fails to parse never serves");
}

#[test]
fn a_key_rotation_keeps_earlier_tokens_working() {
    require("docker-registry");
    require("skopeo");
    let setup = Setup::new(ACL, USERS);
    let gateway = setup.start_gateway();
    // The registry trusts both certificates: the current one and the one rotated in.
    let next = setup.path("next");
    // The rotated-in key is RSA: registry 2.8 accepts RS256 tokens too.
    let out = portcullis(
        &["keygen", "--rsa", "--out", next.to_str().expect("utf-8")],
        None,
    );
    assert!(out.status.success());
    let bundle = setup.path("bundle.crt");
    let both = std::fs::read_to_string(setup.path("keys/token.crt")).expect("read")
        + &std::fs::read_to_string(next.join("token.crt")).expect("read");
    std::fs::write(&bundle, both).expect("bundle");
    let registry = setup.start_registry(&bundle);
    let token_for = |port: u16| {
        let head = format!(
            "GET /token?service={SERVICE}&scope=registry:catalog:* HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            basic("admin", "admin-pw")
        );
        let (status, _, body) = http(port, &head, b"");
        assert_eq!(status, 200);
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        body["token"].as_str().expect("token").to_string()
    };
    let catalog = |token: &str| {
        let head = format!(
            "GET /v2/_catalog HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        http(registry.port, &head, b"").0
    };
    let old = token_for(gateway.port);
    let old_kid = jwt_header(&old)["kid"].clone();
    assert_eq!(catalog(&old), 200);
    // Rotate: the key and certificate files are replaced in place, as a Secret update would.
    for file in ["token.key", "token.crt"] {
        std::fs::copy(next.join(file), setup.path(&format!("keys/{file}.new"))).expect("copy");
    }
    for file in ["token.crt", "token.key"] {
        std::fs::rename(
            setup.path(&format!("keys/{file}.new")),
            setup.path(&format!("keys/{file}")),
        )
        .expect("rename");
    }
    let started = std::time::Instant::now();
    let new = loop {
        let token = token_for(gateway.port);
        if jwt_header(&token)["kid"] != old_kid {
            break token;
        }
        assert!(
            started.elapsed().as_secs() < 5,
            "the new key was not picked up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(jwt_header(&new)["alg"], "RS256");
    assert_eq!(catalog(&new), 200, "a token from the new key is accepted");
    assert_eq!(
        catalog(&old),
        200,
        "the token from the old key keeps working until it expires"
    );
    let (status, _, body) = http(
        gateway.port,
        "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        jwks["keys"].as_array().map(Vec::len),
        Some(2),
        "both keys published during the rotation"
    );
}

fn jwt_header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}
