//! `portcullis policy replay`: every decision of decision logs decided again by a candidate
//! policy set, and what would change: actions granted now that were refused (widened) and
//! refused now that were granted (narrowed), grouped by account and repository with an
//! example each. The log holds all a policy saw (account, source, groups, claims, scope,
//! service, client address, gateway operation) and policies see no clock, file or network,
//! so the set that wrote a log replays it unchanged.

use super::{Account, Kind, Operation, PolicySet, Reference, Request, Scope};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// What a replay found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Replay {
    /// Decisions read.
    pub decisions: u64,
    /// Decided the same.
    pub unchanged: u64,
    /// Granted an action that was refused.
    pub widened: u64,
    /// Refused an action that was granted.
    pub narrowed: u64,
    /// Lines that are no decision (with their file and line, the first few).
    pub unreadable: Vec<String>,
    /// Per account and repository that changed: counts and one example.
    pub changes: Vec<Change>,
}

/// The changes for one account on one resource.
#[derive(Debug, serde::Serialize)]
pub struct Change {
    /// The account (`""`: anonymous).
    pub account: String,
    /// `type:name` of the resource.
    pub resource: String,
    /// Decisions that widened here.
    pub widened: u64,
    /// Decisions that narrowed here.
    pub narrowed: u64,
    /// One of them: the logged decision's id and time, the scope, what was granted then and
    /// what would be now.
    pub example: Example,
}

/// One changed decision.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Example {
    /// The log line's `id`.
    pub id: String,
    /// When it was decided.
    pub time: String,
    /// `type:name:actions`.
    pub scope: String,
    /// The operation, in gateway mode (`PUT manifest v1`).
    pub operation: Option<String>,
    /// Granted when logged.
    pub before: Vec<String>,
    /// Granted by the candidate.
    pub after: Vec<String>,
}

/// Unreadable lines kept with their place, at most.
const UNREADABLE_KEPT: usize = 20;

/// Replays every decision of `logs` against `set`.
pub fn replay(logs: &[&Path], set: &PolicySet) -> Result<Replay, String> {
    let mut replay = Replay::default();
    let mut changes: BTreeMap<(String, String), Change> = BTreeMap::new();
    for log in logs {
        let file = std::fs::File::open(log).map_err(|e| format!("{}: {e}", log.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", log.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let Some((request, before, example)) = decision(&line) else {
                if replay.unreadable.len() < UNREADABLE_KEPT {
                    replay
                        .unreadable
                        .push(format!("{}:{}", log.display(), n + 1));
                }
                continue;
            };
            replay.decisions += 1;
            let (outcome, _) = set.decide_remembered(&request);
            let after = &outcome.granted;
            let widened = after.iter().any(|a| !before.contains(a));
            let narrowed = before.iter().any(|a| !after.contains(a));
            if !widened && !narrowed {
                replay.unchanged += 1;
                continue;
            }
            replay.widened += u64::from(widened);
            replay.narrowed += u64::from(narrowed);
            let key = (
                request.account.name.clone(),
                format!("{}:{}", request.scope.type_, request.scope.name),
            );
            let change = changes.entry(key.clone()).or_insert_with(|| Change {
                account: key.0.clone(),
                resource: key.1.clone(),
                widened: 0,
                narrowed: 0,
                example: Example {
                    after: after.clone(),
                    ..example
                },
            });
            change.widened += u64::from(widened);
            change.narrowed += u64::from(narrowed);
        }
    }
    replay.changes = changes.into_values().collect();
    Ok(replay)
}

/// The request a log line holds, what was granted, and its example (`after` left empty).
fn decision(line: &str) -> Option<(Request, Vec<String>, Example)> {
    let entry: Value = serde_json::from_str(line).ok()?;
    let text = |key: &str| entry.get(key).and_then(Value::as_str);
    let strings = |value: Option<&Value>| -> Option<Vec<String>> {
        value?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let scope_text = text("scope")?;
    let mut parts = scope_text.splitn(3, ':');
    let (type_, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
    let scope = Scope {
        type_: type_.to_string(),
        class: text("class").map(str::to_string),
        name: name.to_string(),
        actions: actions.split(',').map(str::to_string).collect(),
    };
    let name = text("account")?;
    let account = if entry.get("authenticated").and_then(Value::as_bool)? {
        let claims = entry
            .get("claims")?
            .as_array()?
            .iter()
            .map(|pair| {
                let pair = pair.as_array()?;
                Some((
                    pair.first()?.as_str()?.to_string(),
                    pair.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Account::user(name, strings(entry.get("groups"))?)
            .from_source(text("account_source")?, claims)
    } else {
        Account::anonymous()
    };
    let mut request = Request::new(account, scope, text("service").unwrap_or("registry"));
    request.client_ip = text("client_ip").map(str::to_string);
    request.time = entry.get("request_time").map_or(Some(0), Value::as_u64)?;
    request.facts = crate::decision_log::facts_of(entry.get("facts"))?;
    let mut shown = None;
    if let Some(op) = entry.get("operation").filter(|v| !v.is_null()) {
        let field = |key: &str| op.get(key).and_then(Value::as_str);
        let kind = Kind::from_name(field("kind")?)?;
        let reference = match (field("tag"), field("digest")) {
            (Some(tag), _) => Some(Reference::Tag(tag.to_string())),
            (None, Some(digest)) => Some(Reference::Digest(digest.to_string())),
            (None, None) => None,
        };
        shown = Some(format!(
            "{} {} {}",
            field("method")?,
            field("kind")?,
            field("tag").or(field("digest")).unwrap_or("")
        ));
        request.operation = Some(Operation {
            method: field("method")?.to_string(),
            kind,
            reference,
            mount_from: field("mount_from").map(str::to_string),
        });
    }
    let before = strings(entry.get("granted"))?;
    let example = Example {
        id: text("id").unwrap_or_default().to_string(),
        time: text("time").unwrap_or_default().to_string(),
        scope: scope_text.to_string(),
        operation: shown.map(|s| s.trim_end().to_string()),
        before: before.clone(),
        after: Vec::new(),
    };
    Some((request, before, example))
}
