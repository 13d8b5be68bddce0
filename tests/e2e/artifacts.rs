//! Issue 22: policies shipped as signed OCI artifacts. `portcullis policy push --sign`
//! publishes a module to the real registry; the gateway serves it by tag, follows the tag to
//! a new signed build under load without a failed request, refuses an unsigned build and one
//! signed by another key (the last good one serves, the reason is in /status and /readyz),
//! accepts what Debian 13's skopeo signed with the trusted key and refuses what it signed with
//! another; skopeo's `sigstoreSigned` agrees with our signatures; a restart while the registry
//! is down serves the last verified module, and a tampered cache is refused.

use crate::util::{
    Setup, basic, cosign_key, free_port, http, portcullis, require, serve, skopeo_signing, wasm,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// alice pulls everything.
const ACL: &str = r#"{"rules": [{"match": {"account": "alice"}, "actions": ["pull"]}]}"#;
const USERS: &[(&str, &str)] = &[("alice", "alice-pw")];

/// The acl module with a custom section `portcullis-e2e` holding `build`: the same
/// behaviour under another digest, as a rebuild gives.
fn build_of(dir: &Path, build: &str) -> (PathBuf, String) {
    let mut bytes = std::fs::read(wasm("acl")).expect("acl.wasm");
    let name = b"portcullis-e2e";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(build.as_bytes());
    assert!(section.len() < 128, "one LEB128 byte");
    bytes.push(0);
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    let path = dir.join(format!("acl-{build}.wasm"));
    std::fs::write(&path, &bytes).expect("build");
    (path, digest_of(&bytes))
}

fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `portcullis policy push`: the manifest digest it printed.
fn push(module: &Path, reference: &str, key: Option<(&Path, &Path)>) -> String {
    push_as(module, reference, key, None)
}

/// `portcullis policy push`, logging in as (user, password file) when the registry asks.
fn push_as(
    module: &Path,
    reference: &str,
    key: Option<(&Path, &Path)>,
    login: Option<(&str, &Path)>,
) -> String {
    let mut args = vec![
        "policy".to_string(),
        "push".into(),
        module.display().to_string(),
        reference.into(),
    ];
    if let Some((key, pass)) = key {
        args.extend([
            "--sign".into(),
            key.display().to_string(),
            "--passphrase-file".into(),
            pass.display().to_string(),
        ]);
    }
    if let Some((user, password)) = login {
        args.extend([
            "--username".into(),
            user.into(),
            "--password-file".into(),
            password.display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = portcullis(&args, None);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "policy push: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .split_whitespace()
        .find(|word| word.starts_with("sha256:"))
        .map(|d| d.trim_end_matches(',').to_string())
        .expect("a digest")
}

fn get_json(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        b"",
    );
    (status, serde_json::from_slice(&body).expect("JSON"))
}

/// The acl policy's entry in /status.
fn serving(admin: u16) -> serde_json::Value {
    get_json(admin, "/status").1["policies"][0].clone()
}

/// Waits up to `limit` for /status to satisfy `check`, returning the entry.
fn wait_status(
    admin: u16,
    limit: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let entry = serving(admin);
        if check(&entry) {
            return entry;
        }
        assert!(started.elapsed() < limit, "{what}: still {entry:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_policy_follows_its_tag_only_to_signed_builds_and_survives_the_registry_going_away() {
    require("docker-registry");
    let setup = Setup::gateway(ACL, USERS, "");
    let dir = setup.dir.path();
    let registry = format!("127.0.0.1:{}", setup.registry_port);
    let stable = format!("{registry}/policies/acl:stable");
    let config = dir.join("portcullis.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "module = \"policies/acl.wasm\"",
        &format!("oci = \"{stable}\"\npoll_seconds = 1\nsigned_by = [\"release\"]"),
    );
    std::fs::write(
        &config,
        format!(
            "{text}\n[signatures]\nkeys = {{ release = \"keys/release.pub\" }}\n\n\
             [cache]\ndir = \"cache\"\n"
        ),
    )
    .expect("config");
    let (release, release_pub, release_pass) = cosign_key(&dir.join("keys"), "release");
    let (other, other_pub, other_pass) = cosign_key(&dir.join("keys"), "other");
    let builds = dir.join("builds");
    std::fs::create_dir_all(&builds).expect("builds");
    let mut registry_process = Some(setup.start_plain_registry());

    let (first, first_module) = build_of(&builds, "1");
    let first_manifest = push(&first, &stable, Some((&release, &release_pass)));
    let mut gateway = setup.start_gateway();
    let admin = setup.admin_port;
    // A second replica, with a cache of its own as a pod has.
    let (replica_admin, replica_port) = (free_port(), free_port());
    let replica_config = dir.join("portcullis-b.toml");
    std::fs::write(
        &replica_config,
        std::fs::read_to_string(&config)
            .expect("config")
            .replace(
                &format!("listen = \"127.0.0.1:{}\"", setup.gateway_port),
                &format!("listen = \"127.0.0.1:{replica_port}\""),
            )
            .replace(
                &format!("admin_listen = \"127.0.0.1:{admin}\""),
                &format!("admin_listen = \"127.0.0.1:{replica_admin}\""),
            )
            .replace("dir = \"cache\"", "dir = \"cache-b\""),
    )
    .expect("replica config");
    let replica = serve(&replica_config, replica_port);
    let entry = serving(admin);
    assert_eq!(entry["digest"], first_module.as_str(), "{entry:#}");
    assert_eq!(entry["module"], stable.as_str());
    assert_eq!(entry["oci"]["manifest"], first_manifest.as_str());
    assert_eq!(entry["oci"]["signed_by"], "release");
    assert_eq!(entry["oci"]["from_cache"], false);

    assert_eq!(serving(replica_admin)["digest"], first_module.as_str());
    // What was compiled is kept for the next start.
    let compiled = std::fs::read_dir(dir.join("cache/compiled"))
        .expect("compiled code is kept")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        })
        .count();
    assert!(compiled >= 1, "no compiled code in cache/compiled");

    // Requests keep flowing while the tag moves, and what each replica serves is watched.
    let stop = Arc::new(AtomicBool::new(false));
    let watched = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                for port in [admin, replica_admin] {
                    if let Some(digest) = serving(port)["digest"].as_str() {
                        seen.insert(digest.to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        let port = setup.gateway_port;
        std::thread::spawn(move || {
            let head = format!(
                "GET /v2/policies/acl/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\
                 Connection: close\r\n\r\n",
                basic("alice", "alice-pw")
            );
            while !stop.load(Ordering::SeqCst) {
                match http(port, &head, b"").0 {
                    200 => served.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };

    // A new signed build is served within the poll interval (1 s, and a tick).
    let (second, second_module) = build_of(&builds, "2");
    let second_manifest = push(&second, &stable, Some((&release, &release_pass)));
    let moved = Instant::now();
    for port in [admin, replica_admin] {
        wait_status(port, Duration::from_secs(5), "the signed build 2", |e| {
            e["digest"] == second_module.as_str()
        });
    }
    eprintln!(
        "both replicas served build 2 {:?} after its push",
        moved.elapsed()
    );

    // Unsigned: refused, build 2 keeps serving, and the reason is shown.
    let (third, _) = build_of(&builds, "3");
    let third_manifest = push(&third, &stable, None);
    let entry = wait_status(admin, Duration::from_secs(5), "build 3 refused", |e| {
        e["oci"]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains(&third_manifest))
    });
    assert!(
        entry["oci"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("is not signed")),
        "{entry:#}"
    );
    assert_eq!(entry["digest"], second_module.as_str());
    let (status, ready) = get_json(admin, "/readyz");
    assert_eq!(status, 200, "the last good module serves: {ready:#}");
    assert!(
        ready["policy_artifacts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("is not signed")),
        "{ready:#}"
    );

    // Signed by a key the policy does not name: refused too.
    let (fourth, _) = build_of(&builds, "4");
    let fourth_manifest = push(&fourth, &stable, Some((&other, &other_pass)));
    let entry = wait_status(admin, Duration::from_secs(5), "build 4 refused", |e| {
        e["oci"]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains(&fourth_manifest))
    });
    assert!(
        entry["oci"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not signed by release")),
        "{entry:#}"
    );
    assert_eq!(entry["digest"], second_module.as_str());

    // skopeo signs on copy: with the trusted key, served; with another, refused.
    std::fs::create_dir_all(dir.join("registries.d")).expect("registries.d");
    std::fs::write(
        dir.join("registries.d/local.yaml"),
        format!("docker:\n  {registry}:\n    use-sigstore-attachments: true\n"),
    )
    .expect("registries.d");
    std::fs::write(
        dir.join("accept-all.json"),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("policy.json");
    let skopeo_sign = |build: &str, key: &Path, pass: &Path| {
        let (module, digest) = build_of(&builds, build);
        let staging = format!("{registry}/policies/acl:staging-{build}");
        push(&module, &staging, None);
        let (ok, stderr) = skopeo_signing(
            dir,
            "accept-all.json",
            &[
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--sign-by-sigstore-private-key",
                &key.display().to_string(),
                "--sign-passphrase-file",
                &pass.display().to_string(),
                &format!("docker://{staging}"),
                &format!("docker://{stable}"),
            ],
        );
        assert!(ok, "skopeo signs build {build}: {stderr}");
        digest
    };
    let fifth_module = skopeo_sign("5", &release, &release_pass);
    wait_status(
        admin,
        Duration::from_secs(5),
        "skopeo's signed build 5",
        |e| e["digest"] == fifth_module.as_str() && e["oci"]["last_error"].is_null(),
    );
    skopeo_sign("6", &other, &other_pass);
    let entry = wait_status(admin, Duration::from_secs(5), "build 6 refused", |e| {
        e["oci"]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("not signed by release"))
    });
    assert_eq!(entry["digest"], fifth_module.as_str());

    stop.store(true, Ordering::SeqCst);
    load.join().expect("the load ran");
    let seen = watched.join().expect("the watch ran");
    let verified: BTreeSet<String> = [&first_module, &second_module, &fifth_module]
        .into_iter()
        .cloned()
        .collect();
    assert!(
        seen.is_subset(&verified) && seen.len() == 3,
        "a replica served {seen:?}; verified builds are {verified:?}"
    );
    assert_eq!(serving(replica_admin)["digest"], fifth_module.as_str());
    drop(replica);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "a request failed while the policy was swapped"
    );
    assert!(served.load(Ordering::SeqCst) > 20, "the load ran");

    // skopeo verifies what `policy push --sign` signed, and refuses the other key's build.
    std::fs::write(
        dir.join("verify.json"),
        serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {
            registry.clone(): [{"type": "sigstoreSigned", "keyPath": release_pub,
                "signedIdentity": {"type": "matchRepository"}}]}}})
        .to_string(),
    )
    .expect("verify.json");
    let verify = |manifest: &str| {
        skopeo_signing(
            dir,
            "verify.json",
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{registry}/policies/acl@{manifest}"),
                &format!(
                    "dir:{}",
                    dir.join(format!("out-{}", &manifest[7..19])).display()
                ),
            ],
        )
    };
    let (accepted, stderr) = verify(&second_manifest);
    assert!(accepted, "skopeo refused our signature: {stderr}");
    let (accepted, stderr) = verify(&fourth_manifest);
    assert!(!accepted, "skopeo accepted another key's build");
    assert!(stderr.contains("signature"), "{stderr}");
    let (accepted, _) = verify(&third_manifest);
    assert!(!accepted, "skopeo accepted an unsigned build");
    let _ = other_pub;

    // The registry goes away; a restart serves the last verified module from the cache.
    drop(gateway);
    drop(registry_process.take());
    gateway = setup.start_gateway();
    let entry = serving(admin);
    assert_eq!(entry["digest"], fifth_module.as_str(), "{entry:#}");
    assert_eq!(entry["oci"]["from_cache"], true);
    assert!(
        entry["oci"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("from the cache")),
        "{entry:#}"
    );
    drop(gateway);

    // A cache someone changed is not trusted: the start fails, saying why.
    let module = dir
        .join("cache/modules")
        .join(format!("{}.wasm", fifth_module.replace(':', "-")));
    let mut bytes = std::fs::read(&module).expect("the cached module");
    bytes.extend_from_slice(&[0, 2, 1, b'x']);
    std::fs::write(&module, bytes).expect("tampered");
    let out = portcullis(&["check", "--config", &config.display().to_string()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a tampered cache served");
    assert!(
        stderr.contains("was changed") && stderr.contains("cannot pull"),
        "{stderr}"
    );
}

/// alice pulls everything and publishes policies.
const PUBLISHER_ACL: &str = r#"{"rules": [
  {"match": {"account": "alice", "name": "policies/**"}, "actions": ["pull", "push"]},
  {"match": {"account": "alice"}, "actions": ["pull"]}
]}"#;

/// Token-server mode: the registry takes only tokens Portcullis signs. `policy push` logs in
/// where the registry's challenge sends it (Portcullis's /token, as alice); the gateway pulls
/// the policy with a `pull` token it signs itself, once a config edit names it.
#[test]
fn token_server_mode_pulls_its_policies_with_a_token_of_its_own() {
    require("docker-registry");
    let setup = Setup::new(PUBLISHER_ACL, USERS);
    let dir = setup.dir.path();
    let gateway = setup.start_gateway();
    let _registry = setup.start_registry(&setup.path("keys/token.crt"));
    let registry = format!("127.0.0.1:{}", setup.registry_port);
    let (release, _, release_pass) = cosign_key(&dir.join("keys"), "release");
    std::fs::write(dir.join("alice.pw"), "alice-pw\n").expect("password file");
    let stable = format!("{registry}/policies/acl:stable");
    let publish = |build: &str| {
        let (module, module_digest) = build_of(dir, build);
        push_as(
            &module,
            &stable,
            Some((&release, &release_pass)),
            Some(("alice", &dir.join("alice.pw"))),
        );
        module_digest
    };
    let module_digest = publish("1");
    // Nobody reaches the registry without a token.
    let (status, _, _) = http(
        setup.registry_port,
        "GET /v2/policies/acl/manifests/stable HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 401);

    let config = dir.join("portcullis.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[[policy]]\nname = \"published\"\noci = \"{stable}\"\nsigned_by = [\"release\"]\n\
         settings_file = \"acl.json\"\n\n[signatures]\nkeys = {{ release = \"keys/release.pub\" }}\n\n\
         [cache]\ndir = \"cache\"\n\n[console]\nregistry_url = \"http://{registry}\"\n"
    ));
    std::fs::write(&config, text).expect("config");
    let started = Instant::now();
    let entry = loop {
        let policies = get_json(setup.admin_port, "/status").1["policies"].clone();
        if policies.as_array().is_some_and(|p| p.len() == 2) {
            break policies[1].clone();
        }
        let error = get_json(setup.admin_port, "/status").1["config_reload_error"].clone();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the edit did not load: {error}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry["digest"], module_digest.as_str(), "{entry:#}");
    assert_eq!(entry["oci"]["signed_by"], "release");
    assert_eq!(entry["oci"]["from_cache"], false);

    // The tag is looked at every 30 s (the default); SIGHUP looks at once.
    let second = publish("2");
    gateway.signal("HUP");
    let started = Instant::now();
    while get_json(setup.admin_port, "/status").1["policies"][1]["digest"] != second.as_str() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGHUP did not look at the tag"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A policy kept in another registry, one with logins of its own (htpasswd, Basic): the
/// gateway pulls it with the login of `[registries."host:port"]`; a wrong password fails the
/// start, saying where.
#[test]
fn a_policy_in_another_registry_is_pulled_with_its_configured_login() {
    require("docker-registry");
    let setup = Setup::gateway(ACL, USERS, "");
    let dir = setup.dir.path();
    let _upstream = setup.start_plain_registry();
    // The other registry: bob may push and pull there.
    let other_port = free_port();
    let out = portcullis(
        &[
            "passwd",
            &dir.join("other.htpasswd").display().to_string(),
            "bob",
            "--cost",
            "4",
        ],
        Some("bob-pw\n"),
    );
    assert!(out.status.success(), "passwd");
    let other_config = dir.join("other-registry.yml");
    std::fs::write(
        &other_config,
        format!(
            "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\n\
             storage: {{filesystem: {{rootdirectory: {data}}}}}\n\
             http: {{addr: 127.0.0.1:{other_port}, secret: e2e-secret}}\n\
             auth: {{htpasswd: {{realm: policies, path: {htpasswd}}}}}\n",
            data = dir.join("other-data").display(),
            htpasswd = dir.join("other.htpasswd").display(),
        ),
    )
    .expect("registry config");
    let _other = crate::util::registry(&other_config, other_port, &[], &dir.join("other.log"));
    std::fs::write(dir.join("bob.pw"), "bob-pw\n").expect("password");
    let (release, _, release_pass) = cosign_key(&dir.join("keys"), "release");
    let (module, module_digest) = build_of(dir, "1");
    let reference = format!("127.0.0.1:{other_port}/policies/acl:stable");
    push_as(
        &module,
        &reference,
        Some((&release, &release_pass)),
        Some(("bob", &dir.join("bob.pw"))),
    );

    let config = dir.join("portcullis.toml");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "module = \"policies/acl.wasm\"",
        &format!("oci = \"{reference}\"\nsigned_by = [\"release\"]"),
    );
    std::fs::write(
        &config,
        format!(
            "{text}\n[signatures]\nkeys = {{ release = \"keys/release.pub\" }}\n\n\
             [cache]\ndir = \"cache\"\n\n[registries.\"127.0.0.1:{other_port}\"]\n\
             username = \"bob\"\npassword_file = \"bob.pw\"\n"
        ),
    )
    .expect("config");
    {
        let _gateway = setup.start_gateway();
        let entry = serving(setup.admin_port);
        assert_eq!(entry["digest"], module_digest.as_str(), "{entry:#}");
        assert_eq!(entry["oci"]["from_cache"], false);
    }

    // With a wrong password and nothing kept, nothing can serve: the start fails.
    std::fs::remove_dir_all(dir.join("cache")).expect("cache removed");
    std::fs::write(dir.join("bob.pw"), "wrong\n").expect("password");
    let out = portcullis(&["check", "--config", &config.display().to_string()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong login served");
    assert!(
        stderr.contains("cannot pull")
            && stderr.contains(&reference)
            && stderr.contains("refused the login of \"bob\""),
        "{stderr}"
    );
}
