//! The command line (`policy eval`, `check`, `passwd`), run as a user would from the shell.

use crate::util::{ACL_DESIGN_EXAMPLE, wasm};
use portcullis::policy::ModuleSource;
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
    assert_eq!(lines[0]["reason"], "acl rule 3 grants only pull, push");
    assert_eq!(lines[1]["granted"], serde_json::json!(["push"]));
}

#[test]
fn eval_asks_about_a_registry_request_with_its_operation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("tags.json");
    std::fs::write(&settings, r#"{"tags": ["v*"], "groups": ["release"]}"#).expect("write");
    let module = wasm("protected_tags");
    let args = |group: &str| {
        eval(&[
            module.to_str().expect("utf-8 path"),
            "--settings",
            settings.to_str().expect("utf-8 path"),
            "--account",
            "dev",
            "--group",
            group,
            "--request",
            "PUT /v2/apps/web/manifests/v1.2",
            "--request",
            "POST /v2/apps/web/blobs/uploads/?mount=sha256:4d3c5fe3e2f4e3f0d0b6b0b4e0d6c6f5a6e1b9c0d0e0f0a0b0c0d0e0f0a0b0c0&from=base/img",
        ])
    };
    let (code, lines, stderr) = args("devs");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        lines.len(),
        3,
        "one manifest scope, then a mount's two scopes"
    );
    assert_eq!(lines[0]["scope"], "repository:apps/web:pull,push");
    assert_eq!(lines[0]["granted"], serde_json::json!(["pull"]));
    assert_eq!(lines[1]["granted"], serde_json::json!(["pull", "push"]));
    assert_eq!(lines[2]["scope"], "repository:base/img:pull");
    let (_, lines, _) = args("release");
    assert_eq!(lines[0]["granted"], serde_json::json!(["pull", "push"]));
    let (code, _, stderr) = eval(&[
        module.to_str().expect("utf-8 path"),
        "--request",
        "PUT /v2/Bad/manifests/v1",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("invalid repository name \"Bad\""),
        "{stderr}"
    );
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

/// Writes a config dir with the acl policy, its settings and the files the config names.
fn config_dir(acl_settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("policies")).expect("mkdir");
    std::fs::copy(wasm("acl"), root.join("policies/acl.wasm")).expect("copy");
    std::fs::write(root.join("acl.json"), acl_settings).expect("write");
    portcullis::token::generate(root, false).expect("keygen");
    std::fs::write(root.join("htpasswd"), "").expect("write");
    let config = r#"
[token]
issuer = "portcullis"
service = "registry.test"
key = "token.key"
certificate = "token.crt"

[identity]
htpasswd = "htpasswd"

[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings_file = "acl.json"
"#;
    std::fs::write(root.join("portcullis.toml"), config).expect("write");
    dir
}

fn check(dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.join("portcullis.toml"))
        .output()
        .expect("portcullis runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn check_loads_the_config_and_every_policy() {
    let dir = config_dir(ACL_DESIGN_EXAMPLE);
    let (code, stdout, stderr) = check(dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("policy `acl` loaded:"), "{stdout}");
    assert!(stdout.contains("sha256:"), "{stdout}");
}

#[test]
fn check_fails_on_a_policy_that_rejects_its_settings() {
    let dir = config_dir(r#"{"rules": [{"match": {"team": "x"}, "actions": ["*"]}]}"#);
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("policy `acl`: the policy rejected its settings"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `team`"), "{stderr}");
}

#[test]
fn check_names_a_missing_file_and_an_unknown_key() {
    let dir = config_dir(ACL_DESIGN_EXAMPLE);
    std::fs::remove_file(dir.path().join("htpasswd")).expect("rm");
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot read") && stderr.contains("htpasswd"),
        "{stderr}"
    );
    let config = dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace("[identity]", "[identity]\nanonymus = true"),
    )
    .expect("write");
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("unknown field `anonymus`") && stderr.contains("line 9"),
        "{stderr}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/token-server/portcullis.toml");
    let config = portcullis::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.policies[0].name, "acl");
    let settings = std::fs::read_to_string(
        config.policies[0]
            .settings_file
            .as_ref()
            .expect("a settings file"),
    )
    .expect("acl.json is there");
    assert_eq!(settings, ACL_DESIGN_EXAMPLE.to_string() + "\n");
}

#[test]
fn the_compose_and_kubernetes_configs_load_their_policies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for config in [
        "deploy/compose/token-server/portcullis.toml",
        "deploy/compose/gateway/portcullis.toml",
        "deploy/kubernetes/portcullis.toml",
        "deploy/kubernetes-overlay/portcullis.toml",
    ] {
        let config =
            portcullis::config::Config::load(&root.join(config)).unwrap_or_else(|e| panic!("{e}"));
        for mut spec in config.policy_specs() {
            // The image's policy directory is this build's.
            let file = spec
                .module
                .shown()
                .file_stem()
                .expect("a module file")
                .to_string_lossy()
                .into_owned();
            spec.module = ModuleSource::File(wasm(&file));
            let source = spec.read().unwrap_or_else(|e| panic!("{e}"));
            crate::util::host()
                .load(&spec, source)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn the_gateway_example_loads_its_policies() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/gateway/portcullis.toml");
    let config = portcullis::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.upstream.as_ref().map(|u| u.url.as_str()),
        Some("http://127.0.0.1:5002")
    );
    let names: Vec<&str> = config.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["acl", "protected-tags"]);
    for spec in config.policy_specs() {
        let source = spec.read().unwrap_or_else(|e| panic!("{e}"));
        crate::util::host()
            .load(&spec, source)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn check_refuses_unusable_tls_files_and_upstreams() {
    for (extra, expected) in [
        (
            "[upstream]\nurl = \"https://127.0.0.1:5000\"\nca = \"missing-ca.pem\"\n",
            "missing-ca.pem",
        ),
        (
            "[server]\ntls_cert = \"missing.crt\"\ntls_key = \"missing.key\"\n",
            "[server] tls_cert",
        ),
    ] {
        let dir = config_dir(ACL_DESIGN_EXAMPLE);
        let config = dir.path().join("portcullis.toml");
        let text = std::fs::read_to_string(&config).expect("read");
        std::fs::write(&config, format!("{extra}{text}")).expect("write");
        let (code, _, stderr) = check(dir.path());
        assert_eq!(code, 1);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// Runs `serve` with `log` appended to a test config, sends `signals` as soon as it prints
/// its listening line, and returns how it exited and what it wrote to standard error (a
/// pipe, not a terminal).
fn serve_and_signal(log: &str, signals: &[&str]) -> (std::process::Output, String) {
    let dir = config_dir(ACL_DESIGN_EXAMPLE);
    let config = dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{text}{log}"),
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("portcullis runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the listening line");
    assert!(
        line.starts_with("portcullis listening on http://127.0.0.1:"),
        "{line}"
    );
    for signal in signals {
        let status = Command::new("kill")
            .args([*signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
    let out = child.wait_with_output().expect("exits");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

#[test]
fn serve_handles_sighup_and_sigterm_from_its_first_line_and_logs_json() {
    // At once, as a script reacting to the line would: both are handled, neither kills.
    let (out, stderr) = serve_and_signal("[log]\nformat = \"json\"\n", &["-HUP", "-TERM"]);
    assert!(out.status.success(), "{:?}", out.status);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "shutting down" && l["level"] == "INFO"),
        "{stderr}"
    );
}

/// Issue 12, review item 7: text logs carried ANSI colour codes into files and pipes.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let (out, stderr) = serve_and_signal("", &["-TERM"]);
    assert!(out.status.success(), "{:?}", out.status);
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[test]
fn passwd_refuses_a_cost_that_would_stall_logins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["passwd", "--cost", "18"])
        .arg(&file)
        .arg("alice")
        .output()
        .expect("portcullis runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4..=17"), "{stderr}");
    assert!(!file.exists(), "nothing is written");
}

/// Issue 12, review item 6: `passwd` rewrote a 0600 htpasswd as 0644, readable by everyone.
#[test]
fn passwd_keeps_a_private_file_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    let passwd = |user: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["passwd", "--cost", "4"])
            .arg(&file)
            .arg(user)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("portcullis runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"pw\n")
            .expect("password");
        assert!(child.wait().expect("exits").success());
    };
    let mode = || {
        std::fs::metadata(&file)
            .expect("the file")
            .permissions()
            .mode()
            & 0o7777
    };
    passwd("alice");
    assert_eq!(mode(), 0o600, "a new htpasswd is private");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    passwd("bob");
    assert_eq!(mode(), 0o640, "an existing file keeps its mode");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        text.starts_with("alice:$2b$04$") && text.contains("\nbob:$2b$04$"),
        "{text}"
    );
}

/// The fenced blocks of `language` in a markdown text.
fn fenced<'t>(text: &'t str, language: &str) -> Vec<&'t str> {
    let open = format!("```{language}\n");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let end = body.find("```").unwrap_or(body.len());
        blocks.push(&body[..end]);
        rest = &body[end..];
        rest = rest.get(3..).unwrap_or("");
    }
    blocks
}

/// Issue 23: every config example in the docs loads (a fragment inside a minimal config),
/// and every acl example configures the real acl module: a doc example that no longer
/// parses fails here, not at a reader's.
#[test]
fn every_example_in_the_docs_loads() {
    const MINIMAL_TOKEN: &str =
        "[token]\nissuer = \"i\"\nservice = \"s\"\nkey = \"k.pem\"\ncertificate = \"c.pem\"\n";
    const MINIMAL_POLICY: &str = "[[policy]]\nname = \"p\"\nmodule = \"p.wasm\"\n";
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let dir = tempfile::tempdir().expect("tempdir");
    let acl = crate::util::spec("acl", "acl", portcullis::policy::SettingsSource::Empty);
    let (mut configs, mut settings) = (0, 0);
    let mut pages: Vec<_> = std::fs::read_dir(&docs)
        .expect("docs")
        .map(|entry| entry.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.push(docs.join("../README.md"));
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("a page");
        let name = page
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        for (i, block) in fenced(&text, "toml").into_iter().enumerate() {
            if block.contains("[[case]]") {
                // A fixture file of `policy test`.
                portcullis::policy::fixtures::cases_in(block)
                    .unwrap_or_else(|e| panic!("{name}, toml block {}: {e}\n{block}", i + 1));
                configs += 1;
                continue;
            }
            let mut config = String::new();
            if !block.contains("[token]") {
                config.push_str(MINIMAL_TOKEN);
            }
            config.push_str(block);
            if !block.contains("[[policy]]") {
                config.push('\n');
                config.push_str(MINIMAL_POLICY);
            }
            let file = dir.path().join(format!("{name}-{i}.toml"));
            std::fs::write(&file, &config).expect("write");
            portcullis::config::Config::load(&file)
                .unwrap_or_else(|e| panic!("{name}, toml block {}: {e}\n{block}", i + 1));
            configs += 1;
        }
        for (i, block) in fenced(&text, "json").into_iter().enumerate() {
            // A block of rules (one or several lines of them) or whole settings.
            let trimmed = block.trim();
            let whole = if trimmed.starts_with("{\"rules\"") {
                trimmed.to_string()
            } else if trimmed.starts_with("{\"match\"") {
                let rules: Vec<&str> = trimmed.lines().collect();
                let joined = rules.join("\n").replace("}\n{\"match\"", "},\n{\"match\"");
                format!("{{\"rules\": [{joined}]}}")
            } else {
                continue;
            };
            let mut spec = acl.clone();
            spec.settings = portcullis::policy::SettingsSource::Inline(whole.clone());
            let source = spec.read().expect("the module");
            crate::util::host()
                .load(&spec, source)
                .unwrap_or_else(|e| panic!("{name}, json block {}: {e}\n{whole}", i + 1));
            settings += 1;
        }
    }
    assert!(
        configs >= 10 && settings >= 4,
        "{configs} configs, {settings} settings"
    );
}

/// The terminal `script` (process `parent`) gave its child: the child's standard input.
fn terminal_of_child(parent: u32) -> std::path::PathBuf {
    let started = std::time::Instant::now();
    loop {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .expect("the kernel lists children");
        if let Some(child) = children.split_whitespace().next()
            && let Ok(terminal) = std::fs::read_link(format!("/proc/{child}/fd/0"))
            && terminal.starts_with("/dev/pts")
        {
            return terminal;
        }
        assert!(started.elapsed().as_secs() < 10, "script started no child");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits until `terminal` echoes nothing, as `stty` reads its settings.
fn wait_for_echo_off(terminal: &std::path::Path) {
    let started = std::time::Instant::now();
    loop {
        let out = Command::new("stty")
            .arg("-F")
            .arg(terminal)
            .arg("-a")
            .output()
            .expect("stty runs (coreutils)");
        let settings = String::from_utf8_lossy(&out.stdout);
        if settings.split_whitespace().any(|flag| flag == "-echo") {
            return;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "echo stayed on: {settings}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Issue 25: `passwd` at a terminal (`docker run -it <image> passwd ...`) asks twice and
/// never echoes the password. util-linux's `script` gives it a terminal.
#[test]
fn passwd_at_a_terminal_asks_twice_without_echo() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    let command = format!(
        "{} passwd {} alice",
        env!("CARGO_BIN_EXE_portcullis"),
        file.display()
    );
    // Types each line once its prompt is on the screen and the terminal has echo off: the
    // prompt is written just before echo goes off, and a line typed in between is echoed by
    // the terminal itself (a race the suite once lost on a busy machine).
    let run = |typed: &str| {
        use std::io::Read;
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script runs (util-linux)");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (screen_tx, screen_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 256];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 || screen_tx.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut screen = String::new();
        let wait_for = |prompt: &str, screen: &mut String| {
            let started = std::time::Instant::now();
            while !screen.contains(prompt) {
                assert!(started.elapsed().as_secs() < 10, "no {prompt:?}: {screen}");
                if let Ok(bytes) = screen_rx.recv_timeout(std::time::Duration::from_millis(100)) {
                    screen.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        };
        let terminal = terminal_of_child(child.id());
        for (line, prompt) in typed.lines().zip(["password for alice:", "again:"]) {
            wait_for(prompt, &mut screen);
            wait_for_echo_off(&terminal);
            stdin
                .write_all(format!("{line}\n").as_bytes())
                .expect("typed");
        }
        drop(stdin);
        let status = child.wait().expect("waits");
        while let Ok(bytes) = screen_rx.recv_timeout(std::time::Duration::from_millis(200)) {
            screen.push_str(&String::from_utf8_lossy(&bytes));
        }
        (status.success(), screen)
    };
    let (ok, screen) = run("s3cret-typed\ns3cret-typed\n");
    assert!(ok, "{screen}");
    assert!(
        screen.contains("password for alice:") && screen.contains("again:"),
        "{screen}"
    );
    assert!(
        !screen.contains("s3cret-typed"),
        "the password was echoed: {screen}"
    );
    let users = portcullis::identity::Htpasswd::load(&file).expect("written");
    assert!(users.verify("alice", "s3cret-typed"));
    let (ok, screen) = run("one\nanother\n");
    assert!(!ok && screen.contains("differ"), "{screen}");
    assert!(
        portcullis::identity::Htpasswd::load(&file)
            .expect("kept")
            .verify("alice", "s3cret-typed"),
        "nothing changed"
    );
}

/// Issue 20, step 1: `policy new` writes a crate that tests and builds outside this
/// repository with one command each, and whose module the gateway's host loads and asks; a
/// changed rule fails the test that covers it.
#[test]
fn a_new_policy_tests_builds_and_decides_outside_the_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sdk = repo.join("policy-sdk");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "new", "team-rules", "--dir"])
        .arg(dir.path())
        .arg("--sdk")
        .arg(&sdk)
        .output()
        .expect("portcullis runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.path().join("team-rules");
    // Its target directory is one kept between runs of the suite (a link where cargo and the
    // fixtures expect target/): the first build compiles the SDK's dependencies once.
    let target = repo.join("target/scaffold");
    std::fs::create_dir_all(&target).expect("target");
    std::os::unix::fs::symlink(&target, root.join("target")).expect("target link");
    let cargo = |args: &[&str]| {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(&root)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("cargo runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, said) = cargo(&["test"]);
    assert!(ok && said.contains("3 passed"), "{said}");
    let (ok, said) = cargo(&["wasm"]);
    assert!(ok, "{said}");
    let module = target.join("wasm32-unknown-unknown/release/team_rules.wasm");
    let settings = root.join("settings.json");
    let (code, lines, stderr) = eval(&[
        module.to_str().expect("utf-8"),
        "--settings",
        settings.to_str().expect("utf-8"),
        "--account",
        "ci",
        "--scope",
        "repository:team/app:pull,push",
        "--scope",
        "repository:prod/app:pull,push",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines[0]["granted"], serde_json::json!(["pull", "push"]));
    assert_eq!(lines[1]["granted"], serde_json::json!(["pull"]));
    let fixtures = || {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["policy", "test", "fixtures.toml"])
            .current_dir(&root)
            .output()
            .expect("portcullis runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, said) = fixtures();
    assert!(ok && said.ends_with("3 passed, 0 failed\n"), "{said}");

    // A rule changed by mistake: protected repositories no longer protected. The native
    // test and the fixture that cover it fail, and only they.
    let lib = root.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).expect("lib.rs");
    std::fs::write(&lib, text.replace("&& !protected", "")).expect("edited");
    let (ok, said) = cargo(&["test"]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("protected_repositories_are_pulled_only ... FAILED")
            && said.contains("2 passed; 1 failed"),
        "{said}"
    );
    let (ok, said) = cargo(&["wasm"]);
    assert!(ok, "{said}");
    let (ok, said) = fixtures();
    assert!(!ok, "{said}");
    assert!(
        said.contains("a protected repository is pulled only ... FAILED")
            && said.contains("granted: expected [pull], got [pull, push]")
            && said.ends_with("2 passed, 1 failed\n"),
        "{said}"
    );
}

/// Issue 20, step 3: `policy test` runs fixtures through the production host and
/// composition: granted actions, the policy that withheld, a reason glob, gateway
/// operations; it names each failing case with expected against got, lists the acl rules no
/// case reached, and refuses a fixture file it cannot read, naming the line.
#[test]
fn policy_test_runs_fixtures_as_served_and_says_what_differs() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("acl.json"), ACL_DESIGN_EXAMPLE).expect("acl.json");
    let fixtures = dir.path().join("fixtures.toml");
    let write = |cases: &str| {
        std::fs::write(
            &fixtures,
            format!(
                "[[policy]]\nname = \"acl\"\nmodule = {:?}\nsettings_file = \"acl.json\"\n\n\
                 [[policy]]\nname = \"protected-tags\"\nmodule = {:?}\n\
                 settings = {{ tags = [\"v*\"], groups = [\"release\"] }}\n\n{cases}",
                wasm("acl").display().to_string(),
                wasm("protected_tags").display().to_string(),
            ),
        )
        .expect("fixtures");
    };
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["policy", "test"])
            .arg(&fixtures)
            .output()
            .expect("portcullis runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    write(
        r#"
[[case]]
name = "admin does anything"
account = "admin"
scope = "repository:any/thing:pull,push,delete"
granted = ["pull", "push", "delete"]
reason = "acl rule 1"

[[case]]
name = "alice pushes her own"
account = "alice"
scope = "repository:alice/app:pull,push"
granted = ["pull", "push"]

[[case]]
name = "a release tag is the release group's"
account = "alice"
scope = "repository:alice/app:pull,push"
operation = { method = "PUT", kind = "manifest", tag = "v1.0" }
granted = ["pull"]
denied_by = "protected-tags"

[[case]]
name = "a mistaken expectation"
account = "bob"
scope = "repository:alice/app:pull"
granted = ["pull"]
denied_by = "protected-tags"
"#,
    );
    let (code, out, err) = run();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("a release tag is the release group's ... ok"),
        "{out}"
    );
    assert!(out.contains("a mistaken expectation ... FAILED"), "{out}");
    assert!(out.contains("granted: expected [pull], got []"), "{out}");
    assert!(
        out.contains("denied_by: expected protected-tags, got acl"),
        "{out}"
    );
    assert!(out.contains("no case reached acl's rule 3, 4"), "{out}");
    assert!(out.ends_with("3 passed, 1 failed\n"), "{out}");

    write("[[case]]\nname = \"x\"\nscope = \"repository:a:pull\"\ngranted = []\ngrants = []\n");
    let (code, _, err) = run();
    assert_eq!(code, Some(1));
    assert!(
        err.contains("unknown field `grants`") && err.contains("line"),
        "{err}"
    );
}

/// A reader that stops early (`portcullis policy eval ... | head -1`) is no error and never
/// a panic: the reports are written whole.
#[test]
fn a_reader_that_stops_early_is_no_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("acl.json");
    std::fs::write(&settings, ACL_DESIGN_EXAMPLE).expect("write");
    let scopes: Vec<String> = (0..2000).map(|i| format!("repository:r{i}:pull")).collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(["policy", "eval"])
        .arg(wasm("acl"))
        .arg("--settings")
        .arg(&settings)
        .args(["--account", "admin"]);
    for scope in &scopes {
        command.args(["--scope", scope]);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("portcullis runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// Issue 21: the clock is a fact the fixtures give: a time-bound acl rule grants before its
/// end and refuses after, and `immutable-tags` decides with the tag facts a case states.
#[test]
fn fixtures_give_the_time_and_the_facts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = dir.path().join("fixtures.toml");
    std::fs::write(
        &fixtures,
        format!(
            r#"[[policy]]
name = "acl"
module = {acl:?}
settings = {{ rules = [{{ match = {{ account = "contractor" }}, actions = ["pull"], until = "2027-02-01T00:00:00Z" }}, {{ match = {{ account = "ci" }}, actions = ["*"] }}] }}

[[policy]]
name = "immutable-tags"
module = {immutable:?}
settings = {{ rules = [{{ repositories = "releases/**", tags = "v*" }}] }}

[[case]]
name = "the contractor pulls in January"
account = "contractor"
scope = "repository:releases/app:pull"
time = "2027-01-31T23:59:59Z"
granted = ["pull"]
reason = "acl rule 1 (until 2027-02-01T00:00:00Z)"

[[case]]
name = "and not in February"
account = "contractor"
scope = "repository:releases/app:pull"
time = "2027-02-01T00:00:00Z"
granted = []
denied_by = "acl"

[[case]]
name = "a moved release tag"
account = "ci"
scope = "repository:releases/app:pull,push"
operation = {{ method = "PUT", kind = "manifest", tag = "v1" }}
tag_digest = "sha256:aa"
pushed_digest = "sha256:bb"
granted = ["pull"]
denied_by = "immutable-tags"

[[case]]
name = "a new release tag"
account = "ci"
scope = "repository:releases/app:pull,push"
operation = {{ method = "PUT", kind = "manifest", tag = "v2" }}
tag_digest = "absent"
pushed_digest = "sha256:bb"
granted = ["pull", "push"]
"#,
            acl = wasm("acl").display().to_string(),
            immutable = wasm("immutable_tags").display().to_string(),
        ),
    )
    .expect("fixtures");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "test"])
        .arg(&fixtures)
        .output()
        .expect("portcullis runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("4 passed, 0 failed"), "{said}");
}
