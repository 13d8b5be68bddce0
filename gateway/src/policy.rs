//! Authorization decisions by WebAssembly policies: the wasm host, the composition of
//! several policies into one verdict, and hot reload of modules and settings.
//!
//! The host knows nothing of HTTP: callers build a [`Request`] and get a [`Verdict`].

mod bindings;
mod clock;
pub mod compiled;
pub mod fixtures;
mod host;
pub mod pulled;
mod reload;
pub mod replay;
pub mod scaffold;
mod world;

pub use bindings::current::portcullis::policy::types::{
    Account, Decision, Facts, Kind, Needs, Operation, Reference, Request, Scope, Signatures, TagNow,
};
pub use host::{
    Fault, Host, Limits, LoadError, LoadProblem, LoadedPolicy, MAX_MEMORY_BYTES, ModuleSource,
    PolicySource, PolicySpec, SettingsSource,
};
pub use reload::{Policies, PolicyStatus};

use std::sync::Arc;

/// Decisions remembered per set; a reload builds a new set, and with it an empty memory.
const REMEMBERED_DECISIONS: usize = 16_384;

/// The policies serving at one moment. Immutable: a reload builds a new set and swaps it in,
/// so a decision started on this set finishes on it.
pub struct PolicySet {
    policies: Vec<Arc<LoadedPolicy>>,
    remembered: quick_cache::sync::Cache<Vec<u8>, Arc<Outcome>>,
}

/// A verdict as callers keep it (remembered, logged, counted): the granted actions and what
/// each policy said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The actions every policy granted, in the order asked.
    pub granted: Vec<String>,
    /// Each policy's part, in config order.
    pub answers: Vec<Said>,
}

/// One policy's part in an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    /// The policy's configured name.
    pub policy: String,
    /// The digest of the module that answered.
    pub digest: String,
    /// What it granted (nothing on a fault).
    pub granted: Vec<String>,
    /// Its reason, if it gave one.
    pub reason: Option<String>,
    /// The rule that decided, as the policy names its rules, if it said.
    pub rule: Option<String>,
    /// The kind (`deadline`, `trap`, ...) and description of its fault, if it failed.
    pub fault: Option<(&'static str, String)>,
}

impl Outcome {
    /// The first policy that withheld an action of `asked`, with its reason
    /// (`acl: acl rule 3`); fault details stay in the log.
    pub fn withheld_by(&self, asked: &[String]) -> Option<String> {
        if self.answers.is_empty() {
            return Some("no policy answered".into());
        }
        self.answers.iter().find_map(|said| match &said.fault {
            Some(_) => Some(format!("policy `{}` failed", said.policy)),
            None if asked.iter().any(|a| !said.granted.contains(a)) => Some(format!(
                "{}: {}",
                said.policy,
                said.reason.as_deref().unwrap_or("not granted")
            )),
            None => None,
        })
    }

    /// True when a policy failed (such an outcome is never remembered).
    pub fn faulted(&self) -> bool {
        self.answers.iter().any(|said| said.fault.is_some())
    }
}

impl Default for PolicySet {
    fn default() -> PolicySet {
        PolicySet::new(Vec::new())
    }
}

/// The combined answer of every policy in a set.
#[derive(Debug)]
pub struct Verdict {
    /// The actions every policy granted, in the order asked.
    pub granted: Vec<String>,
    /// Each policy's own answer, in config order.
    pub answers: Vec<Answer>,
}

impl Verdict {
    /// The verdict as callers keep it.
    pub fn outcome(&self) -> Outcome {
        let answers = self
            .answers
            .iter()
            .map(|answer| {
                let (granted, reason, rule, fault) = match &answer.outcome {
                    Ok(decision) => (
                        decision.granted.clone(),
                        decision.reason.clone(),
                        decision.rule.clone(),
                        None,
                    ),
                    Err(fault) => (
                        Vec::new(),
                        None,
                        None,
                        Some((fault.kind(), fault.to_string())),
                    ),
                };
                Said {
                    policy: answer.policy.clone(),
                    digest: answer.digest.clone(),
                    granted,
                    reason,
                    rule,
                    fault,
                }
            })
            .collect();
        Outcome {
            granted: self.granted.clone(),
            answers,
        }
    }
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
        PolicySet {
            policies,
            remembered: quick_cache::sync::Cache::new(REMEMBERED_DECISIONS),
        }
    }

    /// The policies in config order.
    pub fn policies(&self) -> &[Arc<LoadedPolicy>] {
        &self.policies
    }

    /// What the policies need, together: the facts the gateway gathers for this set.
    pub fn needs(&self) -> Needs {
        self.policies
            .iter()
            .fold(Needs::empty(), |needs, policy| needs | policy.needs())
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

    /// The outcome if this set answered the very same request before: the microsecond
    /// path, tried before handing a decision to a blocking thread.
    pub fn recall(&self, request: &Request) -> Option<Arc<Outcome>> {
        self.remembered.get(&memo_key(request)[..])
    }

    /// The outcome of a request, from memory when this set answered the very same request
    /// before (policies see no clock and no I/O beyond the time and facts the request
    /// carries, which the memory is keyed by, so their answer cannot change), and whether
    /// it came from memory. An outcome with a fault is not remembered, so a policy that timed
    /// out once is asked again.
    pub fn decide_remembered(&self, request: &Request) -> (Arc<Outcome>, bool) {
        let key = memo_key(request);
        if let Some(outcome) = self.remembered.get(&key[..]) {
            return (outcome, true);
        }
        let outcome = Arc::new(self.decide(request).outcome());
        if !outcome.faulted() {
            self.remembered.insert(key, outcome.clone());
        }
        (outcome, false)
    }
}

/// Every field a policy sees, length-prefixed so that no two requests share a key.
fn memo_key(request: &Request) -> Vec<u8> {
    let mut key = Vec::with_capacity(128);
    let mut put = |field: &str| {
        key.extend_from_slice(&(field.len() as u32).to_le_bytes());
        key.extend_from_slice(field.as_bytes());
    };
    let account = &request.account;
    put(&account.name);
    put(if account.authenticated { "1" } else { "0" });
    put(&account.groups.len().to_string());
    account.groups.iter().for_each(|g| put(g));
    put(&account.source);
    put(&account.claims.len().to_string());
    account.claims.iter().for_each(|(name, value)| {
        put(name);
        put(value);
    });
    let scope = &request.scope;
    put(&scope.type_);
    put(scope.class.as_deref().unwrap_or("\0none"));
    put(&scope.name);
    put(&scope.actions.len().to_string());
    scope.actions.iter().for_each(|a| put(a));
    put(&request.service);
    put(request.client_ip.as_deref().unwrap_or("\0none"));
    match &request.operation {
        None => put("\0none"),
        Some(op) => {
            put(&op.method);
            put(op.kind.name());
            match &op.reference {
                None => put("\0none"),
                Some(Reference::Tag(tag)) => {
                    put("tag");
                    put(tag);
                }
                Some(Reference::Digest(digest)) => {
                    put("digest");
                    put(digest);
                }
            }
            put(op.mount_from.as_deref().unwrap_or("\0none"));
        }
    }
    put(&request.time.to_string());
    let facts = &request.facts;
    match &facts.tag_digest {
        None => put("\0none"),
        Some(TagNow::Absent) => put("\0absent"),
        Some(TagNow::At(digest)) => put(digest),
    }
    put(facts.pushed_digest.as_deref().unwrap_or("\0none"));
    match &facts.digest_tags {
        None => put("\0none"),
        Some(tags) => {
            put(&tags.len().to_string());
            tags.iter().for_each(|t| put(t));
        }
    }
    match &facts.signatures {
        None => put("\0none"),
        Some(signatures) => {
            put(&signatures.digest);
            put(&signatures.keys.len().to_string());
            signatures.keys.iter().for_each(|k| put(k));
        }
    }
    key
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
            time: 0,
            facts: Facts::none(),
        }
    }
}

impl Facts {
    /// No facts (token-server mode; no policy needs any; an operation none concerns).
    pub fn none() -> Facts {
        Facts {
            tag_digest: None,
            pushed_digest: None,
            digest_tags: None,
            signatures: None,
        }
    }
}

impl Kind {
    /// The kind a lowercase name spells (see [`Kind::name`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "base" => Kind::Base,
            "manifest" => Kind::Manifest,
            "blob" => Kind::Blob,
            "upload" => Kind::Upload,
            "tags" => Kind::Tags,
            "catalog" => Kind::Catalog,
            "referrers" => Kind::Referrers,
            _ => return None,
        })
    }

    /// The lowercase name, as logs and the WIT spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Base => "base",
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
            Kind::Upload => "upload",
            Kind::Tags => "tags",
            Kind::Catalog => "catalog",
            Kind::Referrers => "referrers",
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
            source: String::new(),
            claims: Vec::new(),
        }
    }

    /// A verified htpasswd user and its groups.
    pub fn user(name: &str, groups: Vec<String>) -> Account {
        Account {
            name: name.to_string(),
            authenticated: true,
            groups,
            source: "htpasswd".to_string(),
            claims: Vec::new(),
        }
    }

    /// The same account, found elsewhere (an OIDC issuer), with the claims it came with.
    pub fn from_source(mut self, source: &str, claims: Vec<(String, String)>) -> Account {
        self.source = source.to_string();
        self.claims = claims;
        self
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
