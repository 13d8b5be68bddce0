//! What both modes ask before granting anything: whether a login is right, and what the
//! policies allow. Each answer comes from memory on the async worker when it is known, and
//! only otherwise from a blocking thread (bcrypt and wasm are CPU work; the hop costs more
//! than a lookup).

use super::{ApiError, App};
use crate::decision_log::Source;
use crate::policy::{Account, Outcome, Request as PolicyRequest};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl App {
    /// Whether `password` is right for `user`: the id of the credential it matched (what
    /// refresh tokens are bound to), `Ok(None)` for a wrong password, an error for a
    /// throttled address.
    pub(super) async fn login(
        self: &Arc<Self>,
        user: &str,
        password: String,
        client: IpAddr,
    ) -> Result<Option<String>, ApiError> {
        let users = self.users.load_full();
        let cached = self.cache.remembers(&users, user, &password);
        self.metrics.credential_check(cached);
        if cached {
            return Ok(users.credential_id(user));
        }
        let app = self.clone();
        let user = user.to_string();
        tokio::task::spawn_blocking(move || app.check_password(&user, &password, client))
            .await
            .map_err(|e| ApiError::Internal(format!("login task failed: {e}")))?
    }

    /// bcrypt with the login throttle around it; `Ok(None)` is a wrong password.
    fn check_password(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Option<String>, ApiError> {
        let now = Instant::now();
        // Checked before bcrypt: a throttled guesser costs us no CPU.
        self.throttle
            .check(client, user, now)
            .map_err(ApiError::TooManyRequests)?;
        let users = self.users.load_full();
        if self.cache.verify(&users, user, password) {
            self.throttle.succeeded(client, user);
            Ok(users.credential_id(user))
        } else {
            self.throttle.failed(client, user, now);
            Ok(None)
        }
    }

    /// A known user with the groups the groups file gives them now.
    pub(super) fn account(&self, name: &str) -> Account {
        Account::user(name, self.groups.load().of(name).to_vec())
    }

    /// The policies' answer, from memory when possible, else off the async workers; every
    /// decision is counted and logged.
    pub(super) async fn decide(
        self: &Arc<Self>,
        source: Source,
        request: PolicyRequest,
    ) -> Arc<Outcome> {
        let started = Instant::now();
        let policies = self.policies.current();
        if let Some(outcome) = policies.recall(&request) {
            self.observe(source, &request, &outcome, true, started.elapsed());
            return outcome;
        }
        let app = self.clone();
        let decided = tokio::task::spawn_blocking(move || {
            let (outcome, remembered) = policies.decide_remembered(&request);
            app.observe(source, &request, &outcome, remembered, started.elapsed());
            outcome
        })
        .await;
        // A decision task that died grants nothing.
        decided.unwrap_or_else(|e| {
            tracing::error!(error = %e, "decision task failed");
            Arc::new(Outcome {
                granted: Vec::new(),
                answers: Vec::new(),
            })
        })
    }

    /// Counts a decision per policy, logs its faults, and writes it to the decision log.
    fn observe(
        &self,
        source: Source,
        request: &PolicyRequest,
        outcome: &Outcome,
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
        if !self
            .decisions
            .record(source, request, outcome, remembered, took)
        {
            self.metrics.decision_log_dropped();
        }
    }
}
