//! The clients people run: docker (Debian's engine 20.10, with every docker CLI installed),
//! containerd's `ctr` and podman log in, push, pull, are refused and log out through
//! Portcullis, in token-server mode (the registry with `auth.token`) and in gateway mode,
//! against Debian's docker-registry (distribution 2.8). Each engine runs as its own instance
//! in a temp dir; nothing touches the machine's own Docker, containerd or podman state.
//! docker also logs in with a personal token made in the console, until it is revoked.

use crate::console::{console_block, make_token_by_hand, request, sign_in_by_hand};
use crate::util::{
    self, Daemon, DockerUser, Dockerd, Ran, Setup, require, rootfs_tar, run, run_with_stdin,
    wait_for,
};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const ACL: &str = r#"{"rules": [
  {"match": {"account": "/.+/", "name": "${account}/**"}, "actions": ["pull", "push", "delete"], "comment": "your own namespace"},
  {"match": {"name": "alice/**"}, "actions": [], "comment": "only alice may use alice/"}
]}"#;

/// The reason the policies give bob, which gateway mode passes on to him.
const REASON: &str = "acl rule 2 (only alice may use alice/) grants nothing";

const USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("bob", "bob-pw")];

/// A registry behind Portcullis, in one of the two modes; `host` is where clients go.
struct Site {
    site: util::Site,
    host: String,
    mode: &'static str,
}

impl Site {
    fn start(mode: &'static str) -> Site {
        let gateway_mode = mode == "gateway";
        let setup = if gateway_mode {
            Setup::gateway(ACL, USERS, "")
        } else {
            Setup::new(ACL, USERS)
        };
        // The console, for personal tokens.
        setup.insert_config(&console_block(&setup, gateway_mode));
        // alice's first image, pushed by skopeo: what ctr starts from.
        let site = util::Site::start(
            setup,
            gateway_mode,
            format!("an image for the {mode} clients").as_bytes(),
        );
        let (ok, err) = site.push("alice:alice-pw", "alice/base:1");
        assert!(ok, "skopeo seeds alice/base: {err}");
        Site {
            host: format!("127.0.0.1:{}", site.port),
            site,
            mode,
        }
    }

    /// `host/name`.
    fn at(&self, name: &str) -> String {
        format!("{}/{name}", self.host)
    }
}

/// Every docker CLI on this machine, one per version: Debian's, and any other installed
/// (a newer one in /usr/local/bin, say), all against the one engine.
fn docker_clis() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cli = dir.join("docker");
        let Ok(out) = Command::new(&cli).args(["--version"]).output() else {
            continue;
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !found.iter().any(|(_, v)| *v == version) {
            found.push((cli, version));
        }
    }
    assert!(
        !found.is_empty(),
        "no docker CLI: apt-get install docker.io"
    );
    found
}

/// What a refused docker command prints, per mode: gateway mode names the policy and its
/// reason (`error_description` of the challenge); registry:2 itself says only "denied".
fn docker_refusal(mode: &str) -> &'static str {
    match mode {
        "gateway" => REASON,
        _ => "denied: requested access to the resource is denied",
    }
}

#[test]
fn docker_logs_in_pushes_pulls_and_is_refused_in_both_modes() {
    let dockerd = Dockerd::start();
    let work = tempfile::tempdir().expect("tempdir");
    let tar = rootfs_tar(work.path());
    let clis = docker_clis();
    for mode in ["token-server", "gateway"] {
        let site = Site::start(mode);
        for (i, (cli, version)) in clis.iter().enumerate() {
            let user = |name: &str| DockerUser {
                cli,
                dockerd: &dockerd,
                config: work.path().join(format!("{mode}-{i}-{name}")),
            };
            let (alice, bob) = (user("alice"), user("bob"));
            let ctx = format!("{version}, {mode}");
            let mine = site.at(&format!("alice/docker{i}:1"));
            let r = run(&mut alice.docker(&["import", tar.to_str().expect("utf-8"), &mine]));
            assert!(r.ok, "{ctx}: import: {}", r.text);

            let r = alice.login(&site.host, "alice", "wrong");
            assert!(!r.ok, "{ctx}: a wrong password logs in: {}", r.text);
            let r = alice.login(&site.host, "alice", "alice-pw");
            assert!(r.ok, "{ctx}: login: {}", r.text);
            // docker keeps our refresh token as its identity token, and no password.
            let auth = &alice.config_json()["auths"][&site.host];
            assert!(
                auth["identitytoken"]
                    .as_str()
                    .is_some_and(|t| t.split('.').count() == 3),
                "{ctx}: {auth}"
            );
            let stored = data_encoding::BASE64
                .decode(auth["auth"].as_str().unwrap_or_default().as_bytes())
                .unwrap_or_default();
            assert_eq!(stored, b"alice:", "{ctx}: the password is not kept");

            let r = run(&mut alice.docker(&["push", &mine]));
            assert!(r.ok, "{ctx}: push: {}", r.text);
            // Issue 24: the same layers pushed to another repository are mounted from the
            // first, not uploaded again (the gateway asks for the source's scope as the
            // registry does).
            let again = site.at(&format!("alice/again{i}:1"));
            assert!(run(&mut alice.docker(&["tag", &mine, &again])).ok);
            let r = run(&mut alice.docker(&["push", &again]));
            assert!(r.ok, "{ctx}: push again: {}", r.text);
            assert!(
                r.text.contains(&format!("Mounted from alice/docker{i}")),
                "{ctx}: the layer was uploaded again: {}",
                r.text
            );
            assert!(run(&mut alice.docker(&["rmi", &again])).ok);
            let r = run(&mut alice.docker(&["rmi", &mine]));
            assert!(r.ok, "{ctx}: rmi: {}", r.text);
            let r = run(&mut alice.docker(&["pull", &mine]));
            assert!(r.ok, "{ctx}: pull (from the identity token): {}", r.text);

            let r = bob.login(&site.host, "bob", "bob-pw");
            assert!(r.ok, "{ctx}: bob logs in: {}", r.text);
            let theirs = site.at(&format!("alice/from-bob{i}:1"));
            assert!(run(&mut bob.docker(&["tag", &mine, &theirs])).ok);
            let r = run(&mut bob.docker(&["push", &theirs]));
            assert!(!r.ok, "{ctx}: bob pushed into alice/");
            assert!(r.text.contains(docker_refusal(mode)), "{ctx}: {}", r.text);
            assert!(run(&mut bob.docker(&["rmi", &mine, &theirs])).ok);
            let r = run(&mut bob.docker(&["pull", &mine]));
            assert!(!r.ok, "{ctx}: bob pulled alice's image");
            assert!(r.text.contains(docker_refusal(mode)), "{ctx}: {}", r.text);

            for u in [&alice, &bob] {
                let r = run(&mut u.docker(&["logout", &site.host]));
                assert!(r.ok, "{ctx}: logout: {}", r.text);
                assert!(u.config_json()["auths"][&site.host].is_null(), "{ctx}");
            }

            // A personal token from the console is a password to docker (no refresh token
            // is minted for it, so docker keeps the token itself), until it is revoked.
            let console = site.site.setup.gateway_port;
            let (session, csrf) = sign_in_by_hand(console, "alice", "alice-pw");
            let token = make_token_by_hand(console, &session, &csrf, "docker");
            let ci = user("ci");
            let r = ci.login(&site.host, "alice", &token);
            assert!(r.ok, "{ctx}: login with a personal token: {}", r.text);
            let built = site.at(&format!("alice/ci{i}:1"));
            let r = run(&mut ci.docker(&["import", tar.to_str().expect("utf-8"), &built]));
            assert!(r.ok, "{ctx}: import: {}", r.text);
            let r = run(&mut ci.docker(&["push", &built]));
            assert!(r.ok, "{ctx}: push with a personal token: {}", r.text);
            assert!(run(&mut ci.docker(&["rmi", &built])).ok);
            let form = format!("csrf={csrf}&token={token}");
            let (status, head, _) = request(
                console,
                "POST",
                "/ui/tokens/revoke",
                &[("Cookie", &session)],
                &form,
            );
            assert_eq!(status, 303, "{ctx}: revoke: {head}");
            let r = run(&mut ci.docker(&["pull", &built]));
            assert!(!r.ok, "{ctx}: a revoked personal token pulled");
            assert!(
                r.text.contains("the personal token \"docker\" was revoked"),
                "{ctx}: {}",
                r.text
            );
            assert!(run(&mut ci.docker(&["logout", &site.host])).ok);
        }
    }
}

/// containerd of our own: root, state and socket in a temp dir, its CRI plugin off.
struct Containerd {
    _daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        require("containerd");
        require("ctr");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}/root\"\nstate = \"{root}/state\"\n\
                 [grpc]\n  address = \"{root}/containerd.sock\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n",
                root = root.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(root.join("containerd.log")).expect("log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd runs");
        let socket = root.join("containerd.sock");
        wait_for("containerd", &mut child, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        Containerd {
            _daemon: Daemon(child),
            dir,
        }
    }

    fn ctr(&self, args: &[&str]) -> Ran {
        run(Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(args))
    }
}

#[test]
fn containerd_pulls_pushes_and_is_refused_in_both_modes() {
    let containerd = Containerd::start();
    for mode in ["token-server", "gateway"] {
        let site = Site::start(mode);
        let base = site.at("alice/base:1");
        let alice = ["--plain-http", "--user", "alice:alice-pw"];
        let bob = ["--plain-http", "--user", "bob:bob-pw"];
        let with = |verb: &str, who: [&str; 3], reference: &str| {
            let mut args = vec!["images", verb];
            args.extend(who);
            args.push(reference);
            containerd.ctr(&args)
        };
        let r = with("pull", alice, &base);
        assert!(r.ok, "{mode}: pull: {}", r.text);
        let r = with("pull", ["--plain-http", "--user", "alice:wrong"], &base);
        assert!(!r.ok, "{mode}: a wrong password pulled");
        let mine = site.at("alice/ctr:1");
        assert!(containerd.ctr(&["images", "tag", &base, &mine]).ok);
        let r = with("push", alice, &mine);
        assert!(r.ok, "{mode}: push: {}", r.text);
        let theirs = site.at("alice/from-bob:1");
        assert!(containerd.ctr(&["images", "tag", &base, &theirs]).ok);
        let r = with("push", bob, &theirs);
        assert!(!r.ok, "{mode}: bob pushed into alice/");
        assert!(r.text.contains("insufficient_scope"), "{mode}: {}", r.text);
        assert!(containerd.ctr(&["images", "rm", &base]).ok);
        let r = with("pull", bob, &base);
        assert!(!r.ok, "{mode}: bob pulled alice's image");
        assert!(r.text.contains("pull access denied"), "{mode}: {}", r.text);
    }
}

/// podman with its own storage (vfs) and auth file in a temp dir.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        require("podman");
        Podman {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn podman(&self, user: &str, args: &[&str]) -> Command {
        let root = self.dir.path();
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(root.join("storage"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .env("REGISTRY_AUTH_FILE", root.join(format!("{user}-auth.json")))
            .env("XDG_RUNTIME_DIR", root.join("xdg"))
            .args(args);
        command
    }
}

#[test]
fn podman_logs_in_pushes_pulls_and_is_refused_in_both_modes() {
    let podman = Podman::new();
    let tar = rootfs_tar(podman.dir.path());
    for mode in ["token-server", "gateway"] {
        let site = Site::start(mode);
        let mine = site.at("alice/podman:1");
        let r = run(&mut podman.podman("alice", &["import", tar.to_str().expect("utf-8"), &mine]));
        assert!(r.ok, "{mode}: import: {}", r.text);
        let login = |user: &str, password: &str| {
            run_with_stdin(
                &mut podman.podman(
                    user,
                    &[
                        "login",
                        "--tls-verify=false",
                        "-u",
                        user,
                        "--password-stdin",
                        &site.host,
                    ],
                ),
                &format!("{password}\n"),
            )
        };
        assert!(
            !login("alice", "wrong").ok,
            "{mode}: a wrong password logs in"
        );
        let r = login("alice", "alice-pw");
        assert!(r.ok, "{mode}: login: {}", r.text);
        let r = run(&mut podman.podman("alice", &["push", "--tls-verify=false", &mine]));
        assert!(r.ok, "{mode}: push: {}", r.text);
        assert!(run(&mut podman.podman("alice", &["rmi", &mine])).ok);
        let r = run(&mut podman.podman("alice", &["pull", "--tls-verify=false", &mine]));
        assert!(r.ok, "{mode}: pull: {}", r.text);

        let r = login("bob", "bob-pw");
        assert!(r.ok, "{mode}: bob logs in: {}", r.text);
        let theirs = site.at("alice/from-bob:1");
        assert!(run(&mut podman.podman("bob", &["tag", &mine, &theirs])).ok);
        let r = run(&mut podman.podman("bob", &["push", "--tls-verify=false", &theirs]));
        assert!(!r.ok, "{mode}: bob pushed into alice/");
        // containers/image reads the refusal from the body of a HEAD, which has none.
        assert!(r.text.contains("401"), "{mode}: {}", r.text);
        assert!(run(&mut podman.podman("bob", &["rmi", &mine, &theirs])).ok);
        let r = run(&mut podman.podman("bob", &["pull", "--tls-verify=false", &mine]));
        assert!(!r.ok, "{mode}: bob pulled alice's image");
        let expected = match site.mode {
            "gateway" => REASON,
            _ => "unauthorized",
        };
        assert!(r.text.contains(expected), "{mode}: {}", r.text);
        for user in ["alice", "bob"] {
            let r = run(&mut podman.podman(user, &["logout", &site.host]));
            assert!(r.ok, "{mode}: logout: {}", r.text);
        }
    }
}
