//! The rules against requests with the facts gateway mode gathers.

use super::*;
use portcullis_policy::{Operation, Scope};

fn policy(settings: &str) -> ImmutableTags {
    ImmutableTags::configure(serde_json::from_str(settings).expect("settings")).expect("configures")
}

fn releases() -> ImmutableTags {
    policy(
        r#"{"rules": [{"repositories": "releases/**", "tags": ["v*"], "except_groups": ["release-admins"]}]}"#,
    )
}

fn push(tag: &str) -> Request {
    Request::new(Scope::repository("releases/app", ["pull", "push"]))
        .account("ci")
        .operation(Operation::new("PUT", Kind::Manifest).tag(tag))
}

#[test]
fn a_new_tag_is_pushed_and_an_existing_one_is_not_moved() {
    let p = releases();
    let new = p.authorize(&push("v1").tag_digest(None).pushed_digest("sha256:a"));
    assert_eq!(new.granted, ["pull", "push"]);
    let same = p.authorize(
        &push("v1")
            .tag_digest(Some("sha256:a"))
            .pushed_digest("sha256:a"),
    );
    assert_eq!(
        same.granted,
        ["pull", "push"],
        "a CI retry of the same digest"
    );
    let moved = p.authorize(
        &push("v1")
            .tag_digest(Some("sha256:a"))
            .pushed_digest("sha256:b"),
    );
    assert_eq!(moved.granted, ["pull"]);
    assert!(
        moved
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("immutable")),
        "{moved:?}"
    );
    assert_eq!(moved.rule.as_deref(), Some("1"));
    let unknown = p.authorize(&push("v1"));
    assert_eq!(unknown.granted, ["pull"], "no fact: refused");
}

#[test]
fn other_tags_other_repositories_and_the_excepted_group_are_free() {
    let p = releases();
    let latest = p.authorize(
        &push("latest")
            .tag_digest(Some("sha256:a"))
            .pushed_digest("sha256:b"),
    );
    assert_eq!(latest.granted, ["pull", "push"]);
    let elsewhere = Request::new(Scope::repository("dev/app", ["push"]))
        .operation(Operation::new("PUT", Kind::Manifest).tag("v1"))
        .tag_digest(Some("sha256:a"))
        .pushed_digest("sha256:b");
    assert_eq!(p.authorize(&elsewhere).granted, ["push"]);
    let admin = push("v1")
        .groups(["release-admins"])
        .tag_digest(Some("sha256:a"))
        .pushed_digest("sha256:b");
    assert_eq!(p.authorize(&admin).granted, ["pull", "push"]);
}

#[test]
fn deletes_by_tag_and_by_digest_of_an_immutable_tag_are_refused() {
    let p = releases();
    let by_tag = Request::new(Scope::repository("releases/app", ["delete"]))
        .operation(Operation::new("DELETE", Kind::Manifest).tag("v1"))
        .tag_digest(Some("sha256:a"));
    assert!(p.authorize(&by_tag).granted.is_empty());
    let delete = |tags: &[&str]| {
        Request::new(Scope::repository("releases/app", ["delete"]))
            .operation(Operation::new("DELETE", Kind::Manifest).digest("sha256:a"))
            .digest_tags(tags.iter().copied())
    };
    assert!(p.authorize(&delete(&["latest", "v1"])).granted.is_empty());
    assert_eq!(p.authorize(&delete(&["latest"])).granted, ["delete"]);
    assert_eq!(p.authorize(&delete(&[])).granted, ["delete"]);
    let unknown = Request::new(Scope::repository("releases/app", ["delete"]))
        .operation(Operation::new("DELETE", Kind::Manifest).digest("sha256:a"));
    assert!(p.authorize(&unknown).granted.is_empty(), "no fact: refused");
}

#[test]
fn token_requests_and_pulls_are_left_to_the_other_policies() {
    let p = releases();
    let token = Request::new(Scope::repository("releases/app", ["pull", "push"]));
    assert_eq!(p.authorize(&token).granted, ["pull", "push"]);
    let pull = Request::new(Scope::repository("releases/app", ["pull"]))
        .operation(Operation::new("GET", Kind::Manifest).tag("v1"));
    assert_eq!(p.authorize(&pull).granted, ["pull"]);
    assert_eq!(p.needs(), Needs::TAG_DIGEST | Needs::DIGEST_TAGS);
}

#[test]
fn bad_settings_are_refused_with_the_rule() {
    for (settings, says) in [
        (r#"{"rules": []}"#, "at least one rule"),
        (
            r#"{"rules": [{"repositories": [], "tags": "v*"}]}"#,
            "rule 1",
        ),
        (
            r#"{"rules": [{"repositories": "a", "tags": [""]}]}"#,
            "not a pattern",
        ),
    ] {
        let error = ImmutableTags::configure(serde_json::from_str(settings).expect("json"))
            .err()
            .expect("refused");
        assert!(error.contains(says), "{settings}: {error}");
    }
    assert!(
        serde_json::from_str::<Settings>(r#"{"rules": [{"repos": "a", "tags": "v"}]}"#).is_err()
    );
}
