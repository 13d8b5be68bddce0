//! One decision through each shipped policy, on a configured pooled instance (the cost a
//! token or gateway request pays per scope) and on a fresh one (what the first request after
//! a swap pays). Needs `cargo policies` and scripts/polyglot.sh first.

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::policy::{
    Account, Host, Limits, LoadedPolicy, PolicySet, PolicySpec, Request, SettingsSource,
};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

fn load(host: &Host, crate_name: &str, settings: SettingsSource) -> LoadedPolicy {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    // The Python and JavaScript twins come from scripts/polyglot.sh.
    let module = match crate_name {
        "namespace_owner_py" | "namespace_owner_js" => {
            target.join(format!("polyglot/{crate_name}.wasm"))
        }
        _ => target.join(format!("wasm32-unknown-unknown/release/{crate_name}.wasm")),
    };
    let spec = PolicySpec {
        name: crate_name.into(),
        module: portcullis::policy::ModuleSource::File(module),
        settings,
        limits: Limits::default(),
    };
    let source = spec
        .read()
        .unwrap_or_else(|e| panic!("{e} (run `cargo policies`)"));
    host.load(&spec, source).unwrap_or_else(|e| panic!("{e}"))
}

/// 50 rules in the style of a company registry: one namespace per team, the last rule the
/// one that matches, so every rule is tried.
fn fifty_rules() -> String {
    let mut rules: Vec<String> = (0..49)
        .map(|i| {
            format!(
                r#"{{"match": {{"group": "team-{i}", "name": "team-{i}/**"}}, "actions": ["pull", "push"]}}"#
            )
        })
        .collect();
    rules
        .push(r#"{"match": {"account": "/.+/", "name": "${account}/*"}, "actions": ["*"]}"#.into());
    format!(r#"{{"rules": [{}]}}"#, rules.join(",\n"))
}

fn request(scope: &str) -> Request {
    let scope: portcullis::scope::Scope = scope.parse().unwrap_or_else(|e| panic!("{e}"));
    Request::new(
        Account::user("alice", vec!["dev".into(), "ops".into()]),
        (&scope).into(),
        "registry",
    )
}

/// Each shipped policy with the settings it is benchmarked under.
fn shipped() -> Vec<(&'static str, &'static str, SettingsSource)> {
    vec![
        (
            "acl, design example",
            "acl",
            SettingsSource::Inline(
                r#"{"rules": [
  {"match": {"account": "admin"}, "actions": ["*"]},
  {"match": {"account": "/.+/", "name": "${account}/*"}, "actions": ["pull", "push", "delete"]},
  {"match": {"group": "ci", "name": "apps/*"}, "actions": ["pull", "push"]},
  {"match": {"account": "", "name": "public/*"}, "actions": ["pull"]}
]}"#
                .into(),
            ),
        ),
        (
            "acl 50 rules, last matches",
            "acl",
            SettingsSource::Inline(fifty_rules()),
        ),
        ("namespace-owner", "namespace_owner", SettingsSource::Empty),
        (
            "namespace-owner in Python",
            "namespace_owner_py",
            SettingsSource::Empty,
        ),
        (
            "namespace-owner in JavaScript",
            "namespace_owner_js",
            SettingsSource::Empty,
        ),
        ("read-only", "read_only", SettingsSource::Empty),
        (
            "protected-tags",
            "protected_tags",
            SettingsSource::Inline(r#"{"tags": ["v*"], "groups": ["release"]}"#.into()),
        ),
    ]
}

fn decisions(c: &mut Criterion) {
    let host = Host::new().unwrap_or_else(|e| panic!("{e}"));
    let alice_app = request("repository:alice/app:pull,push");
    for (label, crate_name, settings) in shipped() {
        let policy = load(&host, crate_name, settings.clone());
        assert!(policy.authorize(&alice_app).is_ok(), "{label} faulted");
        c.bench_function(&format!("{label}, reused instance"), |b| {
            b.iter(|| policy.authorize(black_box(&alice_app)))
        });
        // The module is compiled once and cached by digest, as after a settings swap.
        c.bench_function(&format!("{label}, fresh instance"), |b| {
            b.iter(|| load(&host, crate_name, settings.clone()).authorize(black_box(&alice_app)))
        });
    }
    let acl = Arc::new(load(&host, "acl", SettingsSource::Inline(fifty_rules())));
    assert_eq!(
        acl.authorize(&alice_app).map(|d| d.granted).ok(),
        Some(vec!["pull".to_string(), "push".to_string()])
    );
    let read_only = Arc::new(load(&host, "read_only", SettingsSource::Empty));
    let set = PolicySet::new(vec![acl, read_only]);
    c.bench_function("set: acl 50 rules + read-only, reused", |b| {
        b.iter(|| set.decide(black_box(&alice_app)))
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
