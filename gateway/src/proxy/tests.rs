//! Header hygiene and the body wrapper; forwarding itself is proven end to end against the
//! real registry.

use super::*;
use http_body_util::Empty;

#[test]
fn hop_by_hop_and_credential_headers_are_not_forwarded() {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("connection", "keep-alive, x-private"),
        ("x-private", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("authorization", "Basic YTpi"),
        ("forwarded", "host=evil"),
        ("host", "gateway:5001"),
        ("content-type", "application/json"),
        ("docker-content-digest", "sha256:00"),
        ("range", "bytes=0-9"),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    strip(&mut headers);
    let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    left.sort_unstable();
    assert_eq!(left, ["content-type", "docker-content-digest", "range"]);
}

/// `[upstream]` from its TOML lines, defaults and all.
fn section(toml: &str) -> config::Upstream {
    toml::from_str(toml).expect("an [upstream] section")
}

fn upstream(url: &str) -> Upstream {
    Upstream::new(&section(&format!("url = {url:?}"))).expect("upstream")
}

#[tokio::test]
async fn locations_on_the_registry_point_back_at_the_gateway() {
    let up = upstream("http://127.0.0.1:5000");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_static("http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=s"),
    );
    up.rewrite_location(&mut headers, "https://registry.example.com");
    assert_eq!(
        headers[header::LOCATION],
        "https://registry.example.com/v2/a/blobs/uploads/u?_state=s"
    );
    let storage = "https://bucket.s3.example.com/blob?X-Amz-Signature=x";
    headers.insert(header::LOCATION, HeaderValue::from_static(storage));
    up.rewrite_location(&mut headers, "https://registry.example.com");
    assert_eq!(
        headers[header::LOCATION],
        storage,
        "storage redirects stay untouched"
    );
}

#[tokio::test]
async fn an_empty_body_counts_as_sent_at_once_and_a_full_one_at_its_end() {
    let (tx, mut rx) = oneshot::channel();
    let empty = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let _sent = Sent::new(empty, tx);
    assert!(rx.try_recv().is_ok());

    let (tx, mut rx) = oneshot::channel();
    let full = Full::new(Bytes::from_static(b"layer"))
        .map_err(|never| match never {})
        .boxed();
    let sent = Sent::new(full, tx);
    assert!(rx.try_recv().is_err(), "not sent before it is read");
    let bytes = sent.collect().await.expect("collects").to_bytes();
    assert_eq!(&bytes[..], b"layer");
    assert!(rx.try_recv().is_ok());
}

#[test]
fn an_https_upstream_with_an_unreadable_ca_names_the_file() {
    let e = Upstream::new(&section(
        "url = \"https://r:5000\"\nca = \"/nonexistent/ca.pem\"",
    ))
    .err()
    .expect("error");
    assert!(e.contains("[upstream] ca /nonexistent/ca.pem"), "{e}");
}
