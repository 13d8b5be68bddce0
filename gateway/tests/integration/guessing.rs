//! Password guessing over HTTP: an unknown user must answer as slowly as a wrong password
//! (or user names leak), and guessing from one address must slow that address down without
//! locking the real user out elsewhere, and without a forged `X-Forwarded-For` dodging it.

use crate::served::{Gateway, Running, get};
use std::time::{Duration, Instant};

fn with_bob(server: &str) -> Running {
    let bob = format!("bob:{}\n", bcrypt::hash("bob-pw", 9).expect("hash"));
    Gateway {
        server,
        users: &bob,
        ..Gateway::default()
    }
    .start()
}

/// A token request for `user:password` said to come (through a proxy) from `from`.
fn login(gateway: &Running, user: &str, password: &str, from: &str) -> u16 {
    let basic = data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes());
    get(
        gateway.port,
        "/token?scope=repository:bob/app:pull",
        &format!("Host: x\r\nAuthorization: Basic {basic}\r\nX-Forwarded-For: {from}\r\n"),
    )
    .0
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

#[test]
fn an_unknown_user_takes_as_long_as_a_wrong_password() {
    // Every request from its own address, so the throttle never answers first.
    let gateway = with_bob("trusted_proxies = [\"127.0.0.1/32\"]");
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..15 {
        for (net, user, samples) in [(1, "bob", &mut wrong), (2, "nobody", &mut unknown)] {
            let from = format!("10.{net}.0.{i}");
            let started = Instant::now();
            assert_eq!(login(&gateway, user, "guess", &from), 401);
            samples.push(started.elapsed());
        }
    }
    let (wrong, unknown) = (median(wrong), median(unknown));
    // A cost-9 bcrypt takes milliseconds; without the decoy an unknown user would answer
    // in microseconds.
    assert!(wrong > Duration::from_millis(5), "{wrong:?}");
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    assert!(
        (0.75..1.33).contains(&ratio),
        "unknown user {unknown:?} vs wrong password {wrong:?}"
    );
}

#[test]
fn guessing_slows_that_address_and_not_the_real_user_elsewhere() {
    let gateway = with_bob("trusted_proxies = [\"127.0.0.1/32\"]");
    for _ in 0..5 {
        assert_eq!(login(&gateway, "bob", "guess", "203.0.113.7"), 401);
    }
    assert_eq!(login(&gateway, "bob", "bob-pw", "203.0.113.7"), 429);
    assert_eq!(login(&gateway, "bob", "bob-pw", "198.51.100.2"), 200);
}

#[test]
fn a_forged_forwarded_for_does_not_dodge_the_throttle() {
    // No trusted proxies: the header is the client's own claim and is ignored.
    let gateway = with_bob("");
    for i in 0..5 {
        assert_eq!(
            login(&gateway, "bob", "guess", &format!("203.0.113.{i}")),
            401
        );
    }
    assert_eq!(login(&gateway, "bob", "bob-pw", "198.51.100.2"), 429);
}
