//! The rules against pulls with the signatures fact gateway mode gathers.

use super::*;
use portcullis_policy::{Operation, Scope};

fn policy() -> SignedImages {
    SignedImages::configure(
        serde_json::from_str(
            r#"{"rules": [{"repositories": "prod/**", "keys": ["ci", "release"]}]}"#,
        )
        .expect("settings"),
    )
    .expect("configures")
}

fn pull(repository: &str) -> Request {
    Request::new(Scope::repository(repository, ["pull"]))
        .account("dev")
        .operation(Operation::new("GET", Kind::Manifest).tag("v1"))
}

#[test]
fn a_pull_needs_a_signature_by_a_named_key() {
    let p = policy();
    let signed = p.authorize(&pull("prod/app").signatures("sha256:aa", ["release"]));
    assert_eq!(signed.granted, ["pull"]);
    assert!(
        signed
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("signed by release"))
    );
    let unsigned = p.authorize(&pull("prod/app").signatures("sha256:aa", Vec::<String>::new()));
    assert!(unsigned.granted.is_empty());
    assert!(
        unsigned
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("no valid signature")),
        "{unsigned:?}"
    );
    let other = p.authorize(&pull("prod/app").signatures("sha256:aa", ["someone"]));
    assert!(other.granted.is_empty());
    assert!(
        other
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("signed by someone only"))
    );
    assert!(
        p.authorize(&pull("prod/app")).granted.is_empty(),
        "no fact: refused"
    );
    assert_eq!(other.rule.as_deref(), Some("1"));
}

#[test]
fn other_repositories_blobs_and_pushes_are_left_to_the_other_policies() {
    let p = policy();
    assert_eq!(p.authorize(&pull("dev/app")).granted, ["pull"]);
    let blob = Request::new(Scope::repository("prod/app", ["pull"]))
        .operation(Operation::new("GET", Kind::Blob).digest("sha256:bb"));
    assert_eq!(p.authorize(&blob).granted, ["pull"]);
    let token = Request::new(Scope::repository("prod/app", ["pull", "push"]));
    assert_eq!(p.authorize(&token).granted, ["pull", "push"]);
    assert_eq!(p.needs(), Needs::SIGNATURES);
    let attachment = format!("sha256-{}.sig", "a".repeat(64));
    let signatures = Request::new(Scope::repository("prod/app", ["pull"]))
        .operation(Operation::new("GET", Kind::Manifest).tag(&attachment));
    assert_eq!(
        p.authorize(&signatures).granted,
        ["pull"],
        "signers and verifiers read them"
    );
    let lookalike = Request::new(Scope::repository("prod/app", ["pull"]))
        .operation(Operation::new("GET", Kind::Manifest).tag("sha256-x.sig"));
    assert!(p.authorize(&lookalike).granted.is_empty());
}

#[test]
fn bad_settings_are_refused_with_the_rule() {
    for (settings, says) in [
        (r#"{"rules": []}"#, "at least one rule"),
        (
            r#"{"rules": [{"repositories": "a", "keys": []}]}"#,
            "rule 1: `keys`",
        ),
        (
            r#"{"rules": [{"repositories": [], "keys": ["k"]}]}"#,
            "rule 1: `repositories`",
        ),
    ] {
        let error = SignedImages::configure(serde_json::from_str(settings).expect("json"))
            .err()
            .expect("refused");
        assert!(error.contains(says), "{settings}: {error}");
    }
}
