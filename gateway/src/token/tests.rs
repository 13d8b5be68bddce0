//! Keys, claims and refresh tokens; that registry 2.8 accepts the tokens is shown end to end.

use super::*;

pub(crate) fn keys(rsa: bool) -> (tempfile::TempDir, SigningKey) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, cert) = generate(dir.path(), rsa).expect("keygen");
    let signing = SigningKey::load(&key, &cert, Embed::X5c).unwrap_or_else(|e| panic!("{e}"));
    (dir, signing)
}

pub(crate) fn issuer() -> Issuer {
    Issuer::new(
        "portcullis",
        "registry.test",
        Duration::from_secs(300),
        Duration::from_secs(3600),
    )
}

fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&BASE64URL_NOPAD.decode(part.as_bytes()).expect("base64url"))
        .expect("json")
}

#[test]
fn access_tokens_carry_what_registry_2_8_checks() {
    for rsa in [false, true] {
        let (_dir, key) = keys(rsa);
        let access = vec![Access {
            resource_type: "repository".into(),
            class: None,
            name: "alice/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }];
        let issued = issuer()
            .access_token(&key, "alice", access, None, None)
            .expect("signs");
        let header = jsonwebtoken::decode_header(&issued.token).expect("header");
        assert_eq!(
            header.alg,
            if rsa {
                Algorithm::RS256
            } else {
                Algorithm::ES256
            }
        );
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        assert_eq!(
            header.x5c.as_ref().map(Vec::len),
            Some(1),
            "x5c holds the certificate"
        );
        let claims = payload(&issued.token);
        assert_eq!(claims["iss"], "portcullis");
        assert_eq!(claims["sub"], "alice");
        assert!(claims["aud"].is_string(), "2.8 rejects an array aud");
        assert_eq!(claims["aud"], "registry.test");
        let (iat, exp, nbf) = (
            claims["iat"].as_u64(),
            claims["exp"].as_u64(),
            claims["nbf"].as_u64(),
        );
        assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(300));
        assert!(nbf <= iat);
        assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
        assert_eq!(claims["access"][0]["type"], "repository");
        assert_eq!(
            claims["access"][0]["actions"],
            serde_json::json!(["pull", "push"])
        );
        assert_eq!(issued.expires_in, 300);
        // And the signature verifies with the public key.
        let mut validation = Validation::new(key.algorithm());
        validation.set_audience(&["registry.test"]);
        jsonwebtoken::decode::<serde_json::Value>(&issued.token, &key.decoding, &validation)
            .expect("verifies");
    }
}

#[test]
fn an_empty_grant_is_a_token_with_empty_access() {
    let (_dir, key) = keys(false);
    let issued = issuer()
        .access_token(&key, "", Vec::new(), None, None)
        .expect("signs");
    assert_eq!(payload(&issued.token)["access"], serde_json::json!([]));
}

#[test]
fn kid_is_the_libtrust_form() {
    let (_dir, key) = keys(false);
    let groups: Vec<&str> = key.kid.split(':').collect();
    assert_eq!(groups.len(), 12, "{}", key.kid);
    assert!(groups.iter().all(|g| {
        g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    }));
    assert_eq!(key.jwk()["kid"], key.kid.as_str());
    assert_eq!(key.jwk()["crv"], "P-256");
    let (_dir, rsa) = keys(true);
    assert_eq!(rsa.jwk()["kty"], "RSA");
    assert_eq!(rsa.jwk()["e"], "AQAB");
}

#[test]
fn refresh_tokens_are_bound_and_not_interchangeable() {
    let (_dir, key) = keys(false);
    let issuer = issuer();
    let refresh = issuer
        .refresh_token(&key, "alice", "cred-1")
        .expect("signs");
    assert_eq!(
        issuer.verify_refresh(&[&key], &refresh).expect("verifies"),
        Refresh {
            subject: "alice".into(),
            credential: "cred-1".into()
        }
    );
    // Not an access token: the registry checks aud == service.
    assert_eq!(payload(&refresh)["aud"], "portcullis-refresh:registry.test");
    let access = issuer
        .access_token(&key, "alice", Vec::new(), None, None)
        .expect("signs")
        .token;
    assert!(
        issuer.verify_refresh(&[&key], &access).is_err(),
        "an access token is no refresh token"
    );
    let other_service = Issuer::new(
        "portcullis",
        "other",
        Duration::from_secs(300),
        Duration::from_secs(60),
    );
    assert!(
        other_service.verify_refresh(&[&key], &refresh).is_err(),
        "bound to the service"
    );
    let (_dir2, other_key) = keys(false);
    assert!(
        issuer.verify_refresh(&[&other_key], &refresh).is_err(),
        "unknown key"
    );
    assert_eq!(
        issuer
            .verify_refresh(&[&other_key, &key], &refresh)
            .expect("old key still verifies")
            .subject,
        "alice"
    );
    let mut tampered = refresh.clone();
    tampered.replace_range(tampered.len() - 5.., "AAAAA");
    assert!(issuer.verify_refresh(&[&key], &tampered).is_err());
}

#[test]
fn mismatched_or_unusable_files_are_refused_with_the_file_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key_a, _) = generate(&dir.path().join("a"), false).expect("keygen");
    let (_, cert_b) = generate(&dir.path().join("b"), false).expect("keygen");
    let e = SigningKey::load(&key_a, &cert_b, Embed::X5c)
        .err()
        .expect("mismatch")
        .to_string();
    assert!(e.contains("the certificate is not for the key"), "{e}");
    let sec1 = dir.path().join("sec1.key");
    std::fs::write(
        &sec1,
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n",
    )
    .expect("write");
    let e = SigningKey::load(&sec1, &cert_b, Embed::X5c)
        .err()
        .expect("sec1")
        .to_string();
    assert!(
        e.starts_with(&sec1.display().to_string()) && e.contains("openssl pkcs8"),
        "{e}"
    );
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "").expect("write");
    let e = SigningKey::load(&key_a, &empty, Embed::X5c)
        .err()
        .expect("no cert")
        .to_string();
    assert!(e.contains("no `BEGIN CERTIFICATE` block"), "{e}");
    let e = SigningKey::load(&dir.path().join("missing"), &empty, Embed::X5c)
        .err()
        .expect("missing")
        .to_string();
    assert!(e.starts_with("cannot read"), "{e}");
}

#[test]
fn the_generated_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, _) = generate(dir.path(), false).expect("keygen");
    let mode = std::fs::metadata(key).expect("stat").permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

fn forged(header: &Header, claims: &Claims, encoding: &jsonwebtoken::EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, encoding).expect("signs")
}

fn claims(issuer: &Issuer, aud: &str, exp_offset: i64, nbf_offset: i64) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    Claims {
        iss: issuer.issuer.clone(),
        sub: "alice".into(),
        aud: aud.into(),
        exp: (now + exp_offset) as u64,
        nbf: (now + nbf_offset) as u64,
        iat: now as u64,
        jti: "j".into(),
        access: Some(vec![Access {
            resource_type: "repository".into(),
            class: None,
            name: "alice/app".into(),
            actions: vec!["push".into()],
        }]),
        cred: Some("c".into()),
        src: None,
        grp: None,
        clm: None,
        pat: None,
    }
}

#[test]
fn access_tokens_verify_and_say_what_they_grant() {
    let (_dir, key) = keys(false);
    let issuer = issuer();
    let access = vec![Access {
        resource_type: "repository".into(),
        class: None,
        name: "alice/app".into(),
        actions: vec!["pull".into(), "push".into()],
    }];
    let token = issuer
        .access_token(&key, "alice", access, None, None)
        .expect("signs")
        .token;
    let verified = issuer.verify_access(&[&key], &token).expect("verifies");
    assert_eq!(verified.subject, "alice");
    assert!(verified.allows("repository", "alice/app", "push"));
    assert!(!verified.allows("repository", "alice/app", "delete"));
    assert!(!verified.allows("repository", "alice/other", "pull"));
    assert!(verified.expires_at > SystemTime::now());
    let star = Verified {
        access: vec![Access {
            resource_type: "registry".into(),
            class: None,
            name: "catalog".into(),
            actions: vec!["*".into()],
        }],
        ..verified
    };
    assert!(star.allows("registry", "catalog", "*"));
}

#[test]
fn forged_expired_and_misdirected_access_tokens_are_rejected() {
    let (dir, key) = keys(false);
    let issuer = issuer();
    let reject = |token: &str, why: &str| {
        assert!(issuer.verify_access(&[&key], token).is_err(), "{why}");
    };
    // A refresh token is no access token.
    reject(
        &issuer.refresh_token(&key, "alice", "c").expect("signs"),
        "refresh as access",
    );
    let sign = |c: &Claims| key.sign(c).expect("signs");
    reject(
        &sign(&claims(&issuer, "registry.test", -120, -200)),
        "expired beyond the leeway",
    );
    reject(
        &sign(&claims(&issuer, "registry.test", 600, 300)),
        "not yet valid",
    );
    reject(
        &sign(&claims(&issuer, "other-service", 600, -10)),
        "wrong aud",
    );
    let mut wrong_iss = claims(&issuer, "registry.test", 600, -10);
    wrong_iss.iss = "someone-else".into();
    reject(&sign(&wrong_iss), "wrong iss");
    let good = sign(&claims(&issuer, "registry.test", 600, -10));
    assert!(issuer.verify_access(&[&key], &good).is_ok());

    // Tampered payload: grant delete by editing the claims, keep the signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload_json = payload(&good);
    payload_json["access"][0]["actions"] = serde_json::json!(["*"]);
    let edited = BASE64URL_NOPAD.encode(payload_json.to_string().as_bytes());
    reject(
        &format!("{}.{edited}.{}", parts[0], parts[2]),
        "tampered payload",
    );

    // alg none, and HS256 keyed with our public certificate (algorithm confusion).
    let none_header = BASE64URL_NOPAD.encode(
        serde_json::json!({"alg": "none", "kid": key.kid})
            .to_string()
            .as_bytes(),
    );
    reject(&format!("{none_header}.{}.", parts[1]), "alg none");
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    let public_pem = std::fs::read_to_string(dir.path().join("token.crt")).expect("certificate");
    let confused = forged(
        &hs,
        &claims(&issuer, "registry.test", 600, -10),
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()),
    );
    reject(&confused, "HS256 with the public key");

    // Unknown kid: a token from another key.
    let (_dir2, other) = keys(false);
    let foreign = issuer
        .access_token(&other, "alice", Vec::new(), None, None)
        .expect("signs")
        .token;
    reject(&foreign, "unknown kid");
    reject("not.a.jwt", "garbage");
    reject("", "empty");
}

/// Issue 12, review item 3: a refresh token lives no longer than the lifetime configured
/// now (whatever its `exp`), and one bound to no credential is refused.
#[test]
fn refresh_tokens_obey_the_configured_lifetime_and_need_a_credential() {
    let (_dir, key) = keys(false);
    let issuer = issuer();
    let sign = |c: &Claims| key.sign(c).expect("signs");
    let mut old = claims(&issuer, "portcullis-refresh:registry.test", 3_600_000, -10);
    old.iat -= 7200;
    assert!(
        issuer.verify_refresh(&[&key], &sign(&old)).is_err(),
        "issued two hours ago, the refresh lifetime is one hour"
    );
    let mut fresh = claims(&issuer, "portcullis-refresh:registry.test", 3_600_000, -10);
    assert!(issuer.verify_refresh(&[&key], &sign(&fresh)).is_ok());
    fresh.cred = None;
    let e = issuer
        .verify_refresh(&[&key], &sign(&fresh))
        .expect_err("no credential");
    assert!(e.to_string().contains("log in again"), "{e}");
}

#[test]
fn an_access_token_with_a_far_exp_expires_with_the_configured_lifetime() {
    let (_dir, key) = keys(false);
    let issuer = issuer();
    let far = claims(&issuer, "registry.test", 10 * 365 * 86_400, -10);
    let verified = issuer
        .verify_access(&[&key], &key.sign(&far).expect("signs"))
        .expect("verifies");
    let lifetime = verified
        .expires_at
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(lifetime <= Duration::from_secs(300), "{lifetime:?}");
}

#[test]
fn the_scope_class_is_kept_in_the_token() {
    let (_dir, key) = keys(false);
    let access = vec![Access {
        resource_type: "repository".into(),
        class: Some("plugin".into()),
        name: "x".into(),
        actions: vec!["pull".into()],
    }];
    let issued = issuer()
        .access_token(&key, "alice", access, None, None)
        .expect("signs");
    let access = &payload(&issued.token)["access"][0];
    assert_eq!(access["class"], "plugin");
    assert_eq!(access["type"], "repository");
}

#[test]
fn a_lifetime_past_what_a_jwt_holds_is_an_error_not_a_panic() {
    let (_dir, key) = keys(false);
    let issuer = Issuer::new(
        "portcullis",
        "registry.test",
        Duration::from_secs(u64::MAX),
        Duration::from_secs(u64::MAX / 2),
    );
    assert!(
        issuer
            .access_token(&key, "alice", Vec::new(), None, None)
            .is_err()
    );
    assert!(issuer.refresh_token(&key, "alice", "c").is_err());
}

/// RFC 7638 section 3.1's own example: the thumbprint distribution 3.x computes for a key
/// of its `rootcertbundle`, and which a JWKS `kid` must equal for a bare-`kid` token.
#[test]
fn the_thumbprint_is_rfc_7638s() {
    let jwk = serde_json::json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    });
    assert_eq!(
        jwk_thumbprint(&jwk),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

/// Issue 13: distribution 3.x verifies a token with `x5c` against its `rootcertbundle` only,
/// so for a registry that trusts our JWKS the token must carry a bare `kid` that the JWKS
/// lists; 2.8 needs `x5c` or the libtrust `kid`.
#[test]
fn the_header_follows_embed_and_the_jwks_names_the_same_kid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, cert) = generate(dir.path(), false).expect("keygen");
    let x5c = SigningKey::load(&key, &cert, Embed::X5c).expect("loads");
    let kid = SigningKey::load(&key, &cert, Embed::Kid).expect("loads");
    let header_of = |k: &SigningKey| {
        let issued = issuer()
            .access_token(k, "alice", Vec::new(), None, None)
            .expect("signs");
        jsonwebtoken::decode_header(&issued.token).expect("header")
    };
    let with_chain = header_of(&x5c);
    assert!(with_chain.x5c.is_some_and(|chain| chain.len() == 1));
    assert_eq!(
        with_chain.kid.as_deref(),
        Some(libtrust_kid_of(&x5c).as_str())
    );
    let bare = header_of(&kid);
    assert_eq!(
        bare.x5c, None,
        "no x5c: 3.x would check it against the bundle only"
    );
    let thumbprint = jwk_thumbprint(kid.jwk());
    assert_eq!(bare.kid.as_deref(), Some(thumbprint.as_str()));
    assert_eq!(
        kid.jwk()["kid"],
        thumbprint.as_str(),
        "the JWKS names it alike"
    );
    assert_eq!(x5c.jwk()["kid"], x5c.kid.as_str());
    assert!(x5c.same_key(&kid));
    // A token of either form verifies, whichever form is configured now.
    for signer in [&x5c, &kid] {
        let token = issuer()
            .access_token(signer, "alice", Vec::new(), None, None)
            .expect("signs")
            .token;
        for verifier in [&x5c, &kid] {
            assert!(issuer().verify_access(&[verifier], &token).is_ok());
        }
    }
}

fn libtrust_kid_of(key: &SigningKey) -> String {
    key.ids[0].clone()
}

/// Issue 19: distribution 3.1 drops a leading zero byte of an EC coordinate when it computes
/// a key's thumbprint; `keygen` never writes such a key, and `check` can tell one.
#[test]
fn keygen_never_writes_a_key_distribution_3_1_would_refuse() {
    let mut point = vec![4u8];
    point.extend([1u8; 64]);
    assert!(!has_short_coordinate(&point));
    point[1] = 0;
    assert!(has_short_coordinate(&point));
    point[1] = 1;
    point[33] = 0;
    assert!(has_short_coordinate(&point));
    let dir = tempfile::tempdir().expect("tempdir");
    // About one key in 128 is drawn again: 300 keys meet a few.
    for i in 0..300 {
        let keys = dir.path().join(i.to_string());
        let (key, cert) = generate(&keys, false).expect("keygen");
        let loaded = SigningKey::load(&key, &cert, Embed::Kid).expect("loads");
        assert!(!loaded.short_coordinate(), "key {i}");
    }
}
