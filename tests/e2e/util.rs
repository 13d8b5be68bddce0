//! The harness: starts Debian's `docker-registry` (the registry:2 code) and `portcullis serve`
//! on loopback ports chosen at run time, builds a small OCI image, and runs skopeo.

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SERVICE: &str = "registry.test";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The `portcullis` binary `cargo test --workspace` built beside this test.
fn portcullis_bin() -> PathBuf {
    let bin = target_dir().join("debug/portcullis");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p portcullis` first (and after every change: this crate does not rebuild it)",
        bin.display()
    );
    bin
}

pub fn wasm(crate_name: &str) -> PathBuf {
    let path = target_dir().join(format!("wasm32-unknown-unknown/release/{crate_name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo policies` first",
        path.display()
    );
    path
}

/// Fails (rather than skips) when a tool the tests need is not installed.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed: run scripts/test.sh, or apt-get install docker-registry skopeo"
    );
}

/// A loopback port free right now, which no other test in this run is handed and no outgoing
/// connection takes in the meantime.
///
/// Asking the kernel for port 0 would hand out an ephemeral port, and between dropping that
/// listener and the server binding it, any outgoing connection (skopeo's, the gateway's to
/// its registry) may take it: CI once failed on "Address already in use" that way. So ports
/// come from outside the kernel's ephemeral range, each handed out once per run.
pub fn free_port() -> u16 {
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = outside_ephemeral_range();
    let span = u32::from(high - low);
    // Test processes running side by side (other checkouts, bench scripts) start apart.
    let start = std::process::id();
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = low + u16::try_from(start.wrapping_add(n) % span).expect("below span");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}")
}

/// Ports the kernel never picks for outgoing connections: below its ephemeral range when
/// there is room there, else above it.
fn outside_ephemeral_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse::<u16>().ok())
        .collect::<Vec<_>>();
    match range[..] {
        [ephemeral_low, _] if ephemeral_low >= 11_000 => (10_000, ephemeral_low),
        [_, ephemeral_high] if ephemeral_high <= 64_000 => (ephemeral_high + 1, u16::MAX),
        _ => (20_000, 32_768),
    }
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    wait_for(what, child, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A process killed when dropped.
pub struct Running {
    child: Child,
    pub port: u16,
}

impl Running {
    /// Sends a signal (`TERM`, `HUP`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `limit` for the process to exit; its status, or None if it is still up.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `portcullis` with arguments, returning its output.
pub fn portcullis(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(portcullis_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("portcullis runs");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("portcullis finishes")
}

/// A setup in a temp dir: keys, htpasswd, groups, the acl policy and a config, with the
/// ports of the gateway and of the registry chosen up front.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub gateway_port: u16,
    /// `[server] admin_listen`: `/metrics` and `/status`.
    pub admin_port: u16,
    pub registry_port: u16,
}

impl Setup {
    /// Token-server mode: the registry will run with `auth.token`.
    pub fn new(acl_settings: &str, users: &[(&str, &str)]) -> Setup {
        Setup::build(acl_settings, users, "", |_| String::new())
    }

    /// Gateway mode: `[upstream]` points at the registry's port; `extra` is appended to the
    /// config (more policies).
    pub fn gateway(acl_settings: &str, users: &[(&str, &str)], extra: &str) -> Setup {
        Setup::gateway_with(acl_settings, users, "", extra)
    }

    /// Gateway mode with `server` added to the `[server]` section.
    pub fn gateway_with(
        acl_settings: &str,
        users: &[(&str, &str)],
        server: &str,
        extra: &str,
    ) -> Setup {
        Setup::build(acl_settings, users, server, |registry_port| {
            format!("\n[upstream]\nurl = \"http://127.0.0.1:{registry_port}\"\n{extra}")
        })
    }

    /// Gateway mode served over TLS with a certificate for 127.0.0.1 (`gateway.crt`, also
    /// the CA clients must trust).
    pub fn gateway_tls(acl_settings: &str, users: &[(&str, &str)]) -> Setup {
        let server = "tls_cert = \"gateway.crt\"\ntls_key = \"gateway.key\"\n";
        let setup = Setup::build(acl_settings, users, server, |registry_port| {
            format!("\n[upstream]\nurl = \"http://127.0.0.1:{registry_port}\"\n")
        });
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("a certificate");
        std::fs::write(setup.path("gateway.crt"), cert.cert.pem()).expect("cert");
        std::fs::write(setup.path("gateway.key"), cert.signing_key.serialize_pem()).expect("key");
        setup
    }

    /// Gateway mode with the registry serving https, its certificate (for 127.0.0.1) made
    /// here and trusted through `[upstream] ca`.
    pub fn gateway_https(acl_settings: &str, users: &[(&str, &str)]) -> Setup {
        let setup = Setup::build(acl_settings, users, "", |registry_port| {
            format!(
                "\n[upstream]\nurl = \"https://127.0.0.1:{registry_port}\"\nca = \"registry.crt\"\n"
            )
        });
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("a certificate");
        std::fs::write(setup.path("registry.crt"), cert.cert.pem()).expect("cert");
        std::fs::write(setup.path("registry.key"), cert.signing_key.serialize_pem()).expect("key");
        setup
    }

    fn build(
        acl_settings: &str,
        users: &[(&str, &str)],
        server: &str,
        extra: impl FnOnce(u16) -> String,
    ) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let out = portcullis(
            &[
                "keygen",
                "--out",
                root.join("keys").to_str().expect("utf-8"),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let htpasswd = root.join("htpasswd");
        for (user, password) in users {
            let out = portcullis(
                &[
                    "passwd",
                    htpasswd.to_str().expect("utf-8"),
                    user,
                    "--cost",
                    "4",
                ],
                Some(&format!("{password}\n")),
            );
            assert!(
                out.status.success(),
                "passwd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(root.join("groups"), "ci: robot\nrelease: carol\n").expect("groups");
        std::fs::create_dir_all(root.join("policies")).expect("mkdir");
        for policy in ["acl", "protected_tags"] {
            std::fs::copy(wasm(policy), root.join(format!("policies/{policy}.wasm")))
                .expect("copy");
        }
        std::fs::write(root.join("acl.json"), acl_settings).expect("acl");
        let gateway_port = free_port();
        let admin_port = free_port();
        let registry_port = free_port();
        let mut config = format!(
            r#"
[server]
listen = "127.0.0.1:{gateway_port}"
admin_listen = "127.0.0.1:{admin_port}"
{server}
[token]
issuer = "portcullis"
service = "{SERVICE}"
key = "keys/token.key"
certificate = "keys/token.crt"

[identity]
htpasswd = "htpasswd"
groups = "groups"
anonymous = true

[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings_file = "acl.json"
"#
        );
        config.push_str(&extra(registry_port));
        std::fs::write(root.join("portcullis.toml"), config).expect("config");
        Setup {
            dir,
            gateway_port,
            admin_port,
            registry_port,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Removes a user from the htpasswd, atomically as an admin's tooling would.
    pub fn remove_user(&self, user: &str) {
        let htpasswd = self.path("htpasswd");
        let prefix = format!("{user}:");
        let kept: String = std::fs::read_to_string(&htpasswd)
            .expect("read the htpasswd")
            .lines()
            .filter(|l| !l.starts_with(&prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        let tmp = self.path("htpasswd.new");
        std::fs::write(&tmp, kept).expect("write");
        std::fs::rename(&tmp, &htpasswd).expect("rename");
    }

    /// Adds `block` (e.g. an `[identity.ldap]` table) to the config before the first
    /// `[[policy]]`: TOML tables go in order, so after it the block would land in that policy.
    pub fn insert_config(&self, block: &str) {
        let path = self.path("portcullis.toml");
        let text = std::fs::read_to_string(&path).expect("config");
        let (before, after) = text
            .split_once("\n[[policy]]")
            .expect("the config has a [[policy]]");
        std::fs::write(&path, format!("{before}\n{block}\n[[policy]]{after}")).expect("write");
    }

    /// A second replica's config: the same files, other ports. Its path and port.
    pub fn replica_config(&self) -> (PathBuf, u16) {
        let port = free_port();
        let config = self.path("portcullis-b.toml");
        let text = std::fs::read_to_string(self.path("portcullis.toml")).expect("config");
        let text = text
            .replace(
                &format!("listen = \"127.0.0.1:{}\"", self.gateway_port),
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace(
                &format!("admin_listen = \"127.0.0.1:{}\"", self.admin_port),
                &format!("admin_listen = \"127.0.0.1:{}\"", free_port()),
            );
        std::fs::write(&config, text).expect("config b");
        (config, port)
    }

    /// Starts `portcullis serve` and waits for its "listening" line.
    pub fn start_gateway(&self) -> Running {
        serve(&self.path("portcullis.toml"), self.gateway_port)
    }

    /// Starts `portcullis serve` logging at debug level to `log` (stderr).
    pub fn start_gateway_logged(&self, log: &Path) -> Running {
        let stderr = std::fs::File::create(log).expect("gateway log");
        serve_with(
            &self.path("portcullis.toml"),
            self.gateway_port,
            "debug",
            stderr.into(),
        )
    }

    /// Starts docker-registry with `auth.token` pointing at the gateway, trusting `bundle`.
    pub fn start_registry(&self, bundle: &Path) -> Running {
        self.run_registry(&format!(
            "auth:
  token:
    realm: http://127.0.0.1:{gateway}/token
    service: {SERVICE}
    issuer: portcullis
    rootcertbundle: {bundle}
",
            gateway = self.gateway_port,
            bundle = bundle.display(),
        ))
    }

    /// Starts docker-registry with no auth at all, reachable (in a real deployment) only
    /// through the gateway; over https when the setup made a certificate for it.
    pub fn start_plain_registry(&self) -> Running {
        self.run_registry("")
    }

    fn run_registry(&self, auth: &str) -> Running {
        let port = self.registry_port;
        let tls = if self.path("registry.crt").exists() {
            format!(
                ", tls: {{certificate: {}, key: {}}}",
                self.path("registry.crt").display(),
                self.path("registry.key").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1
log: {{level: warn, accesslog: {{disabled: true}}}}
storage: {{filesystem: {{rootdirectory: {data}}}, delete: {{enabled: true}}}}
http: {{addr: 127.0.0.1:{port}, secret: e2e-secret{tls}}}
{auth}",
            data = self.path("data").display(),
        );
        let file = self.path("registry.yml");
        std::fs::write(&file, config).expect("registry config");
        registry(&file, port, &[], &self.path("registry.log"))
    }
}

/// A started gateway and registry in one of the two modes, with an image to push.
pub struct Site {
    _gateway: Running,
    _registry: Running,
    pub setup: Setup,
    /// Where clients go: the registry in token-server mode, the gateway in gateway mode.
    pub port: u16,
    /// An OCI layout holding one small image, tagged `latest`.
    pub image: PathBuf,
}

impl Site {
    /// Starts `setup`'s gateway and a registry behind it (gateway mode when `setup` was
    /// made by `Setup::gateway*`), and builds an image carrying `payload`.
    pub fn start(setup: Setup, gateway_mode: bool, payload: &[u8]) -> Site {
        require("docker-registry");
        require("skopeo");
        let gateway = setup.start_gateway();
        let (registry, port) = if gateway_mode {
            (setup.start_plain_registry(), setup.gateway_port)
        } else {
            let bundle = setup.path("keys/token.crt");
            (setup.start_registry(&bundle), setup.registry_port)
        };
        let image = setup.path("image");
        oci_image(&image, payload);
        Site {
            _gateway: gateway,
            _registry: registry,
            setup,
            port,
            image,
        }
    }

    /// Pushes the image as `127.0.0.1:<port>/<reference>` with skopeo: (success, stderr).
    pub fn push(&self, creds: &str, reference: &str) -> (bool, String) {
        push(
            self.setup.dir.path(),
            &self.image,
            creds,
            self.port,
            reference,
        )
    }

    /// A Basic-authenticated GET to the gateway: status and body.
    pub fn get(&self, user: &str, password: &str, path: &str) -> (u16, String) {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            basic(user, password)
        );
        let (status, _, body) = http(self.setup.gateway_port, &head, b"");
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Starts `portcullis serve --config <config>` (which must listen on `port`) and waits for
/// its "listening" line.
pub fn serve(config: &Path, port: u16) -> Running {
    serve_with(config, port, "warn", Stdio::inherit())
}

fn serve_with(config: &Path, port: u16, level: &str, stderr: Stdio) -> Running {
    let mut child = Command::new(portcullis_bin())
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", level)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("portcullis serve runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    assert!(
        line.starts_with("portcullis listening on"),
        "portcullis serve did not start (its stderr says why): {line:?}"
    );
    wait_for_port(port, "portcullis", &mut child);
    Running { child, port }
}

/// Starts `docker-registry serve <config>` with `REGISTRY_*` overrides in `env`, listening
/// on `port`.
pub fn registry(config: &Path, port: u16, env: &[(&str, String)], log: &Path) -> Running {
    let mut command = Command::new("docker-registry");
    // The registry takes every REGISTRY_* variable for configuration, podman's
    // REGISTRY_AUTH_FILE included: only ours reach it.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .arg("serve")
        .arg(config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("registry log"))
        .spawn()
        .expect("docker-registry runs");
    wait_for_port(port, "docker-registry", &mut child);
    Running { child, port }
}

/// The directory holding the `portcullis` binary, for scripts that call it by name.
pub fn bin_dir() -> PathBuf {
    target_dir().join("debug")
}

/// Writes an OCI layout holding one small image (tag `latest`) whose layer carries
/// `payload`; returns the layer's digest.
pub fn oci_image(dir: &Path, payload: &[u8]) -> String {
    let image = OciImage::write(dir, payload, serde_json::json!({}));
    image.tag(dir, &image.manifest);
    image.layer
}

/// The blobs of an image written into an OCI layout.
pub struct OciImage {
    /// The layer's digest.
    pub layer: String,
    /// The manifest's descriptor (digest, size, media type).
    pub manifest: serde_json::Value,
}

impl OciImage {
    /// Writes an image's blobs into the layout `dir`: a layer carrying `payload`, a config
    /// (amd64/linux, with `extra` merged in: `created`, `config.Labels`, a platform), and
    /// its manifest. Nothing is tagged yet.
    pub fn write(dir: &Path, payload: &[u8], extra: serde_json::Value) -> OciImage {
        let layer = tar_with_one_file("payload.bin", payload);
        let (layer_digest, layer_size) = oci_blob(dir, &layer);
        let mut config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        });
        if let (Some(config), serde_json::Value::Object(extra)) = (config.as_object_mut(), extra) {
            config.extend(extra);
        }
        let (config_digest, config_size) = oci_blob(dir, config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        });
        let (manifest_digest, manifest_size) = oci_blob(dir, manifest.to_string().as_bytes());
        OciImage {
            layer: layer_digest,
            manifest: serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest_size,
            }),
        }
    }

    /// Makes `descriptor` the layout's `latest`.
    pub fn tag(&self, dir: &Path, descriptor: &serde_json::Value) {
        let mut descriptor = descriptor.clone();
        descriptor["annotations"] =
            serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [descriptor]});
        std::fs::write(dir.join("index.json"), index.to_string()).expect("index");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("layout");
    }
}

/// Writes a blob into the OCI layout `dir`: its digest and size.
pub fn oci_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = hex::encode(Sha256::digest(bytes));
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    std::fs::write(blobs.join(&digest), bytes).expect("blob");
    (format!("sha256:{digest}"), bytes.len())
}

/// A ustar archive holding one regular file.
fn tar_with_one_file(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let mut field =
        |at: usize, text: String| header[at..at + text.len()].copy_from_slice(text.as_bytes());
    field(100, "0000644\0".into());
    field(108, "0000000\0".into());
    field(116, "0000000\0".into());
    field(124, format!("{:011o}\0", contents.len()));
    field(136, "00000000000\0".into());
    field(156, "0".into());
    field(257, "ustar\0".into());
    field(263, "00".into());
    // The checksum is computed with its own field read as spaces.
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(contents);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// Runs skopeo with a private auth file; returns (success, stderr).
pub fn skopeo(home: &Path, args: &[&str]) -> (bool, String) {
    let out = skopeo_run(home, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs skopeo like [`skopeo`]; (success, standard output).
pub fn skopeo_stdout(home: &Path, args: &[&str]) -> (bool, Vec<u8>) {
    let out = skopeo_run(home, args);
    (out.status.success(), out.stdout)
}

fn skopeo_run(home: &Path, args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .env("HOME", home)
        .output()
        .expect("skopeo runs")
}

/// Pushes the OCI layout `image` (tag `latest`) to `127.0.0.1:<port>/<reference>` with skopeo
/// over plain HTTP; returns (success, stderr).
pub fn push(home: &Path, image: &Path, creds: &str, port: u16, reference: &str) -> (bool, String) {
    let src = format!("oci:{}:latest", image.display());
    let dest = format!("docker://127.0.0.1:{port}/{reference}");
    skopeo(
        home,
        &[
            "copy",
            "--retry-times",
            "0",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            &src,
            &dest,
        ],
    )
}

/// A minimal HTTP/1.1 request over loopback: (status, headers, body).
pub fn http(port: u16, request_head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(request_head.as_bytes())
        .expect("write head");
    stream.write_all(body).expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = &response[split + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        head,
        if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
    )
}

/// The status of a GET of `path`, or None when nothing answers on the port (yet).
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Decodes a chunked body (no trailers).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// The value of a response header, case-insensitively.
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

pub fn basic(user: &str, password: &str) -> String {
    data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes())
}

/// `GET /token?{query}` at `port`, with Basic `user:password` credentials when given: the
/// status and the JSON answer (Null when the body is not JSON).
pub fn token(port: u16, query: &str, creds: Option<&str>) -> (u16, serde_json::Value) {
    let auth = creds
        .map(|c| {
            let (user, password) = c.split_once(':').expect("user:password");
            format!("Authorization: Basic {}\r\n", basic(user, password))
        })
        .unwrap_or_default();
    let head = format!("GET /token?{query} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    let (status, _, body) = http(port, &head, b"");
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// `POST /token` at `port` with the url-encoded `form`: the status and the JSON answer
/// (Null when the body is not JSON).
pub fn post_token(port: u16, form: &str) -> (u16, serde_json::Value) {
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        form.len()
    );
    let (status, _, body) = http(port, &head, form.as_bytes());
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// One part of a JWT (0: the header, 1: the claims), decoded.
pub fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("a JWT");
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(part.as_bytes())
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

/// A JWT's claims.
pub fn jwt_payload(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

/// Waits for `check`, up to 30 s.
pub fn wait_for(what: &str, child: &mut Child, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon of ours, stopped when dropped: asked with SIGTERM (dockerd then stops its
/// containerd and unmounts what it mounted), killed if it takes more than 10 s.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dockerd as root, in a temp dir of its own: its data and exec roots, socket and pid file;
/// no iptables, no bridge (the registry is on loopback, which docker treats as insecure, so
/// plain http works), overlay2.
pub struct Dockerd {
    _daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        require("dockerd");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let log = std::fs::File::create(root.join("dockerd.log")).expect("log");
        let mut child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--bridge=none",
                "--storage-driver=overlay2",
            ])
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", root.join("docker.sock").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd runs");
        let host = format!("unix://{}", root.join("docker.sock").display());
        // Ready once the API answers, a moment after the socket appears.
        wait_for("dockerd", &mut child, || {
            Command::new("docker")
                .args(["-H", &host, "version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        Dockerd {
            _daemon: Daemon(child),
            dir,
        }
    }

    pub fn socket(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }
}

/// What a client did: success, and what it printed.
pub struct Ran {
    pub ok: bool,
    pub text: String,
}

fn ran(output: Output) -> Ran {
    Ran {
        ok: output.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Runs a client command to its end, with nothing on standard input.
pub fn run(command: &mut Command) -> Ran {
    ran(command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}")))
}

/// Runs a client command to its end, `input` on its standard input.
pub fn run_with_stdin(command: &mut Command, input: &str) -> Ran {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    ran(child.wait_with_output().expect("exits"))
}

/// A tar holding one file: the root file system of the image docker and podman import.
pub fn rootfs_tar(dir: &Path) -> PathBuf {
    let tar = dir.join("rootfs.tar");
    std::fs::write(
        &tar,
        tar_with_one_file("hello.txt", b"hello through portcullis\n"),
    )
    .expect("write the tar");
    tar
}

/// One docker CLI, used by one user: its own config directory (where `docker login`
/// stores what it keeps).
pub struct DockerUser<'a> {
    pub cli: &'a Path,
    pub dockerd: &'a Dockerd,
    pub config: PathBuf,
}

impl DockerUser<'_> {
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.cli);
        command
            .env("DOCKER_HOST", self.dockerd.socket())
            .env("DOCKER_CONFIG", &self.config)
            .args(args);
        command
    }

    pub fn login(&self, host: &str, user: &str, password: &str) -> Ran {
        run_with_stdin(
            &mut self.docker(&["login", host, "-u", user, "--password-stdin"]),
            &format!("{password}\n"),
        )
    }

    pub fn config_json(&self) -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.config.join("config.json")).unwrap_or_default(),
        )
        .unwrap_or(serde_json::Value::Null)
    }
}

/// Fills a registry that has no auth of its own (gateway mode's, reached directly) with
/// `names`, each holding one small image tagged `1`: the blobs are uploaded into the first
/// and mounted into the others, so thousands of repositories take seconds.
pub fn populate(registry_port: u16, names: &[String]) {
    let Some(first) = names.first() else { return };
    let request = |method: &str, path: &str, content_type: &str, body: &[u8]| {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        http(registry_port, &head, body)
    };
    let layer = tar_with_one_file("payload.bin", b"a populated repository");
    let layer_digest = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string();
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config.as_bytes())));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    for (digest, bytes) in [
        (&layer_digest, &layer[..]),
        (&config_digest, config.as_bytes()),
    ] {
        let (status, head, _) = request(
            "POST",
            &format!("/v2/{first}/blobs/uploads/"),
            "text/plain",
            b"",
        );
        assert_eq!(status, 202, "{head}");
        let location = header(&head, "location").expect("an upload location");
        let path = location
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
            .unwrap_or(location);
        let separator = if path.contains('?') { '&' } else { '?' };
        let (status, head, _) = request(
            "PUT",
            &format!("{path}{separator}digest={digest}"),
            "application/octet-stream",
            bytes,
        );
        assert_eq!(status, 201, "{head}");
    }
    for name in names {
        if name != first {
            for digest in [&layer_digest, &config_digest] {
                let path = format!("/v2/{name}/blobs/uploads/?mount={digest}&from={first}");
                let (status, head, _) = request("POST", &path, "text/plain", b"");
                assert_eq!(status, 201, "{name}: {head}");
            }
        }
        let (status, head, _) = request(
            "PUT",
            &format!("/v2/{name}/manifests/1"),
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
        );
        assert_eq!(status, 201, "{name}: {head}");
    }
}

/// A cosign key pair in `dir`: `NAME.private` (ECDSA P-256 in PKCS#8, sealed as cosign and
/// skopeo read it: NaCl secretbox under scrypt(passphrase, N=32768, r=8, p=1), a JSON
/// envelope in an `ENCRYPTED SIGSTORE PRIVATE KEY` PEM block), `NAME.pub` (PKIX PEM) and
/// `NAME.pass` (the passphrase, as `--sign-passphrase-file` reads it).
pub fn cosign_key(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use crypto_secretbox::aead::{Aead, KeyInit};
    let random = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &random).expect("a key");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("parsed");
    let public: PublicKeyX509Der = pair.public_key().as_der().expect("SPKI");
    let passphrase = format!("{name}-passphrase");
    let (mut salt, mut nonce) = ([0u8; 32], [0u8; 24]);
    random.fill(&mut salt).expect("salt");
    random.fill(&mut nonce).expect("nonce");
    let mut key = [0u8; 32];
    let params = scrypt::Params::new(15, 8, 1, 32).expect("params");
    scrypt::scrypt(passphrase.as_bytes(), &salt, &params, &mut key).expect("scrypt");
    // NaCl's layout, as Go's secretbox.Seal writes it: the tag, then the ciphertext.
    let sealed = crypto_secretbox::XSalsa20Poly1305::new(&key.into())
        .encrypt(&nonce.into(), pkcs8.as_ref())
        .expect("sealed");
    let b64 = |bytes: &[u8]| data_encoding::BASE64.encode(bytes);
    let envelope = serde_json::json!({
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64(&salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(&nonce)},
        "ciphertext": b64(&sealed),
    });
    let pem = |label: &str, der: &[u8]| {
        let body = b64(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let private = dir.join(format!("{name}.private"));
    let public_path = dir.join(format!("{name}.pub"));
    let pass = dir.join(format!("{name}.pass"));
    std::fs::write(
        &private,
        pem(
            "ENCRYPTED SIGSTORE PRIVATE KEY",
            envelope.to_string().as_bytes(),
        ),
    )
    .expect("private key");
    std::fs::write(&public_path, pem("PUBLIC KEY", public.as_ref())).expect("public key");
    std::fs::write(&pass, format!("{passphrase}\n")).expect("passphrase");
    (private, public_path, pass)
}

/// Runs Debian 13's skopeo with the trust policy `dir/<policy>` and the signature storage
/// of `dir/registries.d`, its home in `dir`: (success, stderr).
pub fn skopeo_signing(dir: &Path, policy: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(skopeo_sigstore())
        .arg("--policy")
        .arg(dir.join(policy))
        .arg("--registries.d")
        .arg(dir.join("registries.d"))
        .args(args)
        .env("HOME", dir)
        .output()
        .expect("skopeo runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Debian 13's skopeo, which signs and verifies cosign's signatures (Debian 12's cannot),
/// fetched into the target directory by scripts/skopeo-sigstore.sh once.
pub fn skopeo_sigstore() -> PathBuf {
    static FETCHED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FETCHED.get_or_init(fetch_skopeo_sigstore).clone()
}

fn fetch_skopeo_sigstore() -> PathBuf {
    let dest = target_dir().join("skopeo-sigstore");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/skopeo-sigstore.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dest)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/skopeo-sigstore.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dest.join("skopeo")
}
