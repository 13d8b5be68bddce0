//! Slows down password guessing: failures are counted per (client address, account) and per
//! client address. Accounts are counted by their folded name (case and spaces), so that
//! `Mallory` and `mallory ` are the one account a directory takes them for. Counting by address too means an attacker elsewhere cannot lock a real user
//! out: the user's own (address, account) pair stays clean. An IPv6 client counts by its /64,
//! the block one host or one customer gets, so rotating addresses inside it gains nothing.

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
/// Entries kept at most; past this, expired ones are dropped, then the oldest.
const MAX_ENTRIES: usize = 100_000;
/// At the limit, this share of the entries goes at once, so that eviction is not paid on
/// every failure.
const EVICT_SHARE: usize = 8;

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
        let ip = client(ip);
        let failures = self.lock();
        let wait = |key: &Key, limit: u32| {
            failures
                .get(key)
                .filter(|f| f.count >= limit && now.duration_since(f.since) < WINDOW)
                .map(|f| WINDOW - now.duration_since(f.since))
        };
        match wait(&Key::Account(ip, super::fold(account)), PER_ACCOUNT)
            .or(wait(&Key::Address(ip), PER_ADDRESS))
        {
            Some(duration) => Err(duration),
            None => Ok(()),
        }
    }

    /// Records a wrong password.
    pub fn failed(&self, ip: IpAddr, account: &str, now: Instant) {
        let ip = client(ip);
        let mut failures = self.lock();
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, f| now.duration_since(f.since) < WINDOW);
            if failures.len() >= MAX_ENTRIES {
                // Forgetting everyone would free every guesser at once; the oldest are the
                // nearest to being forgotten anyway.
                let mut ages: Vec<Instant> = failures.values().map(|f| f.since).collect();
                let (_, cut, _) = ages.select_nth_unstable(MAX_ENTRIES / EVICT_SHARE);
                let cut = *cut;
                failures.retain(|_, f| f.since > cut);
            }
        }
        for key in [Key::Account(ip, super::fold(account)), Key::Address(ip)] {
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
        self.lock()
            .remove(&Key::Account(client(ip), super::fold(account)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The address failures are counted by: an IPv4 address itself (also when mapped into
/// IPv6), an IPv6 address's /64.
fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (!0u128 << 64)).into()),
        },
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
            throttle.failed(ip("2001:db8::1"), &format!("user{i}"), now);
        }
        assert!(throttle.check(ip("2001:db8::1"), "fresh", now).is_err());
        assert!(throttle.check(ip("2001:db8:0:1::1"), "fresh", now).is_ok());
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

    /// Issue 12, review item 6: the throttle keyed on exact IPv6 addresses, and one /64
    /// holds 2^64 of them.
    #[test]
    fn an_ipv6_guesser_counts_as_its_64() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for i in 0..PER_ACCOUNT {
            throttle.failed(ip(&format!("2001:db8:1:2::{:x}", i + 1)), "alice", now);
        }
        assert!(
            throttle
                .check(ip("2001:db8:1:2:ffff::9"), "alice", now)
                .is_err()
        );
        assert!(throttle.check(ip("2001:db8:1:3::1"), "alice", now).is_ok());
        // An IPv4 client seen through an IPv6 socket is that IPv4 address.
        for _ in 0..PER_ACCOUNT {
            throttle.failed(ip("::ffff:10.0.0.5"), "bob", now);
        }
        assert!(throttle.check(ip("10.0.0.5"), "bob", now).is_err());
    }

    /// Issue 12, review item 6: at the entry limit the throttle forgot everyone, so a flood
    /// of failures from fresh addresses freed a guesser it had already slowed down.
    #[test]
    fn a_flood_of_new_addresses_evicts_the_oldest_not_everyone() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let fail_from = |first: u32, count: u32, when: Instant| {
            for i in first..first + count {
                throttle.failed(IpAddr::V4(i.into()), "x", when);
            }
        };
        // Failures long forgotten by the guesser, then his, then a flood after them.
        fail_from(0, 30_000, at(0));
        for _ in 0..PER_ACCOUNT {
            throttle.failed(ip("10.9.9.9"), "alice", at(30));
        }
        fail_from(1 << 24, 25_000, at(31));
        assert!(throttle.lock().len() <= MAX_ENTRIES);
        assert!(
            throttle.check(ip("10.9.9.9"), "alice", at(32)).is_err(),
            "the guesser is still throttled"
        );
    }
}
