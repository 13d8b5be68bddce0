//! Issue 22: policies in Python (componentize-py) and JavaScript (componentize-qjs) run on
//! the production host as the Rust ones do: the Rust namespace-owner's fixtures pass against
//! its two twins, and every answer (granted actions and reason) is the Rust one.

use crate::util::{polyglot, wasm};
use std::path::Path;
use std::process::Command;

const TWINS: [&str; 2] = ["namespace_owner_py", "namespace_owner_js"];

fn portcullis(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .expect("portcullis runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_python_and_javascript_twins_pass_the_rust_policys_fixtures() {
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/namespace-owner/fixtures.toml");
    let text = std::fs::read_to_string(&fixtures).expect("the Rust twin's fixtures");
    let rust = "../../target/wasm32-unknown-unknown/release/namespace_owner.wasm";
    assert!(text.contains(rust));
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = text.matches("[[case]]").count();
    for module in std::iter::once(wasm("namespace_owner")).chain(TWINS.map(polyglot)) {
        let file = dir.path().join("fixtures.toml");
        std::fs::write(&file, text.replace(rust, &module.display().to_string())).expect("fixtures");
        let (ok, said) = portcullis(&["policy", "test", &file.display().to_string()]);
        assert!(ok, "{}: {said}", module.display());
        assert!(
            said.contains(&format!("{cases} passed, 0 failed")),
            "{}: {said}",
            module.display()
        );
    }
}

#[test]
fn every_answer_of_the_twins_is_the_rust_ones() {
    let mut args = vec!["policy".to_string(), "eval".into(), String::new()];
    for scope in [
        "repository:alice/app:pull,push,delete",
        "repository:alice:pull,push",
        "repository:alice-x/app:push",
        "repository:bob/app:*",
        "repository:library/alpine:pull",
        "repository(plugin):alice/app:pull",
        "registry:catalog:*",
    ] {
        args.extend(["--scope".into(), scope.into()]);
    }
    let answers = |module: &Path, account: &str| {
        let mut args = args.clone();
        args[2] = module.display().to_string();
        args.extend([
            "--account".into(),
            account.into(),
            "--group".into(),
            "ci".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, said) = portcullis(&args);
        assert!(ok, "{}: {said}", module.display());
        said
    };
    for account in ["alice", "bob", ""] {
        let rust = answers(&wasm("namespace_owner"), account);
        assert_eq!(rust.lines().count(), 7, "{rust}");
        for twin in TWINS {
            assert_eq!(
                answers(&polyglot(twin), account),
                rust,
                "{twin} as {account:?}"
            );
        }
    }
}

#[test]
fn the_twins_refuse_settings_as_the_rust_policy_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("settings.json");
    std::fs::write(&settings, r#"{"owners": ["alice"]}"#).expect("settings");
    for module in std::iter::once(wasm("namespace_owner")).chain(TWINS.map(polyglot)) {
        let (ok, said) = portcullis(&[
            "policy",
            "eval",
            &module.display().to_string(),
            "--settings",
            &settings.display().to_string(),
            "--scope",
            "repository:a/b:pull",
        ]);
        assert!(!ok, "{} took settings it has no use for", module.display());
        assert!(said.contains("rejected its settings"), "{said}");
    }
}
