//! Fuzzes what a request says about its sender: the `Authorization` header, and
//! `X-Forwarded-For` behind a trusted proxy, which may only ever name an address it lists.
#![no_main]

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::server::credentials::{client_ip, credentials};
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|input: (&[u8], &[u8])| {
    let (authorization, forwarded) = input;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        headers.insert(AUTHORIZATION, value);
    }
    let _ = credentials(&headers);
    if let Ok(value) = HeaderValue::from_bytes(forwarded) {
        headers.insert("x-forwarded-for", value);
    }
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let trusted = ["127.0.0.0/8".parse().expect("a network")];
    let client = client_ip(&headers, peer, &trusted);
    let named = String::from_utf8_lossy(forwarded);
    assert!(client == peer || named.contains(&client.to_string()) || client.is_ipv6());
});
