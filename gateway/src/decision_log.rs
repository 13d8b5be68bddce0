//! The decision log: one JSON line per authorization decision (who asked what, from where,
//! what each policy said, what was granted), written by a thread of its own so that a slow
//! disk never holds a request. It never holds a password or a token: it is built from the
//! policy request, which has neither.

use crate::policy::{Outcome, Reference, Request};
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer at most; past this, lines are dropped and counted.
const QUEUE: usize = 8192;

/// Where decisions go.
pub struct DecisionLog {
    lines: Option<SyncSender<String>>,
}

/// Which door a decision came through.
#[derive(Clone, Copy)]
pub enum Source {
    /// A token request.
    Token,
    /// A registry request in gateway mode.
    Gateway,
}

impl DecisionLog {
    /// No decision log.
    pub fn disabled() -> DecisionLog {
        DecisionLog { lines: None }
    }

    /// Appends to `path`, or writes to standard output when `path` is `stdout`.
    pub fn open(path: &Path) -> std::io::Result<DecisionLog> {
        let out: Box<dyn Write + Send> = if path == Path::new("stdout") {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (lines, queue) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(out);
                while let Ok(line) = queue.recv() {
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
        Ok(DecisionLog { lines: Some(lines) })
    }

    /// Queues one decision; false when the line had to be dropped (the writer is behind).
    pub fn record(
        &self,
        source: Source,
        request: &Request,
        outcome: &Outcome,
        remembered: bool,
        took: Duration,
    ) -> bool {
        let Some(lines) = &self.lines else {
            return true;
        };
        let line = entry(source, request, outcome, remembered, took).to_string();
        match lines.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
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
    let answers: Vec<serde_json::Value> = outcome
        .answers
        .iter()
        .map(|said| {
            serde_json::json!({
                "policy": said.policy,
                "digest": said.digest,
                "granted": said.granted,
                "reason": said.reason,
                "fault": said.fault.as_ref().map(|(kind, message)| format!("{kind}: {message}")),
            })
        })
        .collect();
    serde_json::json!({
        "id": id(),
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "source": match source { Source::Token => "token", Source::Gateway => "gateway" },
        "account": request.account.name,
        "authenticated": request.account.authenticated,
        "groups": request.account.groups,
        "client_ip": request.client_ip,
        "scope": format!("{}:{}:{}", scope.type_, scope.name, scope.actions.join(",")),
        "operation": operation,
        "granted": outcome.granted,
        "answers": answers,
        "remembered": remembered,
        "latency_us": u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
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
    }

    #[test]
    fn lines_reach_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("decisions.jsonl");
        let log = DecisionLog::open(&path).expect("opens");
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
        for _ in 0..3 {
            assert!(log.record(Source::Token, &request, &outcome, false, Duration::ZERO));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 3 || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let parsed: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON lines"))
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0]["source"], "token");
        assert_eq!(parsed[0]["account"], "");
    }
}
