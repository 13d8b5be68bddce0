//! The README's main command, run for real: `docker-compose up` (Debian's docker-compose
//! 1.29 on Debian's engine 20.10) of compose.yaml and of compose.gateway.yaml, then docker
//! logs in, pushes, pulls and is refused through the published ports, and `down`.
//!
//! No image registry is reachable here, so the images the files name are built first, each
//! an honest stand-in labelled `portcullis.e2e.stand-in`: `debian:bookworm-slim` from
//! `debootstrap --variant=minbase`, `registry:2` from Debian's docker-registry laid out as the
//! real image is (config at /etc/docker/registry/config.yml, data in /var/lib/registry, port
//! 5000), and `rust:1.95-bookworm` as a builder whose `cargo` and `rustup` do nothing, holding
//! what this suite already built where the Dockerfile's build stage expects it. The Portcullis
//! image is built by the project's own Dockerfile, unchanged.

use crate::console::{request, sign_in_by_hand};
use crate::util::{
    DockerUser, Dockerd, Ran, bin_dir, require, rootfs_tar, run, run_with_stdin, wasm,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const STAND_IN: &str = "portcullis.e2e.stand-in";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `docker build` of `context` as `tag`, with the host's network (dockerd runs without a
/// bridge here) and Debian's CLI (its classic builder, as docker-compose 1.29 uses).
fn build(dockerd: &Dockerd, context: &Path, tag: &str) {
    let r = run(Command::new("/usr/bin/docker")
        .env("DOCKER_HOST", dockerd.socket())
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--network", "host", "-t", tag])
        .arg(context));
    assert!(r.ok, "building {tag}: {}", r.text);
}

/// The three stand-ins the compose files and the Dockerfile need.
fn stand_ins(dockerd: &Dockerd, work: &Path) {
    require("debootstrap");
    let rootfs = work.join("debian");
    let r = run(Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg("http://deb.debian.org/debian"));
    assert!(r.ok, "debootstrap: {}", r.text);
    let r = run(Command::new("sh").arg("-c").arg(format!(
        "tar -C {} -c . | DOCKER_HOST={} /usr/bin/docker import --change 'LABEL {STAND_IN}=debootstrap-minbase' --change 'CMD [\"bash\"]' - debian:bookworm-slim",
        rootfs.display(),
        dockerd.socket()
    )));
    assert!(r.ok, "docker import: {}", r.text);

    let registry = work.join("registry-image");
    std::fs::create_dir_all(&registry).expect("mkdir");
    std::fs::copy(which("docker-registry"), registry.join("registry")).expect("copy");
    std::fs::write(
        registry.join("config.yml"),
        "version: 0.1\nstorage: {filesystem: {rootdirectory: /var/lib/registry}}\nhttp: {addr: :5000}\n",
    )
    .expect("config");
    std::fs::write(
        registry.join("Dockerfile"),
        format!(
            "FROM debian:bookworm-slim\nLABEL {STAND_IN}=\"Debian's docker-registry (distribution 2.8)\"\n\
             COPY registry /bin/registry\nCOPY config.yml /etc/docker/registry/config.yml\n\
             VOLUME [\"/var/lib/registry\"]\nEXPOSE 5000\nENTRYPOINT [\"/bin/registry\"]\n\
             CMD [\"serve\", \"/etc/docker/registry/config.yml\"]\n"
        ),
    )
    .expect("Dockerfile");
    build(dockerd, &registry, "registry:2");

    let builder = work.join("builder-image");
    let release = builder.join("target/release");
    let policies = builder.join("target/wasm32-unknown-unknown/release");
    std::fs::create_dir_all(&release).expect("mkdir");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::fs::create_dir_all(builder.join("bin")).expect("mkdir");
    std::fs::copy(bin_dir().join("portcullis"), release.join("portcullis")).expect("copy");
    for policy in [
        "acl",
        "namespace_owner",
        "read_only",
        "protected_tags",
        "immutable_tags",
        "signed_images",
    ] {
        std::fs::copy(wasm(policy), policies.join(format!("{policy}.wasm"))).expect("copy");
    }
    for tool in ["cargo", "rustup"] {
        let script = builder.join("bin").join(tool);
        std::fs::write(
            &script,
            "#!/bin/sh\n# stand-in: the test suite built it already\nexit 0\n",
        )
        .expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    std::fs::write(
        builder.join("Dockerfile"),
        format!(
            "FROM debian:bookworm-slim\nLABEL {STAND_IN}=\"rust:1.95-bookworm whose cargo hands over the test suite's build\"\n\
             COPY bin/ /usr/local/bin/\nCOPY target/ /src/target/\n"
        ),
    )
    .expect("Dockerfile");
    build(dockerd, &builder, "rust:1.95-bookworm");
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("sh runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// One compose file brought up as its own project.
struct Project<'a> {
    dockerd: &'a Dockerd,
    file: &'static str,
    name: &'static str,
    override_file: PathBuf,
}

impl Project<'_> {
    fn compose(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .env("DOCKER_HOST", self.dockerd.socket())
            .current_dir(repo())
            .args(["-p", self.name, "-f", self.file, "-f"])
            .arg(&self.override_file)
            .args(args);
        command
    }

    fn logs(&self, service: &str) -> String {
        run(&mut self.compose(&["logs", "--no-color", service])).text
    }
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        let _ = run(&mut self.compose(&["down", "-v", "--remove-orphans"]));
    }
}

/// Polls `http://127.0.0.1:<port>/v2/` until something answers.
fn wait_http(port: u16) {
    let started = Instant::now();
    while crate::util::http_status(port, "/v2/").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing answers on {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn docker_compose_up_serves_both_files() {
    require("docker-compose");
    require("/usr/bin/docker");
    let dockerd = Dockerd::start();
    let work = tempfile::tempdir().expect("tempdir");
    stand_ins(&dockerd, work.path());
    // Test-only: dockerd has no bridge here, so the image build uses the host's network.
    let override_file = work.path().join("build-network.yaml");
    std::fs::write(
        &override_file,
        "services:\n  init:\n    build:\n      context: .\n      network: host\n",
    )
    .expect("override");
    let tar = rootfs_tar(work.path());
    for (file, name, service, mode) in [
        ("compose.yaml", "pc-token", "portcullis", "token-server"),
        ("compose.gateway.yaml", "pc-gateway", "gateway", "gateway"),
    ] {
        let project = Project {
            dockerd: &dockerd,
            file,
            name,
            override_file: override_file.clone(),
        };
        let r = run(&mut project.compose(&["up", "-d"]));
        assert!(r.ok, "{file}: up: {}", r.text);
        wait_http(5000);
        let init = project.logs("init");
        let password = init
            .lines()
            .find_map(|l| l.split("created user admin, password: ").nth(1))
            .unwrap_or_else(|| panic!("{file}: no admin password in\n{init}"))
            .trim()
            .to_string();
        assert!(
            !init.contains("rootcertbundle") || mode == "token-server",
            "{file}: init talks of the registry's bundle in gateway mode:\n{init}"
        );
        // Adding a user as the README says.
        let r = run_with_stdin(
            &mut project.compose(&[
                "run",
                "--rm",
                "-T",
                service,
                "passwd",
                "/var/lib/portcullis/auth/htpasswd",
                "bob",
            ]),
            "bob-pw\n",
        );
        assert!(r.ok, "{file}: passwd: {}", r.text);

        let cli = PathBuf::from("/usr/bin/docker");
        let user = |who: &str| DockerUser {
            cli: &cli,
            dockerd: &dockerd,
            config: work.path().join(format!("{name}-{who}")),
        };
        let (admin, bob) = (user("admin"), user("bob"));
        let image = "localhost:5000/apps/web:v1";
        let r = run(&mut admin.docker(&["import", tar.to_str().expect("utf-8"), image]));
        assert!(r.ok, "{file}: import: {}", r.text);
        let ok = |what: &str, r: Ran| assert!(r.ok, "{file}: {what}: {}", r.text);
        ok(
            "admin login",
            admin.login("localhost:5000", "admin", &password),
        );
        ok("push", run(&mut admin.docker(&["push", image])));
        ok("rmi", run(&mut admin.docker(&["rmi", image])));
        ok("pull", run(&mut admin.docker(&["pull", image])));
        ok("bob login", bob.login("localhost:5000", "bob", "bob-pw"));
        let r = run(&mut bob.docker(&["push", image]));
        assert!(!r.ok, "{file}: bob pushed to apps/");
        assert!(r.text.contains("denied"), "{file}: {}", r.text);
        // The console, as both configs turn it on: admin (in the admins group) sees the
        // pushed repository and the status page, bob sees neither.
        let console_port = if mode == "gateway" { 5000 } else { 5001 };
        for (who, secret, sees) in [("admin", password.as_str(), true), ("bob", "bob-pw", false)] {
            let (session, _) = sign_in_by_hand(console_port, who, secret);
            let (status, _, page) = request(
                console_port,
                "GET",
                "/ui/repositories",
                &[("Cookie", &session)],
                "",
            );
            assert_eq!(status, 200, "{file}: {who}'s repositories:\n{page}");
            assert_eq!(page.contains(">apps/web<"), sees, "{file}: {who}:\n{page}");
            assert_eq!(
                page.contains("/ui/admin/status"),
                sees,
                "{file}: {who}:\n{page}"
            );
        }
        if mode == "gateway" {
            // The decision log goes to the gateway's standard output, without secrets.
            let logs = project.logs(service);
            assert!(logs.contains("\"account\":\"bob\""), "{file}:\n{logs}");
            assert!(
                !logs.contains(&password) && !logs.contains("bob-pw"),
                "{file}"
            );
        }
        // Restarting keeps the state: no second admin, the same key.
        let r = run(&mut project.compose(&["restart"]));
        assert!(r.ok, "{file}: restart: {}", r.text);
        let r = run(&mut project.compose(&["run", "--rm", "init"]));
        assert!(
            r.ok && !r.text.contains("created user"),
            "{file}: {}",
            r.text
        );
        wait_http(5000);
        ok(
            "pull after a restart",
            run(&mut admin.docker(&["pull", image])),
        );
        drop(project);
    }
}
