//! Authorization decisions by WebAssembly policies: the wasm host, the composition of
//! several policies into one verdict, and hot reload of modules and settings.
//!
//! The host knows nothing of HTTP: callers build a [`Request`] and get a [`Verdict`].

mod bindings;
mod host;
mod reload;

pub use bindings::portcullis::policy::types::{
    Account, Decision, Kind, Operation, Reference, Request, Scope,
};
pub use host::{
    Fault, Host, Limits, LoadError, LoadProblem, LoadedPolicy, MAX_MEMORY_BYTES, PolicySource,
    PolicySpec, SettingsSource,
};
pub use reload::{Policies, PolicyStatus};

use std::sync::Arc;

/// The policies serving at one moment. Immutable: a reload builds a new set and swaps it in,
/// so a decision started on this set finishes on it.
#[derive(Default)]
pub struct PolicySet {
    policies: Vec<Arc<LoadedPolicy>>,
}

/// The combined answer of every policy in a set.
#[derive(Debug)]
pub struct Verdict {
    /// The actions every policy granted, in the order asked.
    pub granted: Vec<String>,
    /// Each policy's own answer, in config order.
    pub answers: Vec<Answer>,
}

/// One policy's answer to one request.
#[derive(Debug)]
pub struct Answer {
    /// The policy's configured name.
    pub policy: String,
    /// The digest of the module that answered.
    pub digest: String,
    /// Its decision, or the fault that made it deny.
    pub outcome: Result<Decision, Fault>,
}

impl PolicySet {
    /// A set of loaded policies, decided in the order given.
    pub fn new(policies: Vec<Arc<LoadedPolicy>>) -> PolicySet {
        PolicySet { policies }
    }

    /// The policies in config order.
    pub fn policies(&self) -> &[Arc<LoadedPolicy>] {
        &self.policies
    }

    /// Asks every policy. An action is granted only if every policy grants it; a policy fault
    /// grants nothing; an empty set grants nothing.
    pub fn decide(&self, request: &Request) -> Verdict {
        let mut granted = if self.policies.is_empty() {
            Vec::new()
        } else {
            request.scope.actions.clone()
        };
        let answers = self
            .policies
            .iter()
            .map(|policy| {
                let outcome = policy.authorize(request);
                match &outcome {
                    Ok(decision) => granted.retain(|a| decision.granted.contains(a)),
                    Err(_) => granted.clear(),
                }
                Answer {
                    policy: policy.name().to_string(),
                    digest: policy.digest().to_string(),
                    outcome,
                }
            })
            .collect();
        Verdict { granted, answers }
    }
}

impl Request {
    /// A request for `scope` on `service` by `account`, with no client address and no
    /// registry operation.
    pub fn new(account: Account, scope: Scope, service: &str) -> Request {
        Request {
            account,
            scope,
            service: service.to_string(),
            client_ip: None,
            operation: None,
        }
    }
}

impl Account {
    /// The account of an unauthenticated request.
    pub fn anonymous() -> Account {
        Account {
            name: String::new(),
            authenticated: false,
            groups: Vec::new(),
        }
    }

    /// A verified user and its groups.
    pub fn user(name: &str, groups: Vec<String>) -> Account {
        Account {
            name: name.to_string(),
            authenticated: true,
            groups,
        }
    }
}

impl From<&crate::scope::Scope> for Scope {
    fn from(scope: &crate::scope::Scope) -> Scope {
        Scope {
            type_: scope.resource_type.clone(),
            class: scope.class.clone(),
            name: scope.name.clone(),
            actions: scope.actions.clone(),
        }
    }
}
