//! The server in process, where no registry is needed: the realm clients are sent to, a
//! registry that is not there, and the operator's endpoints (/status, /readyz, /metrics)
//! and decision log. Forwarding itself is proven against the real registry in the
//! end-to-end suite.

use crate::served::{
    Gateway, Running, alice, eventually, get, replace_config, serve_with, write_tls_pair,
};
use std::sync::Arc;

fn start_with(server_extra: &str, extra: &str) -> Running {
    Gateway {
        server: server_extra,
        extra,
        ..Gateway::default()
    }
    .start()
}

fn challenge(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("www-authenticate: "))
        .expect("a challenge")
        .to_string()
}

#[test]
fn the_realm_follows_public_url_and_never_a_spoofed_host() {
    let fixed = serve_with("public_url = \"https://registry.example.com\"");
    let (status, head, _) = get(fixed.port, "/v2/", "Host: evil.example\r\n");
    assert_eq!(status, 401);
    assert_eq!(
        challenge(&head),
        "Bearer realm=\"https://registry.example.com/token\",service=\"registry.test\""
    );

    let open = serve_with("");
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
    let gateway = serve_with("");
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

#[test]
fn status_says_what_is_serving() {
    let gateway = serve_with("");
    let (status, head, body) = get(gateway.admin_port, "/status", "Host: x\r\n");
    assert_eq!(status, 200, "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["mode"], "gateway");
    assert_eq!(json["service"], "registry.test");
    assert_eq!(json["users"], 1);
    assert_eq!(json["policies"][0]["name"], "acl");
    assert!(
        json["policies"][0]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert_eq!(
        json["policies"][0]["last_reload_error"],
        serde_json::Value::Null
    );
    let kid = json["keys"]["current"].as_str().expect("a kid");
    assert_eq!(kid.len(), 59, "libtrust form: 12 groups of 4 and 11 colons");
    assert_eq!(json["keys"]["previous"], serde_json::json!([]));
    assert!(
        json["upstream"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:"))
    );
}

/// Issue 12, review item 5: `/status` and `/metrics` were served to anyone who reached the
/// registry API, with the upstream origin, module paths, key ids and reload errors.
#[test]
fn status_and_metrics_are_for_the_admin_listener_only() {
    let gateway = serve_with("");
    for path in ["/status", "/metrics"] {
        let (status, _, body) = get(gateway.port, path, "Host: x\r\n");
        assert_eq!(status, 404, "{path} on the client listener: {body}");
        assert!(!body.contains("127.0.0.1"), "{body}");
        assert_eq!(
            get(gateway.admin_port, path, "Host: x\r\n").0,
            200,
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz"] {
        let on_clients = get(gateway.port, path, "Host: x\r\n").0;
        assert_eq!(
            on_clients,
            get(gateway.admin_port, path, "Host: x\r\n").0,
            "{path}"
        );
        assert_ne!(on_clients, 404, "{path}: probes reach both listeners");
    }
    // The admin listener serves no registry, token or key.
    for path in ["/v2/", "/token", "/.well-known/jwks.json"] {
        assert_eq!(get(gateway.admin_port, path, &alice()).0, 404, "{path}");
    }
}

#[test]
fn readyz_needs_the_registry_in_gateway_mode() {
    let gateway = serve_with("");
    let (status, _, body) = get(gateway.port, "/readyz", "Host: x\r\n");
    assert_eq!(status, 503);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["ready"], false);
    assert!(
        json["upstream"]
            .as_str()
            .is_some_and(|u| u.contains("unavailable")),
        "{body}"
    );
    assert_eq!(
        get(gateway.port, "/healthz", "Host: x\r\n").0,
        200,
        "alive all the same"
    );
}

#[test]
fn metrics_count_requests_decisions_cache_hits_and_upstream_errors() {
    let gateway = serve_with("");
    for _ in 0..2 {
        assert_eq!(get(gateway.port, "/v2/a/b/tags/list", &alice()).0, 503);
    }
    assert_eq!(get(gateway.port, "/nowhere", "Host: x\r\n").0, 404);
    let (status, head, body) = get(gateway.admin_port, "/metrics", "Host: x\r\n");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    for line in [
        "portcullis_http_requests_total{route=\"registry\",status=\"503\"} 2",
        "portcullis_http_requests_total{route=\"unknown\",status=\"404\"} 1",
        "portcullis_http_request_duration_seconds_count{route=\"registry\"} 2",
        "portcullis_policy_decisions_total{policy=\"acl\",result=\"granted\"} 2",
        "portcullis_credential_cache_total{result=\"miss\"} 1",
        "portcullis_credential_cache_total{result=\"hit\"} 1",
        "portcullis_upstream_errors_total{kind=\"unavailable\"} 2",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
}

/// Polls `/metrics`, calling `between` before each look, until it holds `line` (5 s at most).
fn until_metric(port: u16, line: &str, mut between: impl FnMut()) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        between();
        let metrics = get(port, "/metrics", "Host: x\r\n").2;
        if metrics.contains(line) || std::time::Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_key_rotation_keeps_verified_logins_and_an_htpasswd_edit_drops_them() {
    let gateway = serve_with("");
    let dir = gateway.dir.path();
    let login = || {
        assert_eq!(
            get(gateway.port, "/token?service=registry.test", &alice()).0,
            200
        )
    };
    login();
    let fresh = dir.join("fresh-keys");
    portcullis::token::generate(&fresh, false).expect("keygen");
    for file in ["token.key", "token.crt"] {
        std::fs::rename(fresh.join(file), dir.join("keys").join(file)).expect("rotate");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while get(gateway.port, "/.well-known/jwks.json", "Host: x\r\n")
        .2
        .matches("\"kid\"")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the key never rotated"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    login();
    let metrics = get(gateway.admin_port, "/metrics", "Host: x\r\n").2;
    assert!(
        metrics.contains("portcullis_credential_cache_total{result=\"miss\"} 1"),
        "a new signing key sent alice back to bcrypt:\n{metrics}"
    );
    // The same password under a new hash: still a change of the htpasswd.
    let htpasswd = dir.join("htpasswd");
    let replacement = dir.join("htpasswd.new");
    let line = format!("alice:{}\n", bcrypt::hash("pw", 4).expect("hash"));
    std::fs::write(&replacement, line).expect("write");
    std::fs::rename(&replacement, &htpasswd).expect("replace");
    let metrics = until_metric(
        gateway.admin_port,
        "portcullis_credential_cache_total{result=\"miss\"} 2",
        login,
    );
    assert!(
        metrics.contains("portcullis_credential_cache_total{result=\"miss\"} 2"),
        "an htpasswd edit must drop verified logins:\n{metrics}"
    );
}

#[test]
fn the_decision_log_has_a_line_per_decision_and_no_secret() {
    let gateway = start_with("", "[log]\ndecisions = \"decisions.jsonl\"\n");
    let bearer_like = "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln";
    get(gateway.port, "/v2/a/b/tags/list", &alice());
    get(
        gateway.port,
        "/v2/a/b/tags/list",
        &format!("Host: x\r\nAuthorization: {bearer_like}\r\n"),
    );
    let path = gateway.dir.path().join("decisions.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.is_empty() || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one decision (the forged token never reached the policies)"
    );
    let line = &lines[0];
    assert_eq!(line["source"], "gateway");
    assert_eq!(line["account"], "alice");
    assert_eq!(line["scope"], "repository:a/b:pull");
    assert_eq!(line["operation"]["kind"], "tags");
    assert_eq!(line["granted"], serde_json::json!(["pull"]));
    assert_eq!(line["answers"][0]["policy"], "acl");
    assert!(
        !text.contains("pw") && !text.contains("eyJ"),
        "a secret leaked: {text}"
    );
}

/// Connects over TLS trusting `trusted` (DER); returns the ALPN protocol and the served
/// certificate.
async fn tls_connect(
    port: u16,
    trusted: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (
    Option<Vec<u8>>,
    Vec<u8>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(trusted.to_vec()))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let served = session.peer_certificates().expect("a certificate")[0].to_vec();
    (alpn, served, stream)
}

#[test]
fn tls_offers_http2_speaks_it_and_reloads_its_certificate() {
    let gateway = serve_with("tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"");
    let first = std::fs::read(gateway.dir.path().join("tls.crt")).expect("cert");
    use rustls::pki_types::pem::PemObject;
    let first_der = rustls::pki_types::CertificateDer::pem_slice_iter(&first)
        .next()
        .expect("a cert")
        .expect("pem")
        .to_vec();
    let port = gateway.port;
    gateway.runtime.block_on(async {
        use rustls::version::{TLS12, TLS13};
        let (alpn, served, stream) = tls_connect(port, &first_der, &[&TLS13]).await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(served, first_der);
        // An HTTP/2 request: the realm is built from `:authority`, with https.
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(connection);
        let request = hyper::Request::get(format!("https://127.0.0.1:{port}/v2/"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            format!("Bearer realm=\"https://127.0.0.1:{port}/token\",service=\"registry.test\"")
                .as_str()
        );
        // TLS 1.2 clients are served too.
        let (_, served, _) = tls_connect(port, &first_der, &[&TLS12]).await;
        assert_eq!(served, first_der);
    });

    // New files: the watcher reloads them, and the next handshake shows them.
    let second_der = write_tls_pair(gateway.dir.path(), "tls");
    let served_now = || {
        gateway.runtime.block_on(async {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls::pki_types::CertificateDer::from(second_der.clone()))
                .expect("root");
            // Trust only the new certificate: the handshake fails until it is served.
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .is_ok()
        })
    };
    assert!(eventually(served_now), "the new certificate is not served");
    // A broken file keeps the certificate serving.
    std::fs::write(gateway.dir.path().join("tls.key"), "not a key").expect("write");
    gateway.live.current().reload_files();
    gateway.runtime.block_on(async {
        let (_, served, _) = tls_connect(port, &second_der, &[&rustls::version::TLS13]).await;
        assert_eq!(served, second_der);
    });
}

#[test]
fn a_certificate_that_is_not_for_the_key_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tls_pair(dir.path(), "a");
    write_tls_pair(dir.path(), "b");
    let e =
        portcullis::tls::Certificate::load(&dir.path().join("a.crt"), &dir.path().join("b.key"))
            .expect_err("mismatch");
    assert!(e.contains("do not fit together"), "{e}");
    let e =
        portcullis::tls::Certificate::load(&dir.path().join("a.crt"), &dir.path().join("none.key"))
            .expect_err("missing");
    assert!(e.starts_with("[server] tls_key"), "{e}");
}

/// Polls `check` for up to 5 s.
fn status(port: u16) -> serde_json::Value {
    serde_json::from_str(&get(port, "/status", "Host: x\r\n").2).expect("json")
}

#[test]
fn an_edited_config_is_swapped_in_whole_and_a_broken_one_is_refused() {
    let gateway = serve_with("");
    let (port, admin) = (gateway.port, gateway.admin_port);
    let anonymous = || get(port, "/v2/public/x/tags/list", "Host: x\r\n").0;
    assert_eq!(anonymous(), 401, "anonymous access is off");
    let (status_code, _, body) = get(
        port,
        "/token?service=registry.test&scope=repository:a/b:pull",
        &alice(),
    );
    assert_eq!(status_code, 200);
    let token: serde_json::Value = serde_json::from_str(&body).expect("json");
    let bearer = format!(
        "Host: x\r\nAuthorization: Bearer {}\r\n",
        token["token"].as_str().expect("a token")
    );

    // Turn anonymous pulls on: a new App with new policy settings serves (503: allowed, and
    // the registry is not there).
    replace_config(gateway.dir.path(), |text| {
        text.replace(
            "htpasswd = \"htpasswd\"",
            "htpasswd = \"htpasswd\"\nanonymous = true",
        )
        .replace(
            "rules = [{ match = { account = \"alice\" }, actions = [\"*\"] }]",
            "rules = [{ match = { account = \"alice\" }, actions = [\"*\"] }, { match = { account = \"\" }, actions = [\"pull\"] }]",
        )
    });
    assert!(
        eventually(|| anonymous() == 503),
        "the edit did not take effect"
    );
    assert_eq!(
        get(port, "/v2/a/b/tags/list", &bearer).0,
        503,
        "a token issued before the edit still verifies: the key ring carried over"
    );
    assert_eq!(
        status(admin)["config_reload_error"],
        serde_json::Value::Null
    );

    // A broken edit: refused with the reason, the running config keeps serving.
    replace_config(gateway.dir.path(), |_| "[token\n".into());
    assert!(
        eventually(|| status(admin)["config_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("TOML parse error at line 1"))),
        "{}",
        status(admin)
    );
    assert_eq!(anonymous(), 503, "still the last good config");

    // One that parses but cannot load (a module that is not there) is refused too.
    let good = "[server]\nlisten = \"127.0.0.1:0\"\n[token]\nissuer = \"portcullis\"\nservice = \"registry.test\"\nkey = \"keys/token.key\"\ncertificate = \"keys/token.crt\"\n[[policy]]\nname = \"gone\"\nmodule = \"gone.wasm\"\n";
    replace_config(gateway.dir.path(), |_| good.into());
    assert!(
        eventually(|| status(admin)["config_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("gone.wasm"))),
        "{}",
        status(admin)
    );
    assert_eq!(anonymous(), 503, "still the last good config");
    let metrics = get(admin, "/metrics", "Host: x\r\n").2;
    assert!(
        metrics.contains("portcullis_reloads_total{files=\"config\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_reloads_total{files=\"config\",result=\"failed\"}"),
        "{metrics}"
    );
}

/// Issue 25: behind an Ingress that terminates TLS, the trusted proxy's `X-Forwarded-Proto`
/// and `X-Forwarded-Host` make the realm (clients must be sent to https), and each client
/// behind it is throttled on its own address; the same headers from anyone else change
/// nothing.
#[test]
fn behind_a_trusted_proxy_the_realm_is_https_and_clients_are_throttled_apart() {
    let behind = serve_with("trusted_proxies = [\"127.0.0.1/32\"]");
    let proxied = |client: &str, extra: &str| {
        format!(
            "Host: portcullis.default.svc:5000\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: registry.example.com\r\nX-Forwarded-For: {client}\r\n{extra}"
        )
    };
    let (status, head, _) = get(behind.port, "/v2/", &proxied("203.0.113.5", ""));
    assert_eq!(status, 401);
    assert_eq!(
        challenge(&head),
        "Bearer realm=\"https://registry.example.com/token\",service=\"registry.test\""
    );
    // Five wrong passwords from one client behind the proxy; another client is not held up.
    let basic = |password: &str| {
        format!(
            "Authorization: Basic {}\r\n",
            data_encoding::BASE64.encode(format!("alice:{password}").as_bytes())
        )
    };
    for _ in 0..5 {
        let (status, _, _) = get(
            behind.port,
            "/v2/",
            &proxied("203.0.113.5", &basic("wrong")),
        );
        assert_eq!(status, 401);
    }
    let (status, _, _) = get(
        behind.port,
        "/v2/",
        &proxied("203.0.113.5", &basic("wrong")),
    );
    assert_eq!(status, 429, "the guessing client waits");
    let (status, _, body) = get(behind.port, "/v2/", &proxied("203.0.113.6", &basic("pw")));
    // Logged in and forwarded (there is no registry in these tests: 503, not 401 or 429).
    assert_eq!(
        status, 503,
        "another client behind the same proxy logs in: {body}"
    );

    // Not from a trusted proxy: the headers are the client's own, and ignored.
    let open = serve_with("");
    let (_, head, _) = get(open.port, "/v2/", &proxied("203.0.113.5", ""));
    assert_eq!(
        challenge(&head),
        "Bearer realm=\"http://portcullis.default.svc:5000/token\",service=\"registry.test\""
    );
}

/// Issue 20, step 4: a decision log written under one policy set, replayed against another,
/// reports exactly the decisions that widen and narrow, as the candidate decides them
/// (`policy eval` of the same requests); replayed against the set that wrote it, nothing
/// changes. Widening fails the command unless allowed.
#[test]
fn a_replay_reports_what_a_candidate_widens_and_narrows() {
    let users = format!("bob:{}\n", bcrypt::hash("pw", 4).expect("hash"));
    let gateway = Gateway {
        users: &users,
        extra: "[log]\ndecisions = \"decisions.jsonl\"\n",
        ..Gateway::default()
    }
    .start();
    let scopes = "scope=repository:a/b:pull,push&scope=repository:secret/x:pull";
    for user in ["alice", "bob"] {
        let auth = format!(
            "Host: x\r\nAuthorization: Basic {}\r\n",
            data_encoding::BASE64.encode(format!("{user}:pw").as_bytes())
        );
        let (status, _, body) = get(
            gateway.port,
            &format!("/token?service=registry.test&{scopes}"),
            &auth,
        );
        assert_eq!(status, 200, "{body}");
    }
    let log = gateway.dir.path().join("decisions.jsonl");
    assert!(
        eventually(|| std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            == 4),
        "four decisions logged"
    );
    let written_by = gateway.dir.path().join("portcullis.toml");
    let original = std::fs::read_to_string(&written_by).expect("config");
    // The candidate: alice keeps out of secret/, bob may pull a/.
    let rules = r#"[{ match = { account = "alice", name = "secret/**" }, actions = [] }, { match = { account = "alice" }, actions = ["*"] }, { match = { account = "bob", name = "a/**" }, actions = ["pull"] }]"#;
    let candidate = gateway.dir.path().join("candidate.toml");
    let start = original.find("settings = ").expect("inline settings");
    let end = start + original[start..].find('\n').expect("a line");
    let candidate_text = format!(
        "{}settings = {{ rules = {rules} }}{}",
        &original[..start],
        &original[end..]
    );
    std::fs::write(&candidate, &candidate_text).expect("candidate");
    let replay = |config: &std::path::Path, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["policy", "replay", "--json", "--log"])
            .arg(&log)
            .arg("--config")
            .arg(config)
            .args(extra)
            .output()
            .expect("portcullis runs");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let (code, same) = replay(&written_by, &[]);
    assert_eq!(code, Some(0), "{same}");
    assert_eq!(
        (
            same["decisions"].clone(),
            same["unchanged"].clone(),
            same["widened"].clone()
        ),
        (4.into(), 4.into(), 0.into()),
        "the set that wrote the log changes nothing: {same}"
    );
    let (code, report) = replay(&candidate, &[]);
    assert_eq!(code, Some(1), "widening fails the command: {report}");
    assert_eq!(report["widened"], 1, "{report}");
    assert_eq!(report["narrowed"], 1, "{report}");
    assert_eq!(report["unchanged"], 2, "{report}");
    let changes = report["changes"].as_array().expect("changes");
    let find = |account: &str| {
        changes
            .iter()
            .find(|c| c["account"] == account)
            .unwrap_or_else(|| panic!("no change for {account}: {report}"))
    };
    assert_eq!(find("bob")["resource"], "repository:a/b");
    assert_eq!(find("alice")["resource"], "repository:secret/x");
    // What the candidate decides live, asked through the same host.
    let settings = gateway.dir.path().join("candidate-acl.json");
    std::fs::write(
        &settings,
        r#"{"rules": [{"match": {"account": "alice", "name": "secret/**"}, "actions": []}, {"match": {"account": "alice"}, "actions": ["*"]}, {"match": {"account": "bob", "name": "a/**"}, "actions": ["pull"]}]}"#,
    )
    .expect("settings");
    for (account, scope) in [
        ("bob", "repository:a/b:pull,push"),
        ("alice", "repository:secret/x:pull"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["policy", "eval"])
            .arg(crate::util::wasm("acl"))
            .arg("--settings")
            .arg(&settings)
            .args(["--account", account, "--scope", scope])
            .output()
            .expect("eval");
        let live: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        assert_eq!(
            find(account)["example"]["after"],
            live["granted"],
            "{account}"
        );
    }
    let (code, _) = replay(&candidate, &["--allow-widening"]);
    assert_eq!(code, Some(0));
}
