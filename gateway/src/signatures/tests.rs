//! Keys read as cosign writes them, signatures checked as containers/image checks them.

use super::*;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

/// A P-256 key pair; its public key as a PEM file in `dir` named `name.pub`.
fn key(dir: &Path, name: &str) -> (EcdsaKeyPair, PathBuf) {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .expect("a key");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("parsed");
    let der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
        pair.public_key(),
    )
    .expect("SPKI");
    let body = data_encoding::BASE64.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    let path = dir.join(format!("{name}.pub"));
    std::fs::write(
        &path,
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        ),
    )
    .expect("write");
    (pair, path)
}

fn payload(digest: &str, reference: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":{{"creator":"test","timestamp":1796394083}}}}"#
    )
    .into_bytes()
}

#[test]
fn a_signature_verifies_with_its_key_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ci, ci_pub) = key(dir.path(), "ci");
    let (_, other_pub) = key(dir.path(), "other");
    let keys = Keys::load(&BTreeMap::from([
        ("ci".to_string(), ci_pub),
        ("other".to_string(), other_pub),
    ]))
    .expect("keys load");
    assert_eq!(keys.names().collect::<Vec<_>>(), ["ci", "other"]);
    let signed = payload("sha256:aa", "127.0.0.1:5000/prod/app:v1");
    let signature = ci.sign(&SystemRandom::new(), &signed).expect("signs");
    assert!(keys.verifies("ci", &signed, signature.as_ref()));
    assert!(!keys.verifies("other", &signed, signature.as_ref()));
    let mut altered = signed.clone();
    altered[10] ^= 1;
    assert!(!keys.verifies("ci", &altered, signature.as_ref()));
    assert!(!keys.verifies("nobody", &signed, signature.as_ref()));
}

#[test]
fn keys_that_are_not_public_keys_are_refused_with_the_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.pub");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let error = Keys::load(&BTreeMap::from([("release".to_string(), bad)]))
        .err()
        .expect("refused");
    assert!(
        error.contains("keys.release") && error.contains("PUBLIC KEY"),
        "{error}"
    );
    let missing = Keys::load(&BTreeMap::from([(
        "ci".to_string(),
        dir.path().join("none"),
    )]))
    .err()
    .expect("refused");
    assert!(missing.contains("cannot read"), "{missing}");
}

#[test]
fn a_payload_counts_for_its_digest_and_repository_only() {
    let ok = payload("sha256:aa", "127.0.0.1:5000/prod/app:v1");
    assert_eq!(payload_names(&ok, "sha256:aa", "prod/app"), Ok(()));
    let no_host = payload("sha256:aa", "prod/app");
    assert_eq!(payload_names(&no_host, "sha256:aa", "prod/app"), Ok(()));
    let by_digest = payload("sha256:aa", "registry.example.com/prod/app@sha256:aa");
    assert_eq!(payload_names(&by_digest, "sha256:aa", "prod/app"), Ok(()));
    assert!(
        payload_names(&ok, "sha256:bb", "prod/app").is_err_and(|e| e.contains("signs sha256:aa"))
    );
    assert!(payload_names(&ok, "sha256:aa", "prod/other").is_err_and(|e| e.contains("prod/app")));
    for (bad, says) in [
        (r#"{"critical":{}}"#, "exactly `critical` and `optional`"),
        (
            r#"{"critical":{"type":"x","image":{},"identity":{}},"optional":null}"#,
            "cosign container image signature",
        ),
        (
            r#"{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha256:aa"},"identity":{"docker-reference":"prod/app"},"extra":1},"optional":null}"#,
            "exactly `type`",
        ),
        (
            r#"{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha256:aa"},"identity":{"docker-reference":"prod/app"}},"optional":{"timestamp":"now"}}"#,
            "timestamp",
        ),
        ("not json", "not JSON"),
    ] {
        let error = payload_names(bad.as_bytes(), "sha256:aa", "prod/app").expect_err(bad);
        assert!(error.contains(says), "{bad}: {error}");
    }
}

#[test]
fn the_signature_tag_is_named_by_the_digest() {
    assert_eq!(tag_of("sha256:abc").as_deref(), Some("sha256-abc.sig"));
    assert_eq!(tag_of("latest"), None);
}
