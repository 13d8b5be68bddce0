//! What both modes ask before granting anything: whether a login is right, and what the
//! policies allow. Each answer comes from memory on the async worker when it is known, and
//! only otherwise from a blocking thread (bcrypt and wasm are CPU work; the hop costs more
//! than a lookup). Policy work is bounded: one decision per core at a time, and listings
//! (thousands of decisions for one request) in one lane, so everyone else keeps a core.

use super::{ApiError, App};
use crate::decision_log::Source;
use crate::identity::{Login, LoginError, Principal};
use crate::policy::{Account, Outcome, Request as PolicyRequest};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How much policy work runs at once. Decisions take a place each, a few per core: many more
/// would only slow each other down until their wall-clock deadlines fault them. A
/// filtered listing (registry pages to fetch and walk, thousands of decisions) holds the one
/// listing lane throughout, and its batches of decisions take places like any other, so that
/// however many listings are asked for, they use one core at most and other requests always
/// find the rest.
pub(super) struct Lanes {
    decisions: Arc<Semaphore>,
    listings: Arc<Semaphore>,
}

/// Decisions in flight per core. One would keep a core idle while a decision's thread is
/// handed its work (that cost a fifth of the fresh-decision rate, `bench/catalog.sh`); a
/// few per core keep the cores busy and each decision's wall time far below its deadline.
const DECISIONS_PER_CORE: usize = 4;

impl Default for Lanes {
    fn default() -> Lanes {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Lanes {
            decisions: Arc::new(Semaphore::new(cores * DECISIONS_PER_CORE)),
            listings: Arc::new(Semaphore::new(1)),
        }
    }
}

impl Lanes {
    /// A place to run decisions in. The semaphores are never closed, so a wait ends in a
    /// place (`None` would only mean running unbounded).
    async fn place(&self) -> Option<OwnedSemaphorePermit> {
        self.decisions.clone().acquire_owned().await.ok()
    }

    /// The listing lane, held for a whole listing; listings queue for it in order.
    pub(super) async fn listing(&self) -> Option<OwnedSemaphorePermit> {
        self.listings.clone().acquire_owned().await.ok()
    }
}

impl App {
    /// Logs `user` in with `password` (or a workload token as the password). A wrong
    /// password or a refused token is `Unauthorized` with what the client may be told; a
    /// throttled address `TooManyRequests`; an identity provider that cannot be asked a 503.
    pub(super) async fn login(
        self: &Arc<Self>,
        user: &str,
        password: String,
        client: IpAddr,
    ) -> Result<Login, ApiError> {
        let source = self.identity.source_of(user, &password);
        let workload_token = if source == "oidc" {
            password.clone()
        } else {
            String::new()
        };
        let login = self.identity.login(user, password, client).await;
        if source == "htpasswd" && matches!(login, Ok(_) | Err(LoginError::Wrong)) {
            self.metrics
                .credential_check(login.as_ref().is_ok_and(|l| l.remembered));
        }
        let result = match &login {
            Ok(_) => "ok",
            Err(LoginError::Wrong) => "wrong",
            Err(LoginError::Refused(_)) => "refused",
            Err(LoginError::Unavailable(_)) => "unavailable",
            Err(LoginError::Throttled(_)) => "throttled",
            Err(LoginError::Failed(_)) => "failed",
        };
        self.metrics.login(source, result);
        if let Err(error) = &login {
            let who = match source {
                // A workload's name comes from its token: the subject it claims (unverified,
                // for the log only).
                "oidc" => self.identity.claimed_subject(&workload_token),
                _ => user.to_string(),
            };
            self.refused_login(source, &who, client, error);
            if matches!(error, LoginError::Wrong)
                && source == "htpasswd"
                && self.identity.shadows_directory(user).await
            {
                tracing::warn!(
                    account = %who,
                    "{who:?} is in the htpasswd and in the directory: only the htpasswd's \
                     password is checked, the directory's is refused. Remove one of them"
                );
            }
        }
        login.map_err(login_refused)
    }

    /// Logs a refused login at info: the source, the account (or a workload's subject),
    /// the client and the reason, never a secret; at most [`REFUSALS_LOGGED`] lines a
    /// minute, so a guessing flood cannot fill the disk (what was left out is counted in the
    /// next line).
    pub(super) fn refused_login(
        &self,
        source: &str,
        who: &str,
        client: IpAddr,
        error: &LoginError,
    ) {
        let Some(left_out) = self.refusals.admit() else {
            return;
        };
        let who: String = who.chars().take(256).collect();
        tracing::info!(
            source,
            account = %who,
            %client,
            reason = %error,
            left_out,
            "login refused"
        );
    }

    /// The account the policies see for a principal.
    pub(super) fn account(principal: &Principal) -> Account {
        Account::user(&principal.name, principal.groups.clone())
            .from_source(principal.origin.name(), principal.claims.clone())
    }

    /// The policies' answer, from memory when possible, else off the async workers; every
    /// decision is counted and logged.
    pub(super) async fn decide(
        self: &Arc<Self>,
        source: Source,
        mut request: PolicyRequest,
    ) -> Arc<Outcome> {
        let started = Instant::now();
        self.stamp(&mut request);
        if let Some(outcome) = self.reserved(&request) {
            let outcome = Arc::new(outcome);
            self.observe(source, &request, &outcome, false, started.elapsed());
            return outcome;
        }
        if let Some(outcome) = self.policies.current().recall(&request) {
            let outcome = self.factless(&request, outcome);
            self.observe(source, &request, &outcome, true, started.elapsed());
            return outcome;
        }
        let mut outcomes = self.decide_all(source, vec![request]).await;
        outcomes.pop().unwrap_or_else(nothing_granted)
    }

    /// The answers to many requests (a batch of a listing), in order, decided together:
    /// one place and one hop to a blocking thread for the lot, not one per request.
    pub(super) async fn decide_all(
        self: &Arc<Self>,
        source: Source,
        mut requests: Vec<PolicyRequest>,
    ) -> Vec<Arc<Outcome>> {
        let started = Instant::now();
        requests.iter_mut().for_each(|request| self.stamp(request));
        let floors: Vec<Option<Outcome>> = requests.iter().map(|r| self.reserved(r)).collect();
        if floors.iter().any(Option::is_some) {
            let rest = requests
                .iter()
                .zip(&floors)
                .filter(|(_, floor)| floor.is_none())
                .map(|(request, _)| request.clone())
                .collect();
            let mut decided = Box::pin(self.decide_all(source, rest)).await.into_iter();
            return requests
                .iter()
                .zip(floors)
                .map(|(request, floor)| match floor {
                    Some(outcome) => {
                        let outcome = Arc::new(outcome);
                        self.observe(source, request, &outcome, false, started.elapsed());
                        outcome
                    }
                    None => decided.next().unwrap_or_else(nothing_granted),
                })
                .collect();
        }
        let policies = self.policies.current();
        let recalled: Vec<Option<Arc<Outcome>>> =
            requests.iter().map(|r| policies.recall(r)).collect();
        if recalled.iter().all(Option::is_some) {
            let outcomes = requests
                .iter()
                .zip(recalled.into_iter().flatten())
                .map(|(request, outcome)| self.factless(request, outcome))
                .collect::<Vec<_>>();
            for (request, outcome) in requests.iter().zip(&outcomes) {
                self.observe(source, request, outcome, true, started.elapsed());
            }
            return outcomes;
        }
        let place = self.lanes.place().await;
        let app = self.clone();
        let count = requests.len();
        let decided = tokio::task::spawn_blocking(move || {
            let _place = place;
            requests
                .iter()
                .map(|request| {
                    let (outcome, remembered) = policies.decide_remembered(request);
                    let outcome = app.factless(request, outcome);
                    app.observe(source, request, &outcome, remembered, started.elapsed());
                    outcome
                })
                .collect::<Vec<_>>()
        })
        .await;
        // A decision task that died grants nothing.
        decided.unwrap_or_else(|e| {
            tracing::error!(error = %e, "decision task failed");
            (0..count).map(|_| nothing_granted()).collect()
        })
    }

    /// Every policy's answer to `request`, as a dry run: nothing remembered, counted or
    /// logged (the console's explanations).
    pub(super) async fn explain(self: &Arc<Self>, mut request: PolicyRequest) -> Outcome {
        if let Some(outcome) = self.reserved(&request) {
            return outcome;
        }
        if let Some(operation) = &request.operation {
            match self.facts(&request.scope.name, operation, None, None).await {
                Ok(facts) => request.facts = facts,
                Err(why) => return super::facts::unknown(&why),
            }
        }
        self.explain_as_asked(request).await
    }

    /// Every policy's answer to `request` with the facts it carries (none gathered): a dry
    /// run, as [`App::explain`] (the console's "what if this tag moved").
    pub(super) async fn explain_as_asked(self: &Arc<Self>, mut request: PolicyRequest) -> Outcome {
        if let Some(outcome) = self.reserved(&request) {
            return outcome;
        }
        self.stamp(&mut request);
        let place = self.lanes.place().await;
        let policies = self.policies.current();
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let _place = place;
            let outcome = Arc::new(policies.decide(&request).outcome());
            Outcome::clone(&app.factless(&request, outcome))
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "explanation task failed");
            Outcome {
                granted: Vec::new(),
                answers: Vec::new(),
            }
        })
    }

    /// Counts a decision per policy, logs its faults, and writes it to the decision log.
    pub(super) fn observe(
        &self,
        source: Source,
        request: &PolicyRequest,
        outcome: &Arc<Outcome>,
        remembered: bool,
        took: Duration,
    ) {
        let asked = &request.scope.actions;
        for said in &outcome.answers {
            let result = match &said.fault {
                Some(_) => "fault",
                None if asked.iter().all(|a| said.granted.contains(a)) => "granted",
                None => "denied",
            };
            self.metrics.decision(
                &said.policy,
                result,
                said.fault.as_ref().map(|(kind, _)| *kind),
            );
            if let (Some((_, fault)), false) = (&said.fault, remembered) {
                tracing::warn!(policy = %said.policy, %fault, scope = %request.scope.name, "policy fault: denied");
            }
        }
        // The shadow set logs the line once it has decided too; never for the floor.
        let logged = match &self.shadow {
            Some(shadow) if !self.is_reserved(request) => {
                shadow.offer(source, request, outcome, remembered, took)
            }
            _ => self
                .decisions
                .record(source, request, outcome, remembered, took, None),
        };
        if !logged {
            self.metrics.decision_log_dropped();
        }
    }
}

fn nothing_granted() -> Arc<Outcome> {
    Arc::new(Outcome {
        granted: Vec::new(),
        answers: Vec::new(),
    })
}

/// Refused logins logged a minute, at most.
const REFUSALS_LOGGED: u32 = 60;

/// How many refused logins were logged in the current minute, and how many left out.
#[derive(Default)]
pub(super) struct Refusals {
    minute: std::sync::Mutex<(Option<Instant>, u32, u64)>,
}

impl Refusals {
    /// Some(how many were left out since the last line) when this one may be logged.
    fn admit(&self) -> Option<u64> {
        let mut minute = self
            .minute
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (started, logged, left_out) = &mut *minute;
        if started.is_none_or(|s| s.elapsed() >= Duration::from_secs(60)) {
            *started = Some(Instant::now());
            *logged = 0;
        }
        if *logged >= REFUSALS_LOGGED {
            *left_out += 1;
            return None;
        }
        *logged += 1;
        Some(std::mem::take(left_out))
    }
}

/// What a failed login becomes: the reason a client may read, never which of user and
/// password was wrong.
pub(super) fn login_refused(error: LoginError) -> ApiError {
    match error {
        LoginError::Wrong => ApiError::Unauthorized("invalid username or password".into()),
        LoginError::Refused(why) => ApiError::Unauthorized(why),
        LoginError::Throttled(wait) => ApiError::TooManyRequests(wait),
        LoginError::Unavailable(why) => {
            tracing::warn!(error = %why, "identity provider unavailable");
            ApiError::Busy("the identity provider cannot be reached")
        }
        LoginError::Failed(why) => ApiError::Internal(why),
    }
}
