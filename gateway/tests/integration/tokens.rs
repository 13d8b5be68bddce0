//! What a token is worth over time: refresh tokens die with a password change and, once
//! `previous_keys = 0`, with a rotated key; credentials never travel in a GET query; the
//! token says exactly what was asked, class included.

use crate::served::{Gateway, Running, eventually, exchange, get, replace, replace_config, status};
use data_encoding::{BASE64, BASE64URL_NOPAD};

fn basic(user: &str, password: &str) -> String {
    format!(
        "Host: x\r\nAuthorization: Basic {}\r\n",
        BASE64.encode(format!("{user}:{password}").as_bytes())
    )
}

fn htpasswd_line(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 4).expect("hash"))
}

/// alice (`pw`) and bob (`bob-pw`).
fn start() -> Running {
    Gateway {
        users: &htpasswd_line("bob", "bob-pw"),
        ..Gateway::default()
    }
    .start()
}

/// The refresh token of an offline login, as `docker login` asks for it.
fn offline_login(port: u16, user: &str, password: &str) -> String {
    let (code, head, body) = get(
        port,
        "/token?service=registry.test&offline_token=true&client_id=docker",
        &basic(user, password),
    );
    assert_eq!(code, 200, "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    json["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string()
}

/// Redeems a refresh token by the OAuth2 POST docker uses: status and body.
fn redeem(port: u16, refresh: &str) -> (u16, String) {
    let form = format!(
        "grant_type=refresh_token&service=registry.test&client_id=docker&refresh_token={refresh}"
    );
    let response = exchange(
        port,
        format!(
            "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
    );
    let text = String::from_utf8_lossy(&response).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status(&response), body)
}

/// Issue 12, review item 3: redemption only checked that the user still existed, so a
/// refresh token (30 days by default) outlived a password changed after a leak.
#[test]
fn a_password_change_ends_that_users_refresh_tokens_only() {
    let gateway = start();
    let dir = gateway.dir.path();
    let (alice, bob) = (
        offline_login(gateway.port, "alice", "pw"),
        offline_login(gateway.port, "bob", "bob-pw"),
    );
    assert_eq!(redeem(gateway.port, &alice).0, 200);
    let bob_line = std::fs::read_to_string(dir.join("htpasswd"))
        .expect("read")
        .lines()
        .find(|l| l.starts_with("bob:"))
        .expect("bob")
        .to_string();
    replace(
        dir,
        "htpasswd",
        &format!("{}{bob_line}\n", htpasswd_line("alice", "new-pw")),
    );
    assert!(
        eventually(|| redeem(gateway.port, &alice).0 == 401),
        "alice's refresh token outlived her password"
    );
    let (_, body) = redeem(gateway.port, &alice);
    assert!(body.contains("log in again"), "{body}");
    assert_eq!(
        redeem(gateway.port, &bob).0,
        200,
        "bob's password did not change"
    );
    let fresh = offline_login(gateway.port, "alice", "new-pw");
    assert_eq!(redeem(gateway.port, &fresh).0, 200);
}

/// Issue 12, review item 3: a rotated-out key verified refresh tokens for as long as four
/// more rotations; after a leak, `previous_keys = 0` cuts them at once.
#[test]
fn previous_keys_0_stops_a_rotated_key_at_once() {
    let gateway = start();
    let dir = gateway.dir.path();
    let refresh = offline_login(gateway.port, "alice", "pw");
    let fresh = dir.join("fresh-keys");
    portcullis::token::generate(&fresh, false).expect("keygen");
    for file in ["token.key", "token.crt"] {
        std::fs::rename(fresh.join(file), dir.join("keys").join(file)).expect("rotate");
    }
    assert!(
        eventually(
            || get(gateway.port, "/.well-known/jwks.json", "Host: x\r\n")
                .2
                .matches("\"kid\"")
                .count()
                == 2
        ),
        "the key never rotated"
    );
    assert_eq!(
        redeem(gateway.port, &refresh).0,
        200,
        "a routine rotation keeps refresh tokens working"
    );
    replace_config(dir, |text| {
        text.replace(
            "certificate = \"keys/token.crt\"",
            "certificate = \"keys/token.crt\"\nprevious_keys = 0",
        )
    });
    assert!(
        eventually(|| redeem(gateway.port, &refresh).0 == 401),
        "the old key still verifies"
    );
    let jwks = get(gateway.port, "/.well-known/jwks.json", "Host: x\r\n").2;
    assert_eq!(jwks.matches("\"kid\"").count(), 1, "{jwks}");
}

/// Issue 12, review item 6: the password grant was taken from a GET query, which lands in
/// access logs.
#[test]
fn credentials_in_a_get_query_are_refused() {
    let gateway = start();
    for query in [
        "grant_type=password&username=alice&password=s3cret-in-query",
        "grant_type=refresh_token&refresh_token=s3cret-in-query",
    ] {
        let (code, head, body) = get(
            gateway.port,
            &format!("/token?service=registry.test&{query}"),
            "Host: x\r\n",
        );
        assert_eq!(code, 400, "{head}");
        assert!(body.contains("POST it as a form"), "{body}");
        assert!(!body.contains("s3cret"), "{body}");
    }
}

/// Issue 12, review item 6: the issued token dropped the class of `repository(plugin):x`.
#[test]
fn the_token_keeps_the_class_of_the_scope() {
    let gateway = start();
    let (code, head, body) = get(
        gateway.port,
        "/token?service=registry.test&scope=repository(plugin):alice/x:pull",
        &basic("alice", "pw"),
    );
    assert_eq!(code, 200, "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let token = json["token"].as_str().expect("a token");
    let payload = token.split('.').nth(1).expect("a payload");
    let claims: serde_json::Value = serde_json::from_slice(
        &BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .expect("base64url"),
    )
    .expect("json");
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "class": "plugin", "name": "alice/x", "actions": ["pull"]}])
    );
}
