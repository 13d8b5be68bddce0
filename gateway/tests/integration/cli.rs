//! `portcullis policy eval`, run as a user would from the shell.

use crate::util::{ACL_DESIGN_EXAMPLE, wasm};
use std::process::Command;

fn eval(args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "eval"])
        .args(args)
        .output()
        .expect("portcullis runs");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn eval_prints_one_decision_per_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("acl.json");
    std::fs::write(&settings, ACL_DESIGN_EXAMPLE).expect("write");
    let module = wasm("acl");
    let (code, lines, stderr) = eval(&[
        module.to_str().expect("utf-8 path"),
        "--settings",
        settings.to_str().expect("utf-8 path"),
        "--account",
        "bot",
        "--group",
        "ci",
        "--scope",
        "repository:apps/web:pull,push,delete",
        "--scope",
        "repository:bot/tool:push",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["scope"], "repository:apps/web:pull,push,delete");
    assert_eq!(lines[0]["granted"], serde_json::json!(["pull", "push"]));
    assert_eq!(lines[0]["reason"], "acl rule 3");
    assert_eq!(lines[1]["granted"], serde_json::json!(["push"]));
}

#[test]
fn eval_anonymous_with_an_empty_account() {
    let module = wasm("namespace_owner");
    let (code, lines, _) = eval(&[
        module.to_str().expect("utf-8"),
        "--account",
        "",
        "--scope",
        "repository:a/b:pull",
    ]);
    assert_eq!(code, 0);
    assert_eq!(lines[0]["granted"], serde_json::json!([]));
    assert_eq!(lines[0]["reason"], "anonymous requests get nothing");
}

#[test]
fn eval_reports_faults_and_exits_non_zero() {
    let module = wasm("hostile");
    let (code, lines, _) = eval(&[
        module.to_str().expect("utf-8"),
        "--timeout-ms",
        "20",
        "--scope",
        "repository:hostile/loop:pull",
    ]);
    assert_eq!(code, 1);
    assert_eq!(lines[0]["granted"], serde_json::json!([]));
    assert_eq!(
        lines[0]["error"],
        "policy `hostile` exceeded its 20 ms deadline"
    );
}

#[test]
fn eval_refuses_bad_scopes_and_bad_settings_with_a_message() {
    let module = wasm("acl");
    let module = module.to_str().expect("utf-8");
    let (code, lines, stderr) = eval(&[module, "--scope", "repository:Bad:pull"]);
    assert_eq!((code, lines.len()), (1, 0));
    assert!(
        stderr.contains("invalid scope \"repository:Bad:pull\""),
        "{stderr}"
    );
    let (code, _, stderr) = eval(&[module, "--scope", "repository:a:pull"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("policy `acl`: the policy rejected its settings: invalid settings: missing field `rules`"), "{stderr}");
}
