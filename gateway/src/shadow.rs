//! Shadow policies (`[[shadow]]`): a candidate set decided beside the serving one for every
//! decision and never enforced. A request only queues its decision (bounded: when the queue
//! is full the shadow is skipped and counted); a thread of its own decides the candidate and
//! writes the decision's log line with what the candidate would have granted. Disagreements
//! are counted by change and the latest kept for the console's admins.

use crate::decision_log::{DecisionLog, Source};
use crate::metrics::Metrics;
use crate::policy::{Outcome, Policies, Reference, Request};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Decisions waiting for the shadow thread at most; past this they are skipped.
const QUEUE: usize = 4096;
/// Disagreements kept for the console.
const LATEST: usize = 100;

/// How the candidate's answer differs from the serving set's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The same actions granted.
    Same,
    /// The candidate grants an action the serving set does not (whatever it also takes
    /// away: widening is what a change must not do unnoticed).
    Widened,
    /// The candidate grants fewer actions, and none more.
    Narrowed,
    /// Not decided: the shadow thread was behind.
    Skipped,
}

impl Change {
    const ALL: [Change; 4] = [
        Change::Same,
        Change::Widened,
        Change::Narrowed,
        Change::Skipped,
    ];

    /// Its name in metrics, logs and the console.
    pub fn name(self) -> &'static str {
        match self {
            Change::Same => "same",
            Change::Widened => "widened",
            Change::Narrowed => "narrowed",
            Change::Skipped => "skipped",
        }
    }

    /// The change from `serving` to `candidate`, the actions each granted.
    pub fn of(serving: &[String], candidate: &[String]) -> Change {
        if candidate.iter().any(|a| !serving.contains(a)) {
            Change::Widened
        } else if serving.iter().any(|a| !candidate.contains(a)) {
            Change::Narrowed
        } else {
            Change::Same
        }
    }
}

/// One decision for the shadow thread: everything its log line needs.
struct Job {
    source: Source,
    request: Request,
    outcome: Arc<Outcome>,
    remembered: bool,
    took: Duration,
}

/// What the shadow set has said so far: counts by change, and the latest disagreements.
/// Kept across config edits while the gateway runs.
#[derive(Default)]
pub struct Tally {
    counts: [AtomicU64; 4],
    latest: Mutex<VecDeque<Arc<serde_json::Value>>>,
}

impl Tally {
    fn count(&self, change: Change) {
        if let Some(i) = Change::ALL.iter().position(|c| *c == change) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each change's name and count.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        Change::ALL
            .iter()
            .zip(&self.counts)
            .map(|(change, count)| (change.name(), count.load(Ordering::Relaxed)))
            .collect()
    }

    /// The latest disagreements, newest first.
    pub fn latest(&self) -> Vec<Arc<serde_json::Value>> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest.iter().rev().cloned().collect()
    }

    fn keep(&self, disagreement: serde_json::Value) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if latest.len() == LATEST {
            latest.pop_front();
        }
        latest.push_back(Arc::new(disagreement));
    }
}

/// The shadow set of one config, and its thread.
pub struct Shadow {
    policies: Arc<Policies>,
    jobs: SyncSender<Job>,
    tally: Arc<Tally>,
    metrics: Arc<Metrics>,
    decisions: Arc<DecisionLog>,
}

impl Shadow {
    /// Starts the thread that decides `policies` beside the serving set, counting into
    /// `tally` and `metrics`, writing lines to `decisions`.
    pub fn start(
        policies: Policies,
        tally: Arc<Tally>,
        metrics: Arc<Metrics>,
        decisions: Arc<DecisionLog>,
    ) -> std::io::Result<Shadow> {
        let policies = Arc::new(policies);
        let (jobs, queue) = sync_channel(QUEUE);
        let worker = Worker {
            policies: policies.clone(),
            tally: tally.clone(),
            metrics: metrics.clone(),
            decisions: decisions.clone(),
        };
        std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || worker.run(queue))?;
        Ok(Shadow {
            policies,
            jobs,
            tally,
            metrics,
            decisions,
        })
    }

    /// The shadow policies (their status, their watcher).
    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    /// What the shadow set has said so far.
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// Hands a decision to the shadow thread, which logs it; when the thread is behind,
    /// logs it here without the candidate's answer and counts it skipped. False when the
    /// decision log dropped its line.
    pub fn offer(
        &self,
        source: Source,
        request: &Request,
        outcome: &Arc<Outcome>,
        remembered: bool,
        took: Duration,
    ) -> bool {
        let job = Job {
            source,
            request: request.clone(),
            outcome: outcome.clone(),
            remembered,
            took,
        };
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.tally.count(Change::Skipped);
                self.metrics.shadow(Change::Skipped.name());
                let part = serde_json::json!({"change": Change::Skipped.name()});
                self.decisions.record(
                    job.source,
                    &job.request,
                    &job.outcome,
                    job.remembered,
                    job.took,
                    Some(part),
                )
            }
        }
    }
}

/// The shadow thread's side.
struct Worker {
    policies: Arc<Policies>,
    tally: Arc<Tally>,
    metrics: Arc<Metrics>,
    decisions: Arc<DecisionLog>,
}

impl Worker {
    /// Decides each queued decision with the candidate set until the [`Shadow`] is dropped
    /// (a config edit starts another).
    fn run(self, queue: Receiver<Job>) {
        while let Ok(job) = queue.recv() {
            let (candidate, _) = self.policies.current().decide_remembered(&job.request);
            let change = Change::of(&job.outcome.granted, &candidate.granted);
            self.tally.count(change);
            self.metrics.shadow(change.name());
            let part = serde_json::json!({
                "change": change.name(),
                "granted": candidate.granted,
                "answers": crate::decision_log::answers(&candidate),
            });
            if change != Change::Same {
                self.tally.keep(disagreement(&job, &part));
            }
            if !self.decisions.record(
                job.source,
                &job.request,
                &job.outcome,
                job.remembered,
                job.took,
                Some(part),
            ) {
                self.metrics.decision_log_dropped();
            }
        }
    }
}

/// What the console shows of a disagreement.
fn disagreement(job: &Job, part: &serde_json::Value) -> serde_json::Value {
    let request = &job.request;
    let scope = &request.scope;
    let operation = request.operation.as_ref().map(|op| {
        let reference = match &op.reference {
            Some(Reference::Tag(tag)) => format!(" {tag}"),
            Some(Reference::Digest(digest)) => format!(" {digest}"),
            None => String::new(),
        };
        format!("{} {}{reference}", op.method, op.kind.name())
    });
    serde_json::json!({
        "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "account": request.account.name,
        "scope": format!("{}:{}:{}", scope.type_, scope.name, scope.actions.join(",")),
        "operation": operation,
        "serving": job.outcome.granted,
        "shadow": part,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_change_is_widened_when_anything_more_is_granted() {
        let of = |serving: &[&str], candidate: &[&str]| {
            Change::of(&actions(serving), &actions(candidate))
        };
        assert_eq!(of(&["pull"], &["pull"]), Change::Same);
        assert_eq!(of(&[], &[]), Change::Same);
        assert_eq!(of(&["pull"], &["pull", "push"]), Change::Widened);
        assert_eq!(of(&["pull"], &["push"]), Change::Widened, "more and less");
        assert_eq!(of(&["pull", "push"], &["pull"]), Change::Narrowed);
        assert_eq!(of(&["pull"], &[]), Change::Narrowed);
    }
}
