//! One decision through the shipped policies on configured (pooled) instances: the cost a
//! token or gateway request pays per scope. Needs `cargo policies` first.

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::policy::{
    Account, Host, Limits, LoadedPolicy, PolicySet, PolicySpec, Request, SettingsSource,
};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

fn load(host: &Host, crate_name: &str, settings: SettingsSource) -> LoadedPolicy {
    let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/wasm32-unknown-unknown/release/{crate_name}.wasm"
    ));
    let spec = PolicySpec {
        name: crate_name.into(),
        module,
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

fn decisions(c: &mut Criterion) {
    let host = Host::new().unwrap_or_else(|e| panic!("{e}"));
    let acl = Arc::new(load(&host, "acl", SettingsSource::Inline(fifty_rules())));
    let read_only = Arc::new(load(&host, "read_only", SettingsSource::Empty));
    let owner = load(&host, "namespace_owner", SettingsSource::Empty);
    let last_rule = request("repository:alice/app:pull,push");
    assert_eq!(
        acl.authorize(&last_rule).map(|d| d.granted).ok(),
        Some(vec!["pull".to_string(), "push".to_string()])
    );

    c.bench_function("acl 50 rules, last matches", |b| {
        b.iter(|| acl.authorize(black_box(&last_rule)))
    });
    c.bench_function("namespace-owner", |b| {
        b.iter(|| owner.authorize(black_box(&last_rule)))
    });
    let set = PolicySet::new(vec![acl, read_only]);
    c.bench_function("set: acl 50 rules + read-only", |b| {
        b.iter(|| set.decide(black_box(&last_rule)))
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
