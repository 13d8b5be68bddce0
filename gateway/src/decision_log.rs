//! The decision log: one JSON line per authorization decision (who asked what, from where,
//! what each policy said, what was granted), written by a thread of its own so that a slow
//! disk never holds a request. It never holds a password or a token: it is built from the
//! policy request, which has neither.

use crate::policy::{Facts, Outcome, Reference, Request, TagNow};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer at most; past this, lines are dropped and counted.
const QUEUE: usize = 8192;
/// Decisions kept in memory for the console's admins.
const RECENT: usize = 1000;

/// Where decisions go: the log (a file or standard output), and, while the console is on,
/// the last [`RECENT`] kept in memory for its admins.
pub struct DecisionLog {
    lines: Option<SyncSender<String>>,
    keep_recent: AtomicBool,
    recent: Mutex<VecDeque<Arc<serde_json::Value>>>,
}

/// Which door a decision came through.
#[derive(Clone, Copy)]
pub enum Source {
    /// A token request.
    Token,
    /// A registry request in gateway mode.
    Gateway,
    /// The web console reading or deleting for a signed-in person.
    Console,
}

impl DecisionLog {
    /// No decision log.
    pub fn disabled() -> DecisionLog {
        DecisionLog::with(None)
    }

    fn with(lines: Option<SyncSender<String>>) -> DecisionLog {
        DecisionLog {
            lines,
            keep_recent: AtomicBool::new(false),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether the last decisions are kept in memory (while the console is on: building
    /// each entry costs a few microseconds a decision otherwise spared).
    pub fn keep_recent(&self, keep: bool) {
        self.keep_recent.store(keep, Ordering::Relaxed);
        if !keep {
            self.recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// The decisions kept in memory, newest first.
    pub fn recent(&self) -> Vec<Arc<serde_json::Value>> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().rev().cloned().collect()
    }

    /// Appends to `path`, or writes to standard output when `path` is `stdout`. A file that
    /// is moved or deleted (logrotate) is reopened at `path` before the next line.
    pub fn open(path: &Path) -> std::io::Result<DecisionLog> {
        let mut sink = if path == Path::new("stdout") {
            Sink::Stdout(BufWriter::new(std::io::stdout()))
        } else {
            Sink::File(LogFile::open(path)?)
        };
        let (lines, queue) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                while let Ok(line) = queue.recv() {
                    let out = sink.current();
                    let mut ok = writeln!(out, "{line}").is_ok();
                    // Drain what is queued, then flush once.
                    while let Ok(line) = queue.try_recv() {
                        ok &= writeln!(out, "{line}").is_ok();
                    }
                    if !(ok && out.flush().is_ok()) {
                        tracing::error!("cannot write the decision log");
                    }
                }
            })?;
        Ok(DecisionLog::with(Some(lines)))
    }

    /// Queues one decision, with what the shadow set said of it if one is configured; false
    /// when the line had to be dropped (the writer is behind).
    pub fn record(
        &self,
        source: Source,
        request: &Request,
        outcome: &Outcome,
        remembered: bool,
        took: Duration,
        shadow: Option<serde_json::Value>,
    ) -> bool {
        let keep = self.keep_recent.load(Ordering::Relaxed);
        if self.lines.is_none() && !keep {
            return true;
        }
        let mut entry = entry(source, request, outcome, remembered, took);
        if let (Some(shadow), Some(fields)) = (shadow, entry.as_object_mut()) {
            fields.insert("shadow".into(), shadow);
        }
        let sent = match &self.lines {
            Some(lines) => match lines.try_send(entry.to_string()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => true,
        };
        if keep {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Arc::new(entry));
        }
        sent
    }
}

/// Where the writer thread puts lines.
enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File(LogFile),
}

impl Sink {
    /// The writer for the next lines: for a file, the one its path names now.
    fn current(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(out) => out,
            Sink::File(file) => {
                file.follow();
                &mut file.out
            }
        }
    }
}

/// The decision log file and the identity of what was opened, to notice when logrotate
/// moves it away: otherwise every later line would go to the rotated file, and after its
/// deletion to no file at all, while the disk space stays taken.
struct LogFile {
    path: PathBuf,
    out: BufWriter<File>,
    identity: (u64, u64),
    reopen_failed: bool,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let opened = file.metadata()?;
        Ok(LogFile {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            identity: (opened.dev(), opened.ino()),
            reopen_failed: false,
        })
    }

    /// Opens the path again when it no longer names the file being written. If that
    /// fails, lines go on to the moved file rather than nowhere.
    fn follow(&mut self) {
        let moved = std::fs::metadata(&self.path)
            .map_or(true, |now| (now.dev(), now.ino()) != self.identity);
        if !moved {
            return;
        }
        match LogFile::open(&self.path) {
            Ok(reopened) => *self = reopened,
            Err(e) if !self.reopen_failed => {
                self.reopen_failed = true;
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "the decision log was moved and cannot be opened again; writing on to the moved file"
                );
            }
            Err(_) => {}
        }
    }
}

fn entry(
    source: Source,
    request: &Request,
    outcome: &Outcome,
    remembered: bool,
    took: Duration,
) -> serde_json::Value {
    let scope = &request.scope;
    let operation = request.operation.as_ref().map(|op| {
        let (tag, digest) = match &op.reference {
            Some(Reference::Tag(tag)) => (Some(tag.as_str()), None),
            Some(Reference::Digest(digest)) => (None, Some(digest.as_str())),
            None => (None, None),
        };
        serde_json::json!({
            "method": op.method,
            "kind": op.kind.name(),
            "tag": tag,
            "digest": digest,
            "mount_from": op.mount_from,
        })
    });
    let answers = answers(outcome);
    serde_json::json!({
        "id": id(),
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "source": match source {
            Source::Token => "token",
            Source::Gateway => "gateway",
            Source::Console => "console",
        },
        "account": request.account.name,
        "authenticated": request.account.authenticated,
        "groups": request.account.groups,
        "account_source": request.account.source,
        "claims": request.account.claims,
        "client_ip": request.client_ip,
        "scope": format!("{}:{}:{}", scope.type_, scope.name, scope.actions.join(",")),
        "class": scope.class,
        "service": request.service,
        "operation": operation,
        "request_time": request.time,
        "facts": facts(&request.facts),
        "granted": outcome.granted,
        "answers": answers,
        "remembered": remembered,
        "latency_us": u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
    })
}

/// Each policy's part of an outcome, as a line holds it.
pub fn answers(outcome: &Outcome) -> Vec<serde_json::Value> {
    outcome
        .answers
        .iter()
        .map(|said| {
            serde_json::json!({
                "policy": said.policy,
                "digest": said.digest,
                "granted": said.granted,
                "reason": said.reason,
                "rule": said.rule,
                "fault": said.fault.as_ref().map(|(kind, message)| format!("{kind}: {message}")),
            })
        })
        .collect()
}

/// The facts a request carried, as a line holds them (null when none): what `policy replay`
/// gives the policies again.
fn facts(facts: &Facts) -> serde_json::Value {
    if *facts == Facts::none() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "tag_digest": facts.tag_digest.as_ref().map(|now| match now {
            TagNow::Absent => "absent",
            TagNow::At(digest) => digest.as_str(),
        }),
        "pushed_digest": facts.pushed_digest,
        "digest_tags": facts.digest_tags,
        "signatures": facts.signatures.as_ref().map(|s| serde_json::json!({
            "digest": s.digest,
            "keys": s.keys,
        })),
    })
}

/// The facts of a line (see [`facts`]); None when they are malformed.
pub fn facts_of(value: Option<&serde_json::Value>) -> Option<Facts> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Some(Facts::none());
    };
    let text = |key: &str| value.get(key).filter(|v| !v.is_null()).map(|v| v.as_str());
    let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    Some(Facts {
        tag_digest: match text("tag_digest") {
            None => None,
            Some(Some("absent")) => Some(TagNow::Absent),
            Some(Some(digest)) => Some(TagNow::At(digest.to_string())),
            Some(None) => return None,
        },
        pushed_digest: match text("pushed_digest") {
            None => None,
            Some(digest) => Some(digest?.to_string()),
        },
        digest_tags: match value.get("digest_tags").filter(|v| !v.is_null()) {
            None => None,
            Some(tags) => Some(strings(tags)?),
        },
        signatures: match value.get("signatures").filter(|v| !v.is_null()) {
            None => None,
            Some(s) => Some(crate::policy::Signatures {
                digest: s.get("digest")?.as_str()?.to_string(),
                keys: strings(s.get("keys")?)?,
            }),
        },
    })
}

/// A random id to find one decision by (in logs, in a support ticket).
fn id() -> String {
    let mut bytes = [0u8; 12];
    // No entropy at all only costs the id its uniqueness; the decision is logged anyway.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Account, Kind, Operation, Said, Scope};

    #[test]
    fn a_line_holds_the_decision_and_nothing_secret() {
        let mut request = Request::new(
            Account::user("alice", vec!["ci".into()]),
            Scope {
                type_: "repository".into(),
                class: None,
                name: "apps/web".into(),
                actions: vec!["pull".into(), "push".into()],
            },
            "registry.test",
        );
        request.client_ip = Some("192.0.2.7".into());
        request.operation = Some(Operation {
            method: "PUT".into(),
            kind: Kind::Manifest,
            reference: Some(Reference::Tag("v1".into())),
            mount_from: None,
        });
        let outcome = Outcome {
            granted: vec!["pull".into()],
            answers: vec![Said {
                policy: "protected-tags".into(),
                digest: "sha256:ab".into(),
                granted: vec!["pull".into()],
                reason: Some("tag \"v1\" is protected".into()),
                rule: Some("2".into()),
                fault: None,
            }],
        };
        let line = entry(
            Source::Gateway,
            &request,
            &outcome,
            true,
            Duration::from_micros(7),
        );
        assert_eq!(line["account"], "alice");
        assert_eq!(line["client_ip"], "192.0.2.7");
        assert_eq!(line["scope"], "repository:apps/web:pull,push");
        assert_eq!(line["operation"]["kind"], "manifest");
        assert_eq!(line["operation"]["tag"], "v1");
        assert_eq!(line["granted"], serde_json::json!(["pull"]));
        assert_eq!(line["answers"][0]["reason"], "tag \"v1\" is protected");
        assert_eq!(line["answers"][0]["digest"], "sha256:ab");
        assert_eq!(
            (line["remembered"].clone(), line["latency_us"].clone()),
            (true.into(), 7.into())
        );
        assert_eq!(line["id"].as_str().map(str::len), Some(24));
        assert_eq!(line["answers"][0]["rule"], "2");
        assert_eq!(line["facts"], serde_json::Value::Null, "no facts");
        assert_eq!(facts_of(Some(&line["facts"])), Some(Facts::none()));
    }

    /// Issue 21: the time and facts a policy saw are in the line, and read back as they
    /// were, so a replay decides with them.
    #[test]
    fn a_line_holds_the_time_and_facts_and_gives_them_back() {
        let (mut request, outcome) = anonymous_pull();
        request.time = 1_800_000_000;
        request.facts = Facts {
            tag_digest: Some(TagNow::At("sha256:aa".into())),
            pushed_digest: Some("sha256:bb".into()),
            digest_tags: Some(vec!["v1".into()]),
            signatures: Some(crate::policy::Signatures {
                digest: "sha256:aa".into(),
                keys: vec!["ci".into()],
            }),
        };
        let line = entry(Source::Gateway, &request, &outcome, false, Duration::ZERO);
        assert_eq!(line["request_time"], 1_800_000_000);
        assert_eq!(line["facts"]["tag_digest"], "sha256:aa");
        assert_eq!(facts_of(Some(&line["facts"])), Some(request.facts.clone()));
        request.facts = Facts {
            tag_digest: Some(TagNow::Absent),
            ..Facts::none()
        };
        let line = entry(Source::Gateway, &request, &outcome, false, Duration::ZERO);
        assert_eq!(line["facts"]["tag_digest"], "absent");
        assert_eq!(facts_of(Some(&line["facts"])), Some(request.facts));
        assert_eq!(
            facts_of(Some(&serde_json::json!({"tag_digest": 7}))),
            None,
            "malformed"
        );
    }

    fn anonymous_pull() -> (Request, Outcome) {
        let request = Request::new(
            Account::anonymous(),
            Scope {
                type_: "repository".into(),
                class: None,
                name: "public/x".into(),
                actions: vec!["pull".into()],
            },
            "s",
        );
        let outcome = Outcome {
            granted: Vec::new(),
            answers: Vec::new(),
        };
        (request, outcome)
    }

    /// The lines of `path` once it has `count` of them (or after 5 s).
    fn lines_when(path: &Path, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() == count || std::time::Instant::now() > deadline {
                return text.lines().map(String::from).collect();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn lines_reach_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("decisions.jsonl");
        let log = DecisionLog::open(&path).expect("opens");
        let (request, outcome) = anonymous_pull();
        for _ in 0..3 {
            assert!(log.record(
                Source::Token,
                &request,
                &outcome,
                false,
                Duration::ZERO,
                None
            ));
        }
        let parsed: Vec<serde_json::Value> = lines_when(&path, 3)
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON lines"))
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0]["source"], "token");
        assert_eq!(parsed[0]["account"], "");
    }

    #[test]
    fn a_rotated_or_deleted_file_is_opened_again_at_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("decisions.jsonl");
        let rotated = dir.path().join("decisions.jsonl.1");
        let log = DecisionLog::open(&path).expect("opens");
        let (request, outcome) = anonymous_pull();
        let record = || {
            assert!(log.record(
                Source::Gateway,
                &request,
                &outcome,
                false,
                Duration::ZERO,
                None
            ))
        };
        record();
        assert_eq!(lines_when(&path, 1).len(), 1);
        // logrotate's default: rename, then the writer is expected to start a new file.
        std::fs::rename(&path, &rotated).expect("rotate");
        record();
        record();
        assert_eq!(lines_when(&path, 2).len(), 2, "new lines go to the path");
        assert_eq!(
            lines_when(&rotated, 1).len(),
            1,
            "the rotated file keeps its line"
        );
        std::fs::remove_file(&path).expect("delete");
        record();
        assert_eq!(
            lines_when(&path, 1).len(),
            1,
            "a deleted file is created again"
        );
    }
}
