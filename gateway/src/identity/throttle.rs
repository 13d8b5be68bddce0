//! Slows down password guessing: failures are counted per (client address, account) and per
//! client address. Counting by address too means an attacker elsewhere cannot lock a real user
//! out: the user's own (address, account) pair stays clean.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long failures are remembered.
const WINDOW: Duration = Duration::from_secs(60);
/// Failures of one account from one address before it must wait.
const PER_ACCOUNT: u32 = 5;
/// Failures from one address, across accounts (password spraying), before it must wait.
const PER_ADDRESS: u32 = 30;
/// Entries kept at most; past this, expired ones are dropped, then everything.
const MAX_ENTRIES: usize = 100_000;

#[derive(Hash, PartialEq, Eq, Clone)]
enum Key {
    Account(IpAddr, String),
    Address(IpAddr),
}

struct Failures {
    count: u32,
    since: Instant,
}

/// Failed-login bookkeeping shared by every request.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Throttle {
    /// `Err(wait)` when this client must wait before trying `account` again.
    pub fn check(&self, ip: IpAddr, account: &str, now: Instant) -> Result<(), Duration> {
        let failures = self.lock();
        let wait = |key: &Key, limit: u32| {
            failures
                .get(key)
                .filter(|f| f.count >= limit && now.duration_since(f.since) < WINDOW)
                .map(|f| WINDOW - now.duration_since(f.since))
        };
        match wait(&Key::Account(ip, account.to_string()), PER_ACCOUNT)
            .or(wait(&Key::Address(ip), PER_ADDRESS))
        {
            Some(duration) => Err(duration),
            None => Ok(()),
        }
    }

    /// Records a wrong password.
    pub fn failed(&self, ip: IpAddr, account: &str, now: Instant) {
        let mut failures = self.lock();
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, f| now.duration_since(f.since) < WINDOW);
            if failures.len() >= MAX_ENTRIES {
                failures.clear();
            }
        }
        for key in [Key::Account(ip, account.to_string()), Key::Address(ip)] {
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                since: now,
            });
            if now.duration_since(entry.since) >= WINDOW {
                *entry = Failures {
                    count: 0,
                    since: now,
                };
            }
            entry.count += 1;
        }
    }

    /// Forgets the account's failures from this address after a right password.
    pub fn succeeded(&self, ip: IpAddr, account: &str) {
        self.lock().remove(&Key::Account(ip, account.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn an_account_is_slowed_down_from_the_guessing_address_only() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..PER_ACCOUNT {
            assert!(throttle.check(ip("10.0.0.66"), "alice", now).is_ok());
            throttle.failed(ip("10.0.0.66"), "alice", now);
        }
        let wait = throttle
            .check(ip("10.0.0.66"), "alice", now)
            .expect_err("throttled");
        assert_eq!(wait, WINDOW);
        // The real alice, elsewhere, is not locked out; other accounts from the attacker pass.
        assert!(throttle.check(ip("10.0.0.7"), "alice", now).is_ok());
        assert!(throttle.check(ip("10.0.0.66"), "bob", now).is_ok());
        // The window passes.
        assert!(
            throttle
                .check(ip("10.0.0.66"), "alice", now + WINDOW)
                .is_ok()
        );
    }

    #[test]
    fn spraying_many_accounts_from_one_address_is_slowed_down() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for i in 0..PER_ADDRESS {
            throttle.failed(ip("::1"), &format!("user{i}"), now);
        }
        assert!(throttle.check(ip("::1"), "fresh", now).is_err());
        assert!(throttle.check(ip("::2"), "fresh", now).is_ok());
    }

    #[test]
    fn success_clears_the_accounts_failures() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..PER_ACCOUNT - 1 {
            throttle.failed(ip("10.0.0.1"), "alice", now);
        }
        throttle.succeeded(ip("10.0.0.1"), "alice");
        throttle.failed(ip("10.0.0.1"), "alice", now);
        assert!(throttle.check(ip("10.0.0.1"), "alice", now).is_ok());
    }
}
