//! Shared helpers: locating the policies built by `cargo policies`, building specs and requests.

use portcullis::policy::{
    Account, Host, Limits, LoadedPolicy, ModuleSource, PolicySpec, Request, SettingsSource,
};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The component `cargo policies` built for `crate_name` (underscores, as cargo names it).
pub fn wasm(crate_name: &str) -> PathBuf {
    let path = target().join(format!("wasm32-unknown-unknown/release/{crate_name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo policies` before the tests",
        path.display()
    );
    path
}

/// The workspace's target directory.
pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A policy in another language, built by scripts/polyglot.sh.
pub fn polyglot(name: &str) -> PathBuf {
    let path = target().join(format!("polyglot/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/polyglot.sh before the tests",
        path.display()
    );
    path
}

/// One host for the whole test binary, as in the gateway.
pub fn host() -> Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new().expect("the wasm engine starts"))
        .clone()
}

pub fn spec(name: &str, crate_name: &str, settings: SettingsSource) -> PolicySpec {
    PolicySpec {
        name: name.to_string(),
        module: ModuleSource::File(wasm(crate_name)),
        settings,
        limits: Limits::default(),
    }
}

pub fn load(spec: &PolicySpec) -> LoadedPolicy {
    let source = spec.read().expect("policy files are readable");
    host().load(spec, source).unwrap_or_else(|e| panic!("{e}"))
}

/// `repository:<name>:<actions>` asked by `account` ("" = anonymous) in `groups`.
pub fn request(account: &str, groups: &[&str], scope: &str) -> Request {
    let scope: portcullis::scope::Scope = scope.parse().expect("test scopes are valid");
    let account = if account.is_empty() {
        Account::anonymous()
    } else {
        Account::user(account, groups.iter().map(|g| g.to_string()).collect())
    };
    Request::new(account, (&scope).into(), "registry.test")
}

pub const ACL_DESIGN_EXAMPLE: &str = r#"{"rules": [
  {"match": {"account": "admin"}, "actions": ["*"]},
  {"match": {"account": "/.+/", "name": "${account}/*"}, "actions": ["pull", "push", "delete"]},
  {"match": {"group": "ci", "name": "apps/*"}, "actions": ["pull", "push"]},
  {"match": {"account": "", "name": "public/*"}, "actions": ["pull"]}
]}"#;
