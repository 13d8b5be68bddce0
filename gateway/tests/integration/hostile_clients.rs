//! Clients that do not play by the rules, over real sockets: huge or endless request heads,
//! trickled bodies, floods of connections, garbage credentials and scopes, path tricks.
//! Each must get a clear refusal and leave the gateway serving everyone else.

use crate::served::{Gateway, alice, exchange, get, serve_with, status, until_closed};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A test fails rather than hangs when a protection is missing.
const PATIENCE: Duration = Duration::from_secs(15);

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

fn still_serving(port: u16) {
    let (status, _, _) = get(port, "/v2/", &alice());
    assert_eq!(status, 503, "alice reaches the (absent) registry as before");
}

#[test]
fn oversized_heads_and_too_many_headers_are_431() {
    let gateway = Gateway::default().start();
    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    assert_eq!(status(&exchange(gateway.port, huge.as_bytes())), 431);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(status(&exchange(gateway.port, many.as_bytes())), 431);
    still_serving(gateway.port);
}

#[test]
fn a_slow_head_and_an_idle_keep_alive_are_cut_off() {
    let gateway = serve_with("header_timeout_seconds = 1");
    // Slowloris: a header byte now and then, never the end of the head.
    let mut slow = connect(gateway.port);
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let started = Instant::now();
    let mut cut_off = false;
    while started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(b"X-A: b\r\n").is_err() {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a trickled head kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A kept-alive connection that goes quiet after its answer is closed too.
    let mut idle = connect(gateway.port);
    write!(idle, "GET /v2/ HTTP/1.1\r\n{}\r\n", alice()).expect("write");
    let (got, took) = until_closed(&mut idle, PATIENCE);
    assert_eq!(status(&got), 503);
    assert!(
        took < Duration::from_secs(8),
        "an idle connection lived {took:?}"
    );
    still_serving(gateway.port);
}

#[test]
fn a_token_form_that_never_arrives_is_408() {
    let gateway = serve_with("header_timeout_seconds = 1");
    let mut stream = connect(gateway.port);
    stream
        .write_all(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 100\r\n\r\ngrant_type=",
        )
        .expect("write");
    let (got, took) = until_closed(&mut stream, PATIENCE);
    assert_eq!(status(&got), 408, "{}", String::from_utf8_lossy(&got));
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn connections_past_the_limit_get_a_503_and_room_comes_back() {
    let gateway = serve_with("max_connections = 3");
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(gateway.port)).collect();
    // The three are admitted before the fourth arrives.
    std::thread::sleep(Duration::from_millis(200));
    let refused = String::from_utf8(exchange(
        gateway.port,
        format!("GET /v2/ HTTP/1.1\r\n{}\r\n", alice()).as_bytes(),
    ))
    .expect("utf-8");
    assert_eq!(status(refused.as_bytes()), 503, "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");

    held.pop();
    let started = Instant::now();
    // Until the gateway notices the closed connection, the polls are refused too.
    let mut refusals = 1;
    loop {
        let (status, _, body) = get(gateway.admin_port, "/metrics", "Host: x\r\n");
        if status == 200 {
            assert!(
                body.contains(&format!(
                    "portcullis_connections_refused_total {refusals}\n"
                )),
                "{body}"
            );
            break;
        }
        assert_eq!(status, 503);
        refusals += 1;
        assert!(
            started.elapsed() < PATIENCE,
            "no room after a connection closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn malformed_credentials_are_refused_and_nobody_else_is_hurt() {
    let gateway = Gateway::default().start();
    let not_utf8 = data_encoding::BASE64.encode(b"\xff\xfe:pw");
    let no_colon = data_encoding::BASE64.encode(b"alicepw");
    let long = "A".repeat(60_000);
    let values = [
        "Basic".to_string(),
        "Basic !!!not-base64!!!".to_string(),
        format!("Basic {not_utf8}"),
        format!("Basic {no_colon}"),
        format!("Basic {long}"),
        "Bearer ".to_string(),
        "Bearer a.b.c".to_string(),
        "Bearer ey.ey.ey".to_string(),
        "Digest username=alice".to_string(),
    ];
    for value in &values {
        for path in [
            "/token?scope=repository:a/b:pull",
            "/v2/a/b/tags/list",
            "/v2/",
        ] {
            let (status, head, body) = get(
                gateway.port,
                path,
                &format!("Host: x\r\nAuthorization: {value}\r\n"),
            );
            assert!(
                matches!(status, 400 | 401),
                "{value:.40?} on {path}: {status}\n{head}\n{body}"
            );
            assert!(body.contains("\"errors\""), "{body}");
        }
    }
    // Header values that are not even text.
    for value in [&b"Basic \xff\xfe"[..], b"\x7f\x01"] {
        let raw = exchange(
            gateway.port,
            &[
                &b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "[..],
                value,
                b"\r\n\r\n",
            ]
            .concat(),
        );
        assert!(matches!(status(&raw), 400 | 401), "{}", status(&raw));
    }
    still_serving(gateway.port);
}

#[test]
fn bad_scopes_are_400s_that_say_what_is_wrong() {
    let gateway = Gateway::default().start();
    let cases = [
        ("repository:../etc:pull", "name"),
        ("repository:Upper/case:pull", "name"),
        ("repository:a//b:pull", "name"),
        ("repository:a/b/:pull", "name"),
        ("repository:a/b", "scope"),
        (":a:pull", "scope"),
    ];
    for (scope, says) in cases {
        let (status, _, body) = get(gateway.port, &format!("/token?scope={scope}"), &alice());
        assert_eq!(status, 400, "{scope}: {body}");
        assert!(body.to_lowercase().contains(says), "{scope}: {body}");
    }
    let scopes = |n: usize| -> String {
        (0..n)
            .map(|i| format!("scope=repository:r{i}:pull&"))
            .collect()
    };
    let (status_101, _, body) = get(gateway.port, &format!("/token?{}", scopes(101)), &alice());
    assert_eq!(status_101, 400, "{body}");
    assert!(body.contains("more than 100 scopes"), "{body}");
    // 10 000 scopes do not fit in a URI (414) nor in a token form (400).
    let started = Instant::now();
    let (status_uri, _, _) = get(
        gateway.port,
        &format!("/token?{}", scopes(10_000)),
        &alice(),
    );
    assert_eq!(status_uri, 414);
    let form = scopes(10_000);
    let posted = exchange(
        gateway.port,
        format!(
            "POST /token HTTP/1.1\r\n{}Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            alice(),
            form.len()
        )
        .as_bytes(),
    );
    assert_eq!(status(&posted), 400, "{}", String::from_utf8_lossy(&posted));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn path_tricks_never_reach_the_registry() {
    let gateway = Gateway::default().start();
    // Forwarded, any of these would be a 503: the registry port is closed.
    for path in [
        "/v2/a/%2e%2e/b/manifests/latest",
        "/v2/a/%2E%2E/manifests/latest",
        "/v2//a/manifests/latest",
        "/v2/a%2fb/manifests/latest",
        "/v2/../v2/a/manifests/latest",
        "/v2/a/../b/manifests/latest",
        "/v2/a/./b/manifests/latest",
        "/v2/a/b/manifests/latest%00",
        "/v2/a/b/manifests/latest;x=y",
    ] {
        let (status, _, body) = get(gateway.port, path, &alice());
        assert!(matches!(status, 400 | 404), "{path}: {status} {body}");
    }
}

#[test]
fn a_tls_connection_past_the_limit_is_closed_at_once() {
    let gateway = serve_with("max_connections = 1\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"");
    let _held = connect(gateway.port);
    std::thread::sleep(Duration::from_millis(200));
    // No handshake is spent on it: the connection ends before a ClientHello is even sent,
    // where an admitted one would wait up to header_timeout_seconds (30 s) for it.
    let mut refused = connect(gateway.port);
    let (got, took) = until_closed(&mut refused, Duration::from_secs(5));
    assert!(got.is_empty());
    assert!(took < Duration::from_secs(2), "{took:?}");
}
