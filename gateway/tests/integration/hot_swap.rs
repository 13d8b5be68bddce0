//! Hot swap under load: decisions run on several threads while modules and settings files are
//! replaced (sometimes by broken ones); no decision fails, the new version is seen within a
//! second, and a broken version never serves.

use crate::util::{host, request, wasm};
use portcullis::policy::{Limits, ModuleSource, Policies, PolicySpec, SettingsSource};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PUSHERS: &str =
    r#"{"rules": [{"match": {"account": "alice"}, "actions": ["pull", "push"]}]}"#;
const PULLERS: &str = r#"{"rules": [{"match": {"account": "alice"}, "actions": ["pull"]}]}"#;
const BROKEN_SETTINGS: &str = r#"{"rules": [{"match": {"acount": "alice"}, "actions": ["*"]}]}"#;

/// Replaces a file the way editors and `kubectl` do: write beside it, then rename over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Runs `threads` deciding loops until stopped; each asks alice's push on `alice/app` and
/// records every distinct answer. Any fault or unexpected answer is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    decisions: Arc<AtomicUsize>,
    latest: Arc<Mutex<Vec<String>>>,
    workers: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Load {
    fn start(
        policies: &Arc<Policies>,
        threads: usize,
        allowed: &'static [&'static [&'static str]],
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let decisions = Arc::new(AtomicUsize::new(0));
        let latest = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..threads)
            .map(|_| {
                let (policies, stop, decisions, latest) = (
                    policies.clone(),
                    stop.clone(),
                    decisions.clone(),
                    latest.clone(),
                );
                std::thread::spawn(move || {
                    let req = request("alice", &[], "repository:alice/app:pull,push");
                    while !stop.load(Ordering::Relaxed) {
                        let verdict = policies.current().decide(&req);
                        for answer in &verdict.answers {
                            if let Err(fault) = &answer.outcome {
                                return Err(format!("decision failed: {fault}"));
                            }
                        }
                        if !allowed.iter().any(|a| verdict.granted == *a) {
                            return Err(format!("unexpected answer {:?}", verdict.granted));
                        }
                        *latest.lock().expect("lock") = verdict.granted;
                        decisions.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        Load {
            stop,
            decisions,
            latest,
            workers,
        }
    }

    /// Waits until the deciding threads see `expected`; returns how long that took.
    fn wait_for(&self, expected: &[&str], limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if *self.latest.lock().expect("lock") == expected {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{expected:?} not seen within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker
                .join()
                .expect("worker thread")
                .expect("every decision succeeds");
        }
        self.decisions.load(Ordering::Relaxed)
    }
}

/// The acl policy reading `PUSHERS` from a settings file in a fresh directory.
fn acl_with_settings_file() -> (tempfile::TempDir, std::path::PathBuf, PolicySpec) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("acl.json");
    std::fs::write(&settings, PUSHERS).expect("write");
    let spec = PolicySpec {
        name: "acl".into(),
        module: ModuleSource::File(wasm("acl")),
        settings: SettingsSource::File(settings.clone()),
        limits: Limits::default(),
    };
    (dir, settings, spec)
}

#[test]
fn settings_swaps_under_load_never_fail_a_decision() {
    let (_dir, settings, spec) = acl_with_settings_file();
    let policies = Arc::new(Policies::load(host(), vec![spec]).expect("loads"));
    let _watcher = policies.watch(|_| {}).expect("watch");
    let load = Load::start(&policies, 3, &[&["pull", "push"], &["pull"]]);
    load.wait_for(&["pull", "push"], Duration::from_secs(1));
    let mut slowest = Duration::ZERO;
    for round in 0..10 {
        let (next, expected): (&str, &[&str]) = if round % 2 == 0 {
            (PULLERS, &["pull"])
        } else {
            (PUSHERS, &["pull", "push"])
        };
        // A broken version first: it must never serve, and the good one after it must.
        replace(&settings, BROKEN_SETTINGS.as_bytes());
        std::thread::sleep(Duration::from_millis(150));
        replace(&settings, next.as_bytes());
        slowest = slowest.max(load.wait_for(expected, Duration::from_secs(1)));
    }
    let decisions = load.finish();
    assert!(decisions > 1000, "only {decisions} decisions");
    println!(
        "10 settings swaps under load: {decisions} decisions, slowest swap seen after {slowest:?}"
    );
}

#[test]
fn module_swaps_under_load_keep_the_last_good_version_and_report_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("policy.wasm");
    let owner = std::fs::read(wasm("namespace_owner")).expect("read");
    let read_only = std::fs::read(wasm("read_only")).expect("read");
    std::fs::write(&module, &owner).expect("write");
    let spec = PolicySpec {
        name: "swapped".into(),
        module: ModuleSource::File(module.clone()),
        settings: SettingsSource::Empty,
        limits: Limits::default(),
    };
    let policies = Arc::new(Policies::load(host(), vec![spec]).expect("loads"));
    let first_digest = policies.status()[0].digest.clone();
    let _watcher = policies.watch(|_| {}).expect("watch");
    let load = Load::start(&policies, 3, &[&["pull", "push"], &["pull"]]);
    load.wait_for(&["pull", "push"], Duration::from_secs(1));
    let mut slowest = Duration::ZERO;
    for round in 0..6 {
        // Written in place and truncated half-way: what a slow copy looks like to a watcher.
        std::fs::write(&module, &read_only[..read_only.len() / 2]).expect("write");
        std::thread::sleep(Duration::from_millis(300));
        let status = &policies.status()[0];
        let error = status
            .last_error
            .as_deref()
            .expect("the broken module is reported");
        assert!(
            error.contains("is not a valid WebAssembly component"),
            "{error}"
        );
        let (next, expected): (&[u8], &[&str]) = if round % 2 == 0 {
            (&read_only, &["pull"])
        } else {
            (&owner, &["pull", "push"])
        };
        replace(&module, next);
        slowest = slowest.max(load.wait_for(expected, Duration::from_secs(1)));
    }
    let decisions = load.finish();
    let status = &policies.status()[0];
    assert_eq!(
        status.digest, first_digest,
        "ended on the first module again"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        policies.status()[0].last_error,
        None,
        "a good load clears the error"
    );
    assert!(decisions > 1000, "only {decisions} decisions");
    println!(
        "6 module swaps under load: {decisions} decisions, slowest swap seen after {slowest:?}"
    );
}

#[test]
fn an_unchanged_file_event_keeps_the_same_instance_set() {
    let (_dir, settings, spec) = acl_with_settings_file();
    let policies = Policies::load(host(), vec![spec]).expect("loads");
    let before = policies.current();
    std::fs::write(&settings, PUSHERS).expect("rewrite the same bytes");
    assert!(policies.reload().is_empty());
    assert!(
        Arc::ptr_eq(&before, &policies.current()),
        "same bytes: nothing recompiled"
    );
    std::fs::write(&settings, BROKEN_SETTINGS).expect("write");
    let failures = policies.reload();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].to_string().contains("unknown field `acount`"),
        "{}",
        failures[0]
    );
    assert!(
        Arc::ptr_eq(&before, &policies.current()),
        "a failed load never serves"
    );
}
