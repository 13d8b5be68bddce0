//! Native tests of the protected-tags rules.

use super::*;
use portcullis_policy::{Operation, Scope};

fn policy(json: &str) -> ProtectedTags {
    portcullis_policy::__private::configure::<ProtectedTags>(json).expect("valid settings")
}

fn manifest_put(repo: &str, tag: &str, user: &str, groups: &[&str]) -> Request {
    Request::new(Scope::repository(repo, ["pull", "push"]))
        .account(user)
        .groups(groups.iter().copied())
        .operation(Operation::new("PUT", Kind::Manifest).tag(tag))
}

const RELEASES: &str = r#"{"tags": ["v*", "latest"], "groups": ["release"]}"#;

#[test]
fn only_the_groups_push_protected_tags() {
    let p = policy(RELEASES);
    let dev = p.authorize(&manifest_put("apps/web", "v1.2", "dev", &["devs"]));
    assert_eq!(dev.granted, ["pull"]);
    assert!(
        dev.reason
            .as_deref()
            .unwrap_or("")
            .contains("\"v1.2\" is protected")
    );
    assert_eq!(
        p.authorize(&manifest_put("apps/web", "latest", "dev", &[]))
            .granted,
        ["pull"]
    );
    assert_eq!(
        p.authorize(&manifest_put("apps/web", "v1.2", "rm", &["release"]))
            .granted,
        ["pull", "push"]
    );
}

#[test]
fn other_tags_digests_and_blobs_are_untouched() {
    let p = policy(RELEASES);
    assert_eq!(
        p.authorize(&manifest_put("a/b", "dev-v1", "dev", &[]))
            .granted,
        ["pull", "push"]
    );
    let by_digest = Request::new(Scope::repository("a/b", ["pull", "push"]))
        .account("dev")
        .operation(Operation::new("PUT", Kind::Manifest).digest("sha256:00"));
    assert_eq!(p.authorize(&by_digest).granted, ["pull", "push"]);
    let upload = Request::new(Scope::repository("a/b", ["pull", "push"]))
        .account("dev")
        .operation(Operation::new("POST", Kind::Upload));
    assert_eq!(p.authorize(&upload).granted, ["pull", "push"]);
    // Without an operation (a token request) nothing is known about tags.
    let token = Request::new(Scope::repository("a/b", ["pull", "push", "delete"])).account("dev");
    assert_eq!(p.authorize(&token).granted, ["pull", "push", "delete"]);
}

#[test]
fn deleting_a_protected_tag_and_wildcard_actions_are_guarded() {
    let p = policy(RELEASES);
    let delete = Request::new(Scope::repository("a/b", ["delete"]))
        .account("dev")
        .operation(Operation::new("DELETE", Kind::Manifest).tag("v3"));
    assert!(p.authorize(&delete).granted.is_empty());
    let star = Request::new(Scope::repository("a/b", ["*", "pull"]))
        .account("dev")
        .operation(Operation::new("PUT", Kind::Manifest).tag("latest"));
    assert_eq!(p.authorize(&star).granted, ["pull"]);
}

#[test]
fn repositories_limit_the_protection() {
    let p = policy(r#"{"tags": ["v?"], "groups": ["release"], "repositories": ["apps/**"]}"#);
    assert_eq!(
        p.authorize(&manifest_put("apps/x/y", "v1", "dev", &[]))
            .granted,
        ["pull"]
    );
    assert_eq!(
        p.authorize(&manifest_put("apps/x/y", "v10", "dev", &[]))
            .granted,
        ["pull", "push"]
    );
    assert_eq!(
        p.authorize(&manifest_put("team/x", "v1", "dev", &[]))
            .granted,
        ["pull", "push"]
    );
}

#[test]
fn globs_are_literal_outside_wildcards() {
    let p = policy(r#"{"tags": ["1.0"]}"#);
    assert_eq!(
        p.authorize(&manifest_put("a", "1x0", "dev", &[])).granted,
        ["pull", "push"]
    );
    // No groups: nobody may write the tag.
    assert_eq!(
        p.authorize(&manifest_put("a", "1.0", "admin", &["admins"]))
            .granted,
        ["pull"]
    );
}

#[test]
fn bad_settings_are_load_errors() {
    let err = |json: &str| {
        portcullis_policy::__private::configure::<ProtectedTags>(json)
            .err()
            .expect("a load error")
    };
    assert!(err(r#"{"tags": []}"#).contains("at least one tag"));
    assert!(err(r#"{"tags": [""]}"#).contains("`tags`: pattern \"\""));
    assert!(err(r#"{"tags": ["v*"], "group": ["x"]}"#).contains("unknown field"));
}
