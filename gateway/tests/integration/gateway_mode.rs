//! Gateway mode in process, where no registry is needed: the realm clients are sent to, and
//! a registry that is not there. Forwarding itself is proven against the real registry in
//! the end-to-end suite.

use crate::util::wasm;
use portcullis::config::Config;
use portcullis::server::{App, serve};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// A running gateway whose upstream port has nothing listening.
struct Running {
    port: u16,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start(server_extra: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    portcullis::token::generate(&dir.path().join("keys"), false).expect("keygen");
    let htpasswd = format!("alice:{}\n", bcrypt::hash("pw", 4).expect("hash"));
    std::fs::write(dir.path().join("htpasswd"), htpasswd).expect("htpasswd");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server_extra}
[token]
issuer = "portcullis"
service = "registry.test"
key = "keys/token.key"
certificate = "keys/token.crt"
[identity]
htpasswd = "htpasswd"
[upstream]
url = "http://127.0.0.1:{upstream}"
[[policy]]
name = "acl"
module = "{module}"
settings = {{ rules = [{{ match = {{ account = "alice" }}, actions = ["*"] }}] }}
"#,
        upstream = closed_port(),
        module = wasm("acl").display(),
    );
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config).expect("config");
    let app = Arc::new(App::new(Config::load(&path).expect("config loads")).expect("app starts"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    runtime.spawn(serve(app, listener, std::future::pending()));
    Running {
        port,
        _dir: dir,
        _runtime: runtime,
    }
}

fn get(port: u16, path: &str, headers: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}

fn challenge(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("www-authenticate: "))
        .expect("a challenge")
        .to_string()
}

#[test]
fn the_realm_follows_public_url_and_never_a_spoofed_host() {
    let fixed = start("public_url = \"https://registry.example.com\"");
    let (status, head, _) = get(fixed.port, "/v2/", "Host: evil.example\r\n");
    assert_eq!(status, 401);
    assert_eq!(
        challenge(&head),
        "Bearer realm=\"https://registry.example.com/token\",service=\"registry.test\""
    );

    let open = start("");
    let (_, head, _) = get(open.port, "/v2/", "Host: gw.internal:5000\r\n");
    assert_eq!(
        challenge(&head),
        "Bearer realm=\"http://gw.internal:5000/token\",service=\"registry.test\""
    );
    // A Host that is no host name is not echoed into the realm.
    let (_, head, _) = get(open.port, "/v2/", "Host: a\"b/c\r\n");
    assert!(
        challenge(&head).starts_with("Bearer realm=\"http://127.0.0.1:0/token\""),
        "{head}"
    );
}

#[test]
fn a_registry_that_is_not_there_is_a_registry_style_503() {
    let gateway = start("");
    let basic = data_encoding::BASE64.encode(b"alice:pw");
    let (status, head, body) = get(
        gateway.port,
        "/v2/a/b/tags/list",
        &format!("Host: x\r\nAuthorization: Basic {basic}\r\n"),
    );
    assert_eq!(status, 503, "{head}");
    assert!(
        head.contains("docker-distribution-api-version: registry/2.0"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["errors"][0]["code"], "UNAVAILABLE");
    assert!(
        !body.contains("127.0.0.1"),
        "the registry's address stays in the log: {body}"
    );
}
