//! The compose setups, run from the very same config files that compose.yaml and
//! compose.gateway.yaml mount: Debian's docker-registry stands in for the registry:2 image,
//! the built binary and `deploy/docker/entrypoint.sh` for the portcullis image. Only what a
//! container gets from its mounts and network differs: the state directory, the policies'
//! directory and the addresses are substituted.

use crate::util::{bin_dir, free_port, oci_image, push, registry, require, serve, wasm};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Runs the image's `init` against a state directory; returns the admin password it printed.
fn init(state: &Path) -> String {
    run_init(state)
        .lines()
        .find_map(|l| l.strip_prefix("created user admin, password: "))
        .expect("the admin password is printed")
        .to_string()
}

/// Runs the image's `init`; returns what it printed.
fn run_init(state: &Path) -> String {
    std::fs::create_dir_all(state.join("keys")).expect("mkdir");
    std::fs::create_dir_all(state.join("auth")).expect("mkdir");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg(repo_file("deploy/docker/entrypoint.sh"))
        .arg("init")
        .env("PORTCULLIS_STATE", state)
        .env("PATH", path)
        .output()
        .expect("the entrypoint runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "init failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(state.join("keys/token.key").exists() && state.join("auth/htpasswd").exists());
    stdout.into_owned()
}

/// Copies deploy/compose to `etc` as the containers see it, with `substitutions` applied to
/// the config of `mode`; returns that config's path.
fn mount(etc: &Path, mode: &str, substitutions: &[(&str, String)]) -> PathBuf {
    std::fs::create_dir_all(etc.join(mode)).expect("mkdir");
    for file in ["acl.json", "groups"] {
        std::fs::copy(repo_file(&format!("deploy/compose/{file}")), etc.join(file)).expect("copy");
    }
    let mut text =
        std::fs::read_to_string(repo_file(&format!("deploy/compose/{mode}/portcullis.toml")))
            .expect("the compose config");
    for (from, to) in substitutions {
        assert!(
            text.contains(from),
            "{mode}/portcullis.toml no longer holds {from:?}"
        );
        text = text.replace(from, to);
    }
    let config = etc.join(mode).join("portcullis.toml");
    std::fs::write(&config, text).expect("write");
    config
}

fn policies_dir() -> String {
    format!("{}/", wasm("acl").parent().expect("a directory").display())
}

#[test]
fn the_compose_gateway_configs_serve_pushes_and_log_decisions() {
    require("docker-registry");
    require("skopeo");
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let password = init(&state);
    assert_eq!(run_init(&state), "", "a second init changes nothing");
    let (gateway_port, registry_port) = (free_port(), free_port());
    let config = mount(
        &tmp.path().join("etc"),
        "gateway",
        &[
            ("/var/lib/portcullis", state.display().to_string()),
            ("/usr/local/lib/portcullis/policies/", policies_dir()),
            ("0.0.0.0:5000", format!("127.0.0.1:{gateway_port}")),
            ("0.0.0.0:9090", format!("127.0.0.1:{}", free_port())),
            (
                "http://registry:5000",
                format!("http://127.0.0.1:{registry_port}"),
            ),
            (
                "decisions = \"stdout\"",
                "decisions = \"decisions.jsonl\"".into(),
            ),
        ],
    );
    let _registry = registry(
        &repo_file("deploy/compose/gateway/registry.yml"),
        registry_port,
        &[
            ("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{registry_port}")),
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                tmp.path().join("data").display().to_string(),
            ),
        ],
        &tmp.path().join("registry.log"),
    );
    let _gateway = serve(&config, gateway_port);
    let image = tmp.path().join("image");
    oci_image(&image, b"compose, gateway mode");
    let creds = format!("admin:{password}");
    let (ok, err) = push(tmp.path(), &image, &creds, gateway_port, "apps/web:v1");
    assert!(ok, "admin (in release) pushes a release tag: {err}");
    let log_file = tmp.path().join("etc/gateway/decisions.jsonl");
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&log_file).unwrap_or_default();
        if log.contains("\"account\":\"admin\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        log.contains("\"account\":\"admin\""),
        "the decision log is written: {log}"
    );
    assert!(!log.contains(&password), "no password in the decision log");
}

#[test]
fn the_compose_token_server_configs_issue_tokens_the_registry_accepts() {
    require("docker-registry");
    require("skopeo");
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let password = init(&state);
    let (token_port, registry_port) = (free_port(), free_port());
    let config = mount(
        &tmp.path().join("etc"),
        "token-server",
        &[
            ("/var/lib/portcullis", state.display().to_string()),
            ("/usr/local/lib/portcullis/policies/", policies_dir()),
            ("0.0.0.0:5001", format!("127.0.0.1:{token_port}")),
            ("0.0.0.0:9090", format!("127.0.0.1:{}", free_port())),
        ],
    );
    let _portcullis = serve(&config, token_port);
    let _registry = registry(
        &repo_file("deploy/compose/token-server/registry.yml"),
        registry_port,
        &[
            ("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{registry_port}")),
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                tmp.path().join("data").display().to_string(),
            ),
            (
                "REGISTRY_AUTH_TOKEN_REALM",
                format!("http://127.0.0.1:{token_port}/token"),
            ),
            (
                "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE",
                state.join("keys/token.crt").display().to_string(),
            ),
        ],
        &tmp.path().join("registry.log"),
    );
    let image = tmp.path().join("image");
    oci_image(&image, b"compose, token-server mode");
    let creds = format!("admin:{password}");
    let (ok, err) = push(tmp.path(), &image, &creds, registry_port, "apps/web:latest");
    assert!(ok, "push with a token from the compose token server: {err}");
}
