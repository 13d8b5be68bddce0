//! A gateway served in process on a loopback port, for the tests that talk HTTP to it, and
//! a raw HTTP/1.1 client that shows exactly what went over the wire.

use crate::util::wasm;
use portcullis::server::{Live, serve};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running gateway; it stops when dropped.
pub struct Running {
    pub port: u16,
    /// The admin listener: `/metrics` and `/status`.
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub live: Arc<Live>,
    pub runtime: tokio::runtime::Runtime,
}

/// What to add to the test config. `alice` (password `pw`) may do anything.
#[derive(Default)]
pub struct Gateway<'a> {
    /// Lines for `[server]`.
    pub server: &'a str,
    /// Where `[upstream]` points; by default a port with nothing listening.
    pub upstream_port: Option<u16>,
    /// Lines for `[upstream]` after its `url`.
    pub upstream: &'a str,
    /// Sections after the policy.
    pub extra: &'a str,
    /// More htpasswd lines besides alice's.
    pub users: &'a str,
}

pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A gateway with `server` lines added to `[server]` and nothing else changed.
pub fn serve_with(server: &str) -> Running {
    Gateway {
        server,
        ..Gateway::default()
    }
    .start()
}

impl Gateway<'_> {
    pub fn start(&self) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        portcullis::token::generate(&dir.path().join("keys"), false).expect("keygen");
        let htpasswd = format!(
            "alice:{}\n{}",
            bcrypt::hash("pw", 4).expect("hash"),
            self.users
        );
        std::fs::write(dir.path().join("htpasswd"), htpasswd).expect("htpasswd");
        write_tls_pair(dir.path(), "tls");
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
{server}
[token]
issuer = "portcullis"
service = "registry.test"
key = "keys/token.key"
certificate = "keys/token.crt"
[identity]
htpasswd = "htpasswd"
[upstream]
url = "http://127.0.0.1:{upstream_port}"
{upstream}
[[policy]]
name = "acl"
module = "{module}"
settings = {{ rules = [{{ match = {{ account = "alice" }}, actions = ["*"] }}] }}
{extra}
"#,
            server = self.server,
            upstream_port = self.upstream_port.unwrap_or_else(closed_port),
            upstream = self.upstream,
            module = wasm("acl").display(),
            extra = self.extra,
        );
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config).expect("config");
        let live = Live::start(&path).expect("the gateway starts");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let admin = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let admin_port = admin.local_addr().expect("addr").port();
        runtime.spawn(serve(
            live.clone(),
            listener,
            Some(admin),
            std::future::pending(),
        ));
        Running {
            port,
            admin_port,
            dir,
            live,
            runtime,
        }
    }
}

/// `Authorization` and `Host` lines for alice.
pub fn alice() -> String {
    format!(
        "Host: x\r\nAuthorization: Basic {}\r\n",
        data_encoding::BASE64.encode(b"alice:pw")
    )
}

/// Sends `request` (a whole HTTP/1.1 request) and reads until the server closes.
pub fn exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(request).expect("write");
    let mut response = Vec::new();
    // A reset after the answer still leaves the answer read.
    let _ = stream.read_to_end(&mut response);
    response
}

/// Reads until the server closes the connection (a reset counts as closed); what arrived
/// and how long it took. Panics when `patience` passes first: a test fails rather than hangs.
pub fn until_closed(stream: &mut TcpStream, patience: Duration) -> (Vec<u8>, Duration) {
    stream.set_read_timeout(Some(patience)).expect("timeout");
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buffer = [0; 65536];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the server kept the connection open for {patience:?}")
            }
            Err(_) => break,
        }
    }
    (got, started.elapsed())
}

/// The status of a raw response, 0 when there is none.
pub fn status(response: &[u8]) -> u16 {
    String::from_utf8_lossy(response)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A GET with `Connection: close`: status, head and body.
pub fn get(port: u16, path: &str, headers: &str) -> (u16, String, String) {
    let response = exchange(
        port,
        format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    );
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    (status(head.as_bytes()), head.to_string(), body.to_string())
}

/// A self-signed certificate for 127.0.0.1 as `<name>.crt` and `<name>.key`; returns its DER.
pub fn write_tls_pair(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, cert.cert.pem()).expect("cert");
    std::fs::rename(&tmp, dir.join(format!("{name}.crt"))).expect("rename");
    std::fs::write(&tmp, cert.signing_key.serialize_pem()).expect("key");
    std::fs::rename(&tmp, dir.join(format!("{name}.key"))).expect("rename");
    cert.cert.der().to_vec()
}

/// Whether `check` holds within 5 s.
pub fn eventually(check: impl Fn() -> bool) -> bool {
    (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        check()
    })
}

/// Replaces `name` in `dir` atomically (written beside, renamed over), as tooling does.
pub fn replace(dir: &std::path::Path, name: &str, text: &str) {
    let tmp = dir.join(format!("{name}.new"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// Edits the gateway's config file atomically.
pub fn replace_config(dir: &std::path::Path, edit: impl Fn(&str) -> String) {
    let text = edit(&std::fs::read_to_string(dir.join("portcullis.toml")).expect("config"));
    replace(dir, "portcullis.toml", &text);
}
