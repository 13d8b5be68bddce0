//! Issue 21: pulls of signed images only. Images signed on push by skopeo (Debian 13's,
//! cosign's key-based format) through the gateway; `signed-images` lets through what the
//! trusted key signed, refuses the unsigned and what another key signed, saying why; skopeo's
//! own `sigstoreSigned` policy, asked at the registry, accepts and refuses the same images;
//! and a pull by tag reaches the registry by the digest whose signatures were checked.

use crate::util::{
    Daemon, Setup, basic, cosign_key, free_port, http, oci_image, require, skopeo_signing,
    skopeo_sigstore, wait_for, wasm,
};
use std::path::Path;
use std::process::Command;

/// alice pushes and pulls in prod/.
const ACL: &str = r#"{"rules": [
  {"match": {"account": "alice", "name": "prod/**"}, "actions": ["pull", "push"]}
]}"#;

const USERS: &[(&str, &str)] = &[("alice", "alice-pw")];

#[test]
fn only_images_signed_by_a_trusted_key_are_pulled_and_skopeo_agrees() {
    require("docker-registry");
    require("nginx");
    // Fetched before the servers start: a first fetch takes seconds.
    skopeo_sigstore();
    let extra = r#"
[[policy]]
name = "signed-images"
module = "policies/signed_images.wasm"
settings = { rules = [{ repositories = "prod/**", keys = ["ci"] }] }

[signatures]
keys = { ci = "keys/ci.pub" }

[log]
decisions = "decisions.jsonl"
"#;
    let setup = Setup::gateway(ACL, USERS, extra);
    let dir = setup.dir.path();
    std::fs::copy(
        wasm("signed_images"),
        dir.join("policies/signed_images.wasm"),
    )
    .expect("module");
    setup.insert_config(&crate::console::console_block(&setup, true));
    let (ci_private, _ci_public, ci_pass) = cosign_key(&dir.join("keys"), "ci");
    let (other_private, _, other_pass) = cosign_key(&dir.join("keys"), "other");

    // The gateway reaches the registry through nginx, whose access log shows what it asks.
    let relay_port = free_port();
    std::fs::create_dir_all(dir.join("nginx")).expect("nginx dir");
    std::fs::write(
        dir.join("nginx/nginx.conf"),
        format!(
            "daemon off;\nuser root;\npid {root}/nginx/nginx.pid;\nerror_log {root}/nginx/error.log;\n\
             events {{}}\nhttp {{\n  log_format line '$request';\n\
             access_log {root}/nginx/access.log line;\n  client_body_temp_path {root}/nginx/body;\n\
             proxy_temp_path {root}/nginx/proxy;\n  server {{\n    listen 127.0.0.1:{relay_port};\n\
             client_max_body_size 0;\n    location / {{\n      proxy_pass http://127.0.0.1:{registry};\n\
             proxy_set_header Host $http_host;\n      proxy_request_buffering off;\n\
             proxy_buffering off;\n    }}\n  }}\n}}\n",
            root = dir.display(),
            registry = setup.registry_port,
        ),
    )
    .expect("nginx.conf");
    let config = dir.join("portcullis.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            &format!("127.0.0.1:{}\"", setup.registry_port),
            &format!("127.0.0.1:{relay_port}\""),
        ),
    )
    .expect("config");
    let _registry = setup.start_plain_registry();
    let child = Command::new("nginx")
        .args(["-e", &dir.join("nginx/error.log").display().to_string()])
        .args(["-p", &dir.join("nginx").display().to_string()])
        .args(["-c", &dir.join("nginx/nginx.conf").display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx runs");
    let mut nginx = Daemon(child);
    wait_for("nginx", &mut nginx.0, || {
        std::net::TcpStream::connect(("127.0.0.1", relay_port)).is_ok()
    });
    let gateway = setup.start_gateway();
    let (gw, reg) = (
        format!("127.0.0.1:{}", gateway.port),
        format!("127.0.0.1:{}", setup.registry_port),
    );

    // Signing pushes the signature beside the image: skopeo is told to, per host.
    std::fs::create_dir_all(dir.join("registries.d")).expect("registries.d");
    std::fs::write(
        dir.join("registries.d/local.yaml"),
        format!("docker:\n  {gw}:\n    use-sigstore-attachments: true\n  {reg}:\n    use-sigstore-attachments: true\n"),
    )
    .expect("registries.d");
    std::fs::write(
        dir.join("accept-all.json"),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("policy.json");
    let images = dir.join("images");
    let push = |name: &str, payload: &[u8], key: Option<(&Path, &Path)>| {
        let image = images.join(name);
        oci_image(&image, payload);
        let src = format!("oci:{}:latest", image.display());
        let dest = format!("docker://{gw}/prod/app:{name}");
        let mut args = vec![
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:alice-pw",
        ];
        let (private, pass);
        if let Some((key, passphrase)) = key {
            (private, pass) = (key.display().to_string(), passphrase.display().to_string());
            args.extend([
                "--sign-by-sigstore-private-key",
                &private,
                "--sign-passphrase-file",
                &pass,
            ]);
        }
        args.extend([src.as_str(), dest.as_str()]);
        let (ok, err) = skopeo_signing(dir, "accept-all.json", &args);
        assert!(ok, "push of {name}: {err}");
    };
    push("signed", b"signed by ci", Some((&ci_private, &ci_pass)));
    push("unsigned", b"signed by nobody", None);
    push(
        "other",
        b"signed by another key",
        Some((&other_private, &other_pass)),
    );

    // Pulls through the gateway, with Debian 12's skopeo (no signature checks of its own).
    let pull = |tag: &str| {
        let out = tempfile::tempdir().expect("tempdir");
        crate::util::skopeo(
            dir,
            &[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                "alice:alice-pw",
                &format!("docker://{gw}/prod/app:{tag}"),
                &format!("dir:{}", out.path().display()),
            ],
        )
    };
    let (ok, err) = pull("signed");
    assert!(ok, "signed by ci: {err}");
    let (ok, err) = pull("unsigned");
    assert!(!ok, "unsigned");
    assert!(
        err.contains("no valid signature"),
        "the reason reaches the client: {err}"
    );
    let (ok, err) = pull("other");
    assert!(!ok, "signed by another key");
    assert!(err.contains("no valid signature"), "{err}");

    // The pull by tag reached the registry by the digest its signatures were checked for.
    let log = std::fs::read_to_string(dir.join("nginx/access.log")).expect("access log");
    let by_tag: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("GET /v2/prod/app/manifests/signed "))
        .collect();
    assert!(by_tag.is_empty(), "forwarded by tag: {by_tag:?}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("GET /v2/prod/app/manifests/sha256:")),
        "{log}"
    );

    // Skopeo's own verdict, at the registry itself (the signer pushed through the gateway).
    std::fs::write(
        dir.join("verify.json"),
        format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{reg}":[{{"type":"sigstoreSigned","keyPath":"{key}","signedIdentity":{{"type":"remapIdentity","prefix":"{reg}","signedPrefix":"{gw}"}}}}]}}}}}}"#,
            key = dir.join("keys/ci.pub").display(),
        ),
    )
    .expect("verify.json");
    let verdict = |tag: &str| {
        let out = tempfile::tempdir().expect("tempdir");
        skopeo_signing(
            dir,
            "verify.json",
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{reg}/prod/app:{tag}"),
                &format!("dir:{}", out.path().display()),
            ],
        )
    };
    let (ok, err) = verdict("signed");
    assert!(ok, "skopeo accepts what we accept: {err}");
    for tag in ["unsigned", "other"] {
        let (ok, err) = verdict(tag);
        assert!(
            !ok && err.contains("rejected"),
            "skopeo refuses {tag} as we do: {err}"
        );
    }

    // The console's image page says who signed it.
    let (session, _) = crate::console::sign_in_by_hand(gateway.port, "alice", "alice-pw");
    let (status, _, page) = crate::console::request(
        gateway.port,
        "GET",
        "/ui/manifest?name=prod/app&ref=signed",
        &[("Cookie", &session)],
        "",
    );
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Signed") && page.contains("by ci"), "{page}");

    // The decisions hold the signatures fact.
    let decisions = std::fs::read_to_string(dir.join("decisions.jsonl")).expect("the log");
    assert!(
        decisions.lines().any(|l| l.contains(r#""keys":["ci"]"#)),
        "{decisions}"
    );
    let basic_auth = basic("alice", "alice-pw");
    let head = format!(
        "GET /v2/prod/app/manifests/unsigned HTTP/1.1\r\nHost: {gw}\r\nAuthorization: Basic {basic_auth}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = http(gateway.port, &head, b"");
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
}
