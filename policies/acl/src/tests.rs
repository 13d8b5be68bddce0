//! Native tests of the acl rule language.

use super::*;
use portcullis_policy::Scope;

fn acl(json: &str) -> Acl {
    match portcullis_policy::__private::configure::<Acl>(json) {
        Ok(acl) => acl,
        Err(e) => panic!("settings should load: {e}"),
    }
}

fn load_error(json: &str) -> String {
    match portcullis_policy::__private::configure::<Acl>(json) {
        Ok(_) => panic!("settings should fail to load: {json}"),
        Err(e) => e,
    }
}

fn repo(name: &str, actions: &[&str]) -> Request {
    Request::new(Scope::repository(name, actions.iter().copied()))
}

const DESIGN_EXAMPLE: &str = r#"{"rules": [
  {"match": {"account": "admin"}, "actions": ["*"]},
  {"match": {"account": "/.+/", "name": "${account}/*"}, "actions": ["pull", "push", "delete"]},
  {"match": {"group": "ci", "name": "apps/*"}, "actions": ["pull", "push"]},
  {"match": {"account": "", "name": "public/*"}, "actions": ["pull"]}
]}"#;

#[test]
fn design_example_admin_gets_everything_requested() {
    let acl = acl(DESIGN_EXAMPLE);
    let d = acl.authorize(&repo("any/thing", &["pull", "push", "delete"]).account("admin"));
    assert_eq!(d.granted, ["pull", "push", "delete"]);
    let d = acl.authorize(&Request::new(Scope::catalog()).account("admin"));
    assert_eq!(d.granted, ["*"]);
}

#[test]
fn design_example_users_own_their_namespace_only() {
    let acl = acl(DESIGN_EXAMPLE);
    let alice = |name: &str| repo(name, &["pull", "push"]).account("alice");
    assert_eq!(acl.authorize(&alice("alice/app")).granted, ["pull", "push"]);
    assert!(acl.authorize(&alice("bob/app")).granted.is_empty());
    // `*` stops at `/`: a nested repository is not in the namespace rule.
    assert!(acl.authorize(&alice("alice/deep/app")).granted.is_empty());
    // A name that merely starts with the account is not the namespace.
    assert!(acl.authorize(&alice("alicex/app")).granted.is_empty());
}

#[test]
fn design_example_groups_and_anonymous() {
    let acl = acl(DESIGN_EXAMPLE);
    let ci = repo("apps/web", &["pull", "push", "delete"])
        .account("robot")
        .groups(["ci"]);
    assert_eq!(acl.authorize(&ci).granted, ["pull", "push"]);
    let anon = repo("public/base", &["pull", "push"]);
    assert_eq!(acl.authorize(&anon).granted, ["pull"]);
    assert!(
        acl.authorize(&repo("apps/web", &["pull"]))
            .granted
            .is_empty()
    );
    // An authenticated user is not anonymous: the public rule matches account "" only.
    let d = acl.authorize(&repo("public/base", &["pull"]).account("carol"));
    assert!(d.granted.is_empty());
    assert_eq!(d.reason.as_deref(), Some("no acl rule matched"));
}

#[test]
fn first_matching_rule_decides_even_when_a_later_one_grants_more() {
    let acl = acl(r#"{"rules": [
        {"match": {"name": "frozen/**"}, "actions": [], "comment": "frozen"},
        {"match": {}, "actions": ["pull", "push"]}
    ]}"#);
    let d = acl.authorize(&repo("frozen/a/b", &["pull"]).account("u"));
    assert!(d.granted.is_empty());
    assert_eq!(
        d.reason.as_deref(),
        Some("acl rule 1 (frozen) grants nothing")
    );
    assert_eq!(
        acl.authorize(&repo("other", &["push"]).account("u"))
            .granted,
        ["push"]
    );
}

#[test]
fn glob_wildcards() {
    let acl = acl(r#"{"rules": [
        {"match": {"name": "a/*"}, "actions": ["pull"]},
        {"match": {"name": "b/**"}, "actions": ["push"]},
        {"match": {"name": "c/v?"}, "actions": ["delete"]}
    ]}"#);
    let g = |name: &str, action: &str| acl.authorize(&repo(name, &[action])).granted;
    assert_eq!(g("a/x", "pull"), ["pull"]);
    assert!(g("a/x/y", "pull").is_empty());
    assert!(g("a", "pull").is_empty());
    assert_eq!(g("b/x/y/z", "push"), ["push"]);
    assert_eq!(g("c/v1", "delete"), ["delete"]);
    assert!(g("c/v10", "delete").is_empty());
}

#[test]
fn many_stars_do_not_blow_up() {
    let acl =
        acl(r#"{"rules": [{"match": {"name": "**a**a**a**a**a**a**b"}, "actions": ["pull"]}]}"#);
    let name = "a".repeat(250);
    assert!(acl.authorize(&repo(&name, &["pull"])).granted.is_empty());
    let name = format!("{}b", "a".repeat(250));
    assert_eq!(acl.authorize(&repo(&name, &["pull"])).granted, ["pull"]);
}

#[test]
fn regexes_are_anchored() {
    let acl = acl(r#"{"rules": [{"match": {"name": "/team-[0-9]+/"}, "actions": ["pull"]}]}"#);
    assert_eq!(acl.authorize(&repo("team-42", &["pull"])).granted, ["pull"]);
    assert!(
        acl.authorize(&repo("x/team-42", &["pull"]))
            .granted
            .is_empty()
    );
    assert!(
        acl.authorize(&repo("team-42/x", &["pull"]))
            .granted
            .is_empty()
    );
}

#[test]
fn placeholder_values_are_literal_text_not_patterns() {
    let acl = acl(r#"{"rules": [
        {"match": {"name": "${account}/*"}, "actions": ["pull"]},
        {"match": {"name": "/${account}-[a-z]+/"}, "actions": ["push"]}
    ]}"#);
    // An account name holding wildcard or regex characters matches only itself.
    assert!(
        acl.authorize(&repo("x/app", &["pull"]).account("*"))
            .granted
            .is_empty()
    );
    assert!(
        acl.authorize(&repo("ab-app", &["push"]).account(".b"))
            .granted
            .is_empty()
    );
    assert_eq!(
        acl.authorize(&repo("ab-app", &["push"]).account("ab"))
            .granted,
        ["push"]
    );
}

#[test]
fn group_placeholder_tries_each_group() {
    let acl =
        acl(r#"{"rules": [{"match": {"name": "${group}/**"}, "actions": ["pull", "push"]}]}"#);
    let req = repo("team-b/svc", &["push"])
        .account("u")
        .groups(["team-a", "team-b"]);
    assert_eq!(acl.authorize(&req).granted, ["push"]);
    let req = repo("team-c/svc", &["push"])
        .account("u")
        .groups(["team-a", "team-b"]);
    assert!(acl.authorize(&req).granted.is_empty());
    // No groups: `${group}` never matches (not even an empty expansion).
    assert!(
        acl.authorize(&repo("/svc", &["push"]).account("u"))
            .granted
            .is_empty()
    );
}

#[test]
fn lists_type_service_and_ip() {
    let acl = acl(r#"{"rules": [
        {"match": {"account": ["alice", "bob"], "ip": ["10.0.0.0/8", "::1"]}, "actions": ["push"]},
        {"match": {"type": "registry", "service": "reg.example"}, "actions": ["*"]}
    ]}"#);
    let push = |account: &str, ip: Option<&str>| {
        let mut r = repo("x", &["push"]).account(account);
        if let Some(ip) = ip {
            r = r.client_ip(ip);
        }
        acl.authorize(&r).granted
    };
    assert_eq!(push("bob", Some("10.1.2.3")), ["push"]);
    assert_eq!(push("alice", Some("::1")), ["push"]);
    assert!(push("bob", Some("192.168.0.1")).is_empty());
    assert!(push("bob", None).is_empty());
    assert!(push("bob", Some("not an ip")).is_empty());
    assert!(push("carol", Some("10.1.2.3")).is_empty());
    let catalog = Request::new(Scope::catalog()).account("u");
    assert_eq!(
        acl.authorize(&catalog.clone().service("reg.example"))
            .granted,
        ["*"]
    );
    assert!(acl.authorize(&catalog.service("other")).granted.is_empty());
}

#[test]
fn unknown_match_key_is_a_load_error_not_a_match_all() {
    // docker_auth ignores `team` and matches every user with this rule.
    let e = load_error(r#"{"rules": [{"match": {"team": "x"}, "actions": ["*"]}]}"#);
    assert!(e.contains("unknown field `team`"), "{e}");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn load_errors_name_the_rule_and_the_problem() {
    let e = load_error(r#"{"rules": [{"match": {"account": "a"}}]}"#);
    assert!(e.contains("missing field `actions`"), "{e}");
    let e = load_error(
        r#"{"rules": [{"match": {}, "actions": []}, {"match": {"name": "/a(/"}, "actions": []}]}"#,
    );
    assert!(e.starts_with("rule 2, match.name: invalid regex"), "{e}");
    let e = load_error(r#"{"rules": [{"match": {"ip": "10.0.0.0/33"}, "actions": []}]}"#);
    assert!(e.starts_with("rule 1, match.ip:"), "{e}");
    let e = load_error(r#"{"rules": [{"match": {"name": "${labels:team}/*"}, "actions": []}]}"#);
    assert!(e.contains("unknown placeholder ${labels:team}"), "{e}");
    let e = load_error(r#"{"rules": [{"match": {"name": "${account"}, "actions": []}]}"#);
    assert!(e.contains("unclosed"), "{e}");
    let e = load_error(r#"{"rules": [{"match": {}, "actions": ["pull,push"]}]}"#);
    assert!(e.contains("not an action name"), "{e}");
    let e = load_error(r#"{"rules": [{"match": {}, "actions": ["pull"], "extra": 1}]}"#);
    assert!(e.contains("unknown field `extra`"), "{e}");
    let e = load_error(r#"{}"#);
    assert!(e.contains("missing field `rules`"), "{e}");
}

/// Issue 12, review item 6: `**` sliced `value` inside a UTF-8 character, so a user or group
/// named with an accent (`équipe-admins`) trapped the policy and was locked out.
#[test]
fn globs_match_names_with_non_ascii_characters() {
    let acl = acl(r#"{"rules": [
      {"match": {"group": "**-admins"}, "actions": ["*"]},
      {"match": {"account": "**é"}, "actions": ["pull"]}
    ]}"#);
    let admin = repo("apps/web", &["pull", "push"])
        .account("zoé")
        .groups(["équipe-admins"]);
    assert_eq!(acl.authorize(&admin).granted, ["pull", "push"]);
    let zoe = repo("apps/web", &["pull"]).account("zoé");
    assert_eq!(acl.authorize(&zoe).granted, ["pull"]);
    let other = repo("apps/web", &["pull"]).account("łukasz");
    assert!(acl.authorize(&other).granted.is_empty());
}

/// Issue 14: rules on the claims of a workload's token, and `${claim:NAME}` placeholders.
#[test]
fn claims_match_and_expand() {
    let acl = acl(r#"{"rules": [
      {"match": {"claims": {"repository_owner": "acme", "ref": ["refs/heads/main", "refs/tags/v*"]}, "name": "${claim:repository}"}, "actions": ["pull", "push"], "comment": "a job pushes its own repository"},
      {"match": {"claims": {"kubernetes.io/namespace": "ci"}, "name": "ci/**"}, "actions": ["pull"]}
    ]}"#);
    let job = |repository: &str, owner: &str, git_ref: &str| {
        repo(repository, &["pull", "push"])
            .account(&format!("gha:{repository}"))
            .source("https://token.actions.githubusercontent.com")
            .claim("repository", repository)
            .claim("repository_owner", owner)
            .claim("ref", git_ref)
    };
    assert_eq!(
        acl.authorize(&job("acme/app", "acme", "refs/heads/main"))
            .granted,
        ["pull", "push"]
    );
    assert_eq!(
        acl.authorize(&job("acme/app", "acme", "refs/tags/v1.0"))
            .granted,
        ["pull", "push"]
    );
    assert!(
        acl.authorize(&job("acme/app", "acme", "refs/heads/dev"))
            .granted
            .is_empty()
    );
    assert!(
        acl.authorize(&job("acme/app", "evil", "refs/heads/main"))
            .granted
            .is_empty()
    );
    // The placeholder's value is matched literally: a claim holding `*` matches only `*`.
    let sneaky = repo("acme/app", &["pull"])
        .account("gha:x")
        .claim("repository", "acme/*")
        .claim("repository_owner", "acme")
        .claim("ref", "refs/heads/main");
    assert!(acl.authorize(&sneaky).granted.is_empty());
    // No claims at all (an htpasswd user): no claim rule fits.
    assert!(
        acl.authorize(&repo("acme/app", &["pull"]).account("alice"))
            .granted
            .is_empty()
    );
    let pod = repo("ci/tool", &["pull"])
        .account("k8s:ci/builder")
        .claim("kubernetes.io/namespace", "ci");
    assert_eq!(acl.authorize(&pod).granted, ["pull"]);
    let e = load_error(r#"{"rules": [{"match": {"name": "${claim:}"}, "actions": []}]}"#);
    assert!(e.contains("unknown placeholder"), "{e}");
}

/// Pattern pieces the rule language gives meaning to, mixed with arbitrary text.
fn pattern() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    proptest::collection::vec(
        prop_oneof![
            Just("*".to_string()),
            Just("**".to_string()),
            Just("${account}".to_string()),
            Just("${group}".to_string()),
            Just("/".to_string()),
            Just("[".to_string()),
            "\\PC{0,6}",
        ],
        0..5,
    )
    .prop_map(|pieces| pieces.concat())
}

proptest::proptest! {
    #[test]
    fn any_settings_text_loads_or_is_refused(text in "\\PC{0,120}") {
        let _ = portcullis_policy::__private::configure::<Acl>(&text);
    }

    #[test]
    fn any_rule_loads_or_is_refused_and_never_grants_what_was_not_asked(
        account in pattern(),
        name in pattern(),
        regex in "\\PC{0,12}",
        actions in proptest::collection::vec("[a-z*]{1,6}", 0..3),
        asked in proptest::collection::vec("[a-z]{1,6}", 1..3),
        user in "\\PC{0,6}",
        group in "\\PC{0,6}",
        repository in "[a-z]{1,6}(/[a-z]{1,6}){0,2}",
    ) {
        let settings = serde_json::json!({"rules": [
            {"match": {"account": account, "name": name}, "actions": actions},
            {"match": {"account": format!("/{regex}/")}, "actions": ["pull"]},
        ]});
        if let Ok(acl) = portcullis_policy::__private::configure::<Acl>(&settings.to_string()) {
            let request = repo(&repository, &asked.iter().map(String::as_str).collect::<Vec<_>>())
                .account(&user)
                .groups([group.as_str()]);
            let decision = acl.authorize(&request);
            proptest::prop_assert!(decision.granted.iter().all(|g| asked.contains(g)));
        }
    }
}

/// Issue 19: `source` tells the same name from two sources apart (globs as everywhere).
#[test]
fn rules_match_where_the_account_comes_from() {
    let acl = acl(r#"{"rules": [
      {"match": {"source": "ldap", "name": "secret/**"}, "actions": ["pull"], "comment": "the directory's people"},
      {"match": {"source": "https://sso.example.com", "name": "sso/*"}, "actions": ["pull", "push"]},
      {"match": {"source": ["htpasswd", "https://**.example.org"], "name": "shared/*"}, "actions": ["pull"]}
    ]}"#);
    let secret = |source: &str| {
        repo("secret/plans", &["pull"])
            .account("alice")
            .source(source)
    };
    assert_eq!(acl.authorize(&secret("ldap")).granted, ["pull"]);
    assert!(acl.authorize(&secret("htpasswd")).granted.is_empty());
    assert!(
        acl.authorize(&secret("https://sso.example.com"))
            .granted
            .is_empty(),
        "an SSO person named alice is not the directory's alice"
    );
    let sso = repo("sso/app", &["push"])
        .account("alice")
        .source("https://sso.example.com");
    assert_eq!(acl.authorize(&sso).granted, ["push"]);
    let shared = |source: &str| {
        !acl.authorize(&repo("shared/x", &["pull"]).account("bob").source(source))
            .granted
            .is_empty()
    };
    assert!(shared("htpasswd"));
    assert!(shared("https://ci.example.org"));
    assert!(!shared("https://ci.example.net"));
    // Anonymous requests have no source: a source rule never fits them.
    assert!(
        acl.authorize(&repo("shared/x", &["pull"]))
            .granted
            .is_empty()
    );
}

/// Issue 23: a refusal names the rule that matched and what it grants, so a comment written
/// for a grant does not read as the refusal's reason.
#[test]
fn a_partial_grant_says_what_the_rule_grants() {
    let acl = acl(r#"{"rules": [
      {"match": {"name": "team-a/**"}, "actions": ["pull"], "comment": "everyone may pull team-a"},
      {"match": {"name": "b/**"}, "actions": ["pull"]}
    ]}"#);
    let pull = acl.authorize(&repo("team-a/app", &["pull"]).account("u"));
    assert_eq!(
        pull.reason.as_deref(),
        Some("acl rule 1: everyone may pull team-a")
    );
    let push = acl.authorize(&repo("team-a/app", &["pull", "push"]).account("u"));
    assert_eq!(push.granted, ["pull"]);
    assert_eq!(
        push.reason.as_deref(),
        Some("acl rule 1 (everyone may pull team-a) grants only pull")
    );
    let other = acl.authorize(&repo("b/x", &["push"]).account("u"));
    assert_eq!(other.reason.as_deref(), Some("acl rule 2 grants nothing"));
}

/// Issue 23: GitHub's `repository` claim keeps the owner's capitals (`Acme/App`) while
/// repository names are lower case: `${claim:repository|lower}` lets a job push its own.
#[test]
fn a_claim_placeholder_may_be_lower_cased() {
    let acl = acl(r#"{"rules": [
      {"match": {"source": "https://token.actions.githubusercontent.com", "name": "${claim:repository|lower}"}, "actions": ["pull", "push"], "comment": "a job pushes its own repository"}
    ]}"#);
    let job = repo("acme/app", &["pull", "push"])
        .account("gha:acme/app")
        .source("https://token.actions.githubusercontent.com")
        .claim("repository", "Acme/App");
    assert_eq!(acl.authorize(&job).granted, ["pull", "push"]);
    let other = repo("acme/lib", &["push"])
        .account("gha:acme/app")
        .source("https://token.actions.githubusercontent.com")
        .claim("repository", "Acme/App");
    assert!(acl.authorize(&other).granted.is_empty());
    assert!(
        load_error(r#"{"rules": [{"match": {"name": "${claim:|lower}"}, "actions": []}]}"#)
            .contains("claim")
    );
}

/// Issue 21: a rule holds from its `from` to its `until` (exclusive), by the time the
/// gateway gives each decision; outside it, the next rules decide.
#[test]
fn a_rule_holds_within_its_window_only() {
    let windowed = acl(r#"{"rules": [
          {"match": {"account": "alice"}, "actions": ["pull", "push"], "from": "2027-01-01T00:00:00Z", "until": "2027-02-01T00:00:00Z"},
          {"match": {"account": "alice"}, "actions": ["pull"]}
        ]}"#);
    assert_eq!(windowed.needs(), Needs::TIME);
    let january = 1_798_761_600 + 3600; // 2027-01-01T01:00:00Z
    let ask =
        |time: u64| windowed.authorize(&repo("a/b", &["pull", "push"]).account("alice").time(time));
    let inside = ask(january);
    assert_eq!(inside.granted, ["pull", "push"]);
    assert_eq!(
        inside.reason.as_deref(),
        Some("acl rule 1 (from 2027-01-01T00:00:00Z until 2027-02-01T00:00:00Z)")
    );
    assert_eq!(inside.rule.as_deref(), Some("1"));
    assert_eq!(ask(1_798_761_600 - 1).granted, ["pull"], "before from");
    assert_eq!(ask(1_801_440_000).granted, ["pull"], "at until: ended");
    assert_eq!(
        ask(0).granted,
        ["pull"],
        "no time given: the window never holds"
    );
    assert_eq!(
        acl(r#"{"rules": [{"match": {}, "actions": ["pull"]}]}"#).needs(),
        Needs::empty(),
        "no window, no clock"
    );
}

#[test]
fn bad_windows_are_refused_with_the_rule() {
    assert!(
        load_error(r#"{"rules": [{"match": {}, "actions": [], "until": "tomorrow"}]}"#)
            .contains("rule 1, until: \"tomorrow\" is not an RFC 3339 instant")
    );
    assert!(
        load_error(
            r#"{"rules": [{"match": {}, "actions": [], "from": "2027-02-01T00:00:00Z", "until": "2027-01-01T00:00:00Z"}]}"#
        )
        .contains("rule 1: from (2027-02-01T00:00:00Z) is not before until")
    );
}
