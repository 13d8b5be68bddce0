//! htpasswd and groups parsing, bcrypt checks, the credential cache and the login layer.

use super::*;
use std::time::Instant;

/// Written by `htpasswd -nbB -C 4` (apache2-utils): the format users bring.
const HTPASSWD: &str = "\
alice:$2y$04$S3kZDh1j6yH6kZAClVXT8Ob2hPeKyRIHZaShL7JRAYpFfv2uZn/ay
# a comment, then a blank line

bob:$2y$04$fI5rASK834KXSUunsm.bo.GmtWhK0h2JL8fThNAk5RMEzG1JCJafG
";

#[test]
fn verifies_what_htpasswd_b_writes() {
    let users = Htpasswd::parse("htpasswd", HTPASSWD).expect("parses");
    assert_eq!(users.len(), 2);
    assert!(users.verify("alice", "secret"));
    assert!(
        users.verify("bob", "pa:ss w0rd"),
        "passwords may hold colons and spaces"
    );
    assert!(!users.verify("alice", "wrong"));
    assert!(!users.verify("nobody", "secret"));
    assert!(users.contains("bob") && !users.contains("nobody"));
}

#[test]
fn accepts_2b_and_2a_and_crlf_lines() {
    let hash = bcrypt::hash("pw", 4).expect("hash"); // `$2b$`
    let legacy = hash.replacen("$2b$", "$2a$", 1);
    let text = format!("u1:{hash}\r\nu2:{legacy}\r\n");
    let users = Htpasswd::parse("f", &text).expect("parses");
    assert!(users.verify("u1", "pw") && users.verify("u2", "pw"));
}

#[test]
fn refuses_every_other_hash_naming_the_line() {
    for (line, kind) in [
        ("carol:$apr1$WPvjuHCy$00k8ojDBZaW6Qkd8tYuEg1", "MD5"),
        ("dave:{SHA}EfatjsUqKYSrqv18O1FlA3hcIHI=", "SHA-1"),
        ("erin:plaintext", "crypt or plain-text"),
        ("fred:$6$salt$hash", "SHA-crypt"),
        ("gina:$2y$04$short", "malformed bcrypt"),
    ] {
        let text = format!("{HTPASSWD}{line}\n");
        let e = Htpasswd::parse("auth/htpasswd", &text).expect_err(line);
        assert_eq!(e.line, 5, "{e}");
        assert!(e.to_string().starts_with("auth/htpasswd:5: user `"), "{e}");
        assert!(
            e.message.contains(kind) && e.message.contains("htpasswd -B"),
            "{e}"
        );
    }
}

#[test]
fn malformed_lines_and_duplicates_are_errors() {
    let e = Htpasswd::parse("f", "no colon here\n").expect_err("no colon");
    assert_eq!((e.line, e.message.as_str()), (1, "expected `user:hash`"));
    let e = Htpasswd::parse(
        "f",
        &format!("{HTPASSWD}alice:{}\n", bcrypt::hash("x", 4).expect("hash")),
    )
    .expect_err("duplicate");
    assert_eq!(e.message, "user `alice` is already defined on line 1");
    let e = Htpasswd::parse(
        "f",
        ":$2y$04$S3kZDh1j6yH6kZAClVXT8Ob2hPeKyRIHZaShL7JRAYpFfv2uZn/ay",
    )
    .expect_err("empty user");
    assert!(e.message.contains("empty"));
}

#[test]
fn unknown_users_cost_a_bcrypt_too() {
    let text = format!("slow:{}\n", bcrypt::hash("pw", 10).expect("hash"));
    let users = Htpasswd::parse("f", &text).expect("parses");
    let time = |user: &str| {
        let started = Instant::now();
        assert!(!users.verify(user, "wrong"));
        started.elapsed()
    };
    let (known, unknown) = (time("slow"), time("nobody"));
    // Both run one cost-10 bcrypt; without the decoy the unknown user answers in nanoseconds.
    assert!(
        unknown * 4 > known,
        "unknown {unknown:?} vs wrong password {known:?}"
    );
}

#[test]
fn groups_file_in_apache_format() {
    let text = "# teams\nci: robot alice\ndev:alice  bob\n\nci: carol robot\n";
    let groups = Groups::parse("groups", text).expect("parses");
    assert_eq!(groups.of("alice"), ["ci", "dev"]);
    assert_eq!(groups.of("robot"), ["ci"], "listed twice, counted once");
    assert_eq!(groups.of("carol"), ["ci"]);
    assert!(groups.of("nobody").is_empty());
    let e = Groups::parse("groups", "ci robot\n").expect_err("no colon");
    assert_eq!(e.to_string(), "groups:1: expected `group: user user ...`");
    let e = Groups::parse("groups", "a b: robot\n").expect_err("bad name");
    assert_eq!(e.line, 1);
}

#[test]
fn the_cache_answers_repeat_logins_without_bcrypt() {
    let text = format!("alice:{}\n", bcrypt::hash("secret", 10).expect("hash"));
    let users = Htpasswd::parse("f", &text).expect("parses");
    let cache = CredentialCache::new().expect("random salt");
    assert!(!cache.remembers(&users, "alice", "secret"));
    let started = Instant::now();
    assert!(cache.verify(&users, "alice", "secret"));
    assert!(cache.remembers(&users, "alice", "secret"));
    assert!(!cache.remembers(&users, "alice", "Secret"));
    let first = started.elapsed();
    let started = Instant::now();
    for _ in 0..100 {
        assert!(cache.verify(&users, "alice", "secret"));
    }
    let repeat = started.elapsed() / 100;
    assert!(repeat * 100 < first, "repeat {repeat:?} vs first {first:?}");
    // Wrong passwords are never cached, and a removed user stops working.
    assert!(!cache.verify(&users, "alice", "Secret"));
    let removed = Htpasswd::parse("f", "").expect("parses");
    assert!(!cache.remembers(&removed, "alice", "secret"));
    assert!(
        !cache.verify(&removed, "alice", "secret"),
        "a removed user stops working"
    );
}

/// Issue 12, review item 1: a bcrypt check that began before an htpasswd reload used to be
/// remembered after the reload had cleared the cache, so the old password kept working.
#[test]
fn a_check_that_finishes_after_a_password_change_is_not_remembered_for_the_new_file() {
    let hash = |password: &str| bcrypt::hash(password, 4).expect("hash");
    let old = Htpasswd::parse("f", &format!("alice:{}\n", hash("old"))).expect("parses");
    let new = Htpasswd::parse("f", &format!("alice:{}\n", hash("new"))).expect("parses");
    let cache = CredentialCache::new().expect("random salt");
    // The check took the old file, and finishes once the new one serves.
    assert!(cache.verify(&old, "alice", "old"));
    assert!(!cache.remembers(&new, "alice", "old"));
    assert!(!cache.verify(&new, "alice", "old"));
    assert!(cache.verify(&new, "alice", "new"));
    // Another user's entry is untouched by alice's change: still remembered.
    let both = |alice: &str| {
        Htpasswd::parse("f", &format!("alice:{alice}\nbob:{}\n", hash("b"))).expect("parses")
    };
    let before = both(&hash("x"));
    assert!(cache.verify(&before, "bob", "b"));
    let after = Htpasswd::parse(
        "f",
        &format!(
            "alice:{}\nbob:{}\n",
            hash("y"),
            before.entry("bob").expect("bob")
        ),
    )
    .expect("parses");
    assert!(cache.remembers(&after, "bob", "b"));
}

#[test]
fn cache_keys_do_not_collide_across_field_boundaries() {
    let hash = bcrypt::hash("x", 4).expect("hash");
    let users = Htpasswd::parse("f", &format!("ab:{hash}\na:{hash}\n")).expect("parses");
    let cache = CredentialCache::new().expect("random salt");
    assert_ne!(cache.key(&users, "ab", "c"), cache.key(&users, "a", "bc"));
    let other = CredentialCache::new().expect("random salt");
    assert_ne!(
        cache.key(&users, "a", "b"),
        other.key(&users, "a", "b"),
        "salted per process"
    );
}

/// Issue 12, review item 6: the decoy used the file's highest cost, so a wrong password for
/// a user of a lower cost answered faster than for an unknown user, telling them apart.
#[test]
fn a_wrong_password_costs_the_same_whatever_the_users_cost() {
    let text = format!(
        "cheap:{}\nslow:{}\n",
        bcrypt::hash("pw", 4).expect("hash"),
        bcrypt::hash("pw", 10).expect("hash")
    );
    let users = Htpasswd::parse("f", &text).expect("parses");
    let median = |user: &str| {
        let mut times: Vec<_> = (0..3)
            .map(|_| {
                let started = Instant::now();
                assert!(!users.verify(user, "wrong"));
                started.elapsed()
            })
            .collect();
        times.sort();
        times[1]
    };
    let (cheap, slow, unknown) = (median("cheap"), median("slow"), median("nobody"));
    // Cost 4 is 64 times cheaper than cost 10; topped up, it is the same work.
    for (what, time) in [("cheap", cheap), ("unknown", unknown)] {
        assert!(
            time * 3 > slow && time < slow * 3,
            "{what} {time:?} vs slow {slow:?}"
        );
    }
    assert!(users.verify("cheap", "pw") && users.verify("slow", "pw"));
}

#[test]
fn a_burst_of_the_same_new_credentials_costs_one_bcrypt() {
    let text = format!("alice:{}\n", bcrypt::hash("secret", 10).expect("hash"));
    let users = Htpasswd::parse("f", &text).expect("parses");
    let cache = CredentialCache::new().expect("random salt");
    let started = Instant::now();
    assert!(users.verify("alice", "secret"));
    let one = started.elapsed();
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| assert!(cache.verify(&users, "alice", "secret")));
        }
    });
    let burst = started.elapsed();
    // Eight bcrypts on this machine's two cores would take about four times as long.
    assert!(burst < one * 3, "burst {burst:?} vs one bcrypt {one:?}");
}

#[test]
fn a_cost_that_would_stall_every_login_is_refused_naming_the_line() {
    let hash = format!("$2y$31${}", "a".repeat(53));
    let e = Htpasswd::parse("htpasswd", &format!("# admins\nroot:{hash}\n")).expect_err("cost 31");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("cost of 31"), "{}", e.message);
}

#[tokio::test]
async fn the_layer_logs_in_remembers_throttles_and_checks_bindings() {
    let users = Htpasswd::parse(
        "f",
        &format!("alice:{}\n", bcrypt::hash("pw", 4).expect("hash")),
    )
    .expect("parses");
    let groups = Groups::parse("g", "ci: alice\n").expect("parses");
    let identity = Arc::new(
        Identity::new(
            Sources {
                users,
                groups,
                ..Sources::default()
            },
            None,
        )
        .expect("random"),
    );
    let client: IpAddr = "10.0.0.1".parse().expect("an address");
    let first = identity
        .login("alice", "pw".into(), client)
        .await
        .expect("logs in");
    let credential = first.credential.clone().expect("an htpasswd credential");
    assert!(!first.remembered);
    let again = identity
        .login("alice", "pw".into(), client)
        .await
        .expect("logs in");
    assert_eq!(
        (again.remembered, &again.credential),
        (true, &first.credential)
    );
    assert_eq!(identity.principal("alice").groups, ["ci"]);
    assert_eq!(
        identity.still_holds("alice", &credential).await,
        Ok(identity.principal("alice")),
        "a refresh carries alice's groups of now"
    );
    assert!(
        identity
            .still_holds("alice", "other")
            .await
            .is_err_and(|e| e.to_string().contains("log in again"))
    );
    assert!(
        identity
            .still_holds("bob", &credential)
            .await
            .is_err_and(|e| e.to_string().contains("no longer exists"))
    );
    for _ in 0..5 {
        assert_eq!(
            identity.login("alice", "wrong".into(), client).await,
            Err(LoginError::Wrong)
        );
    }
    assert!(matches!(
        identity.login("alice", "wrong".into(), client).await,
        Err(LoginError::Throttled(_))
    ));
    // The throttle counts failures; remembered right passwords still pass.
    assert!(identity.login("alice", "pw".into(), client).await.is_ok());
}

/// Issue 19: can two spellings reach one principal anywhere? Not in the htpasswd (names that
/// differ only in case or spaces are refused, and a login's name is matched exactly), not
/// through a workload's or an SSO person's name (the htpasswd's names are theirs in any
/// case), not through a personal token (it names its owner exactly); the throttle counts
/// every spelling as one account.
#[tokio::test]
async fn two_spellings_never_reach_one_principal() {
    let hash = bcrypt::hash("pw", 4).expect("hash");
    let twins = Htpasswd::parse("auth/htpasswd", &format!("alice:{hash}\nAlice :{hash}\n"));
    let error = twins.expect_err("alice and `Alice ` are one name");
    assert_eq!(error.line, 2, "{error}");
    assert!(error.message.contains("only in case or spaces"), "{error}");

    let users = Htpasswd::parse("f", &format!("alice:{hash}\n")).expect("parses");
    let identity = Arc::new(
        Identity::new(
            Sources {
                users,
                ..Sources::default()
            },
            None,
        )
        .expect("random"),
    );
    let client: IpAddr = "10.0.0.2".parse().expect("an address");
    assert_eq!(
        identity.login("Alice", "pw".into(), client).await,
        Err(LoginError::Wrong),
        "`Alice` is not the htpasswd's alice"
    );
    for name in ["ALICE", "alice", " Alice "] {
        let workload = Principal {
            name: name.into(),
            groups: Vec::new(),
            origin: Origin::Oidc("https://ci.example.invalid".into()),
            claims: Vec::new(),
        };
        let refused = identity.name_belongs(&workload).await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("is an htpasswd user's")),
            "{name:?}"
        );
    }
    let own = Principal {
        name: "gha:acme/app".into(),
        groups: Vec::new(),
        origin: Origin::Oidc("https://ci.example.invalid".into()),
        claims: Vec::new(),
    };
    assert_eq!(identity.name_belongs(&own).await, Ok(()));

    // Four spellings of one account, one wrong password each, and a fifth: throttled.
    for name in ["bob", "Bob", "BOB ", " bOb"] {
        assert_eq!(
            identity.login(name, "wrong".into(), client).await,
            Err(LoginError::Wrong)
        );
    }
    assert_eq!(
        identity.login("bob", "wrong".into(), client).await,
        Err(LoginError::Wrong)
    );
    assert!(matches!(
        identity.login("BoB", "wrong".into(), client).await,
        Err(LoginError::Throttled(_))
    ));
}
