//! A registry that misbehaves in the ways a real one can when its disk, network or process
//! fails (silent, garbage, cut off mid-body, stalled mid-body), and a client that stalls
//! mid-upload. The real registry cannot be made to do these on cue, so a small TCP server
//! plays it. Every case must end in a registry-style error or a closed connection within
//! the configured timeouts, never a hang.

use crate::served::{Gateway, Running, alice, status, until_closed};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How the stand-in registry answers every request.
#[derive(Clone, Copy)]
enum Fault {
    /// Reads the request and says nothing.
    Silent,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Promises 1 MiB, sends 64 KiB and closes.
    CutOff,
    /// Promises 1 MiB, sends 64 KiB and goes quiet.
    Stall,
}

/// Starts the stand-in on a free port; it serves until the test process ends.
fn registry(fault: Fault) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || misbehave(stream, fault));
        }
    });
    port
}

fn misbehave(mut stream: TcpStream, fault: Fault) {
    let mut head = Vec::new();
    let mut buffer = [0; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let promise = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n";
    match fault {
        Fault::Silent => {
            // Keep reading (a body, if any) and never answer.
            while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
        }
        Fault::Garbage => {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        }
        Fault::CutOff => {
            let _ = stream.write_all(promise);
            let _ = stream.write_all(&[7; 64 * 1024]);
        }
        Fault::Stall => {
            let _ = stream.write_all(promise);
            let _ = stream.write_all(&[7; 64 * 1024]);
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

fn gateway(fault: Fault) -> Running {
    Gateway {
        upstream_port: Some(registry(fault)),
        upstream: "answer_timeout_seconds = 1\nidle_timeout_seconds = 1",
        ..Gateway::default()
    }
    .start()
}

/// Sends `request`, reads until the gateway closes; the bytes and how long it took.
fn exchange_timed(port: u16, request: &[u8]) -> (Vec<u8>, Duration) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let started = Instant::now();
    stream.write_all(request).expect("write");
    let (got, _) = until_closed(&mut stream, Duration::from_secs(20));
    (got, started.elapsed())
}

fn get_blob(port: u16) -> (Vec<u8>, Duration) {
    exchange_timed(
        port,
        format!(
            "GET /v2/a/b/blobs/sha256:{} HTTP/1.1\r\n{}Connection: close\r\n\r\n",
            "0".repeat(64),
            alice()
        )
        .as_bytes(),
    )
}

fn error_code(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

#[test]
fn a_silent_registry_is_a_504_after_the_answer_timeout() {
    let gateway = gateway(Fault::Silent);
    let (got, took) = get_blob(gateway.port);
    assert_eq!(status(&got), 504, "{}", String::from_utf8_lossy(&got));
    assert_eq!(error_code(&got), "UNAVAILABLE");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[test]
fn a_registry_answering_garbage_is_a_502() {
    let gateway = gateway(Fault::Garbage);
    let (got, took) = get_blob(gateway.port);
    assert_eq!(status(&got), 502, "{}", String::from_utf8_lossy(&got));
    assert_eq!(error_code(&got), "UNKNOWN");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

/// Once the head has gone out, the only honest signal left is to cut the connection
/// before the promised length: the client sees a short body, never a complete-looking one.
fn assert_cut_short(got: &[u8], took: Duration) {
    let text = String::from_utf8_lossy(got);
    assert_eq!(status(got), 200, "{:.300}", text);
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    assert!(text[..head_end].contains("content-length: 1048576"));
    let body = got.len() - head_end;
    assert!(body < 1 << 20, "a cut-off body was completed: {body} bytes");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn a_registry_cut_off_mid_body_cuts_the_client_off() {
    let gateway = gateway(Fault::CutOff);
    let (got, took) = get_blob(gateway.port);
    assert_cut_short(&got, took);
}

#[test]
fn a_registry_stalled_mid_body_is_abandoned_after_the_idle_timeout() {
    let gateway = gateway(Fault::Stall);
    let (got, took) = get_blob(gateway.port);
    assert_cut_short(&got, took);
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

#[test]
fn a_client_that_stalls_mid_upload_is_abandoned_after_the_idle_timeout() {
    let gateway = gateway(Fault::Silent);
    let (got, took) = exchange_timed(
        gateway.port,
        format!(
            "PATCH /v2/a/b/blobs/uploads/0b6a1d3c-0000-4000-8000-000000000000 HTTP/1.1\r\n{}\
             Content-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\nsome bytes",
            alice()
        )
        .as_bytes(),
    );
    // The registry never heard the end of it; the client is told, or at least let go.
    assert!(
        matches!(status(&got), 0 | 502 | 504),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn timeouts_of_zero_are_config_errors() {
    for (section, key) in [
        ("server", "header_timeout_seconds"),
        ("server", "max_connections"),
        ("upstream", "connect_timeout_seconds"),
        ("upstream", "answer_timeout_seconds"),
        ("upstream", "idle_timeout_seconds"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(
            &path,
            format!(
                "[{section}]\n{key} = 0\n{}[token]\nissuer = \"i\"\nservice = \"s\"\n\
                 key = \"k\"\ncertificate = \"c\"\n[[policy]]\nname = \"p\"\nmodule = \"m\"\n",
                if section == "upstream" {
                    "url = \"http://127.0.0.1:5000\"\n"
                } else {
                    ""
                }
            ),
        )
        .expect("config");
        let error = portcullis::config::Config::load(&path)
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains(&format!("[{section}] {key} must be above 0")),
            "{error}"
        );
    }
}
