//! `portcullis policy test`: fixture files of cases, each the request as a policy sees it and
//! what must come out, run through the production host and composition (every policy must
//! grant an action; limits and faults as when serving). Policies that name their rules in
//! their reasons (`acl rule N`) are told which rules no case reached.

use super::{Account, Host, Kind, Operation, PolicySet, Reference, Request, Scope};
use crate::config;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A fixture file that cannot be run, and why.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Unreadable, or not a fixture file.
    #[error("{file}: {message}")]
    Invalid {
        /// The fixture file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// A fixture file: the policy set and the cases.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixtures {
    /// A Portcullis config whose `[[policy]]` set is used.
    config: Option<PathBuf>,
    /// Or the policies themselves, with the keys of a config's `[[policy]]`.
    #[serde(default)]
    policy: Vec<config::Policy>,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

/// One case: a request and what must come out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// "" (or absent) is anonymous.
    #[serde(default)]
    account: String,
    #[serde(default)]
    groups: Vec<String>,
    /// `htpasswd` (default), `ldap`, or an issuer's URL.
    source: Option<String>,
    #[serde(default)]
    claims: BTreeMap<String, String>,
    /// `type:name:actions`, as a token request asks it.
    scope: String,
    #[serde(default = "default_service")]
    service: String,
    ip: Option<String>,
    /// What gateway mode sees of the request.
    operation: Option<OperationFixture>,
    /// The time of the decision: RFC 3339 in UTC, as policies that need the time get it.
    time: Option<String>,
    /// What the tag names now (`"absent"` or a digest), as gateway mode looks it up.
    tag_digest: Option<String>,
    /// The digest of the manifest being pushed.
    pushed_digest: Option<String>,
    /// The tags that name the manifest being deleted by digest.
    digest_tags: Option<Vec<String>>,
    /// The keys whose valid signature covers the manifest served: `{ digest, keys }`.
    signatures: Option<SignaturesFixture>,
    /// The actions that must be granted, exactly.
    granted: Vec<String>,
    /// The first policy that must have withheld an action.
    denied_by: Option<String>,
    /// A glob one of the answers' reasons must match.
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignaturesFixture {
    digest: String,
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationFixture {
    method: String,
    kind: String,
    tag: Option<String>,
    digest: Option<String>,
    mount_from: Option<String>,
}

fn default_service() -> String {
    "registry".into()
}

/// How one case came out.
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Empty when it passed; else what differed, expected against got.
    pub problems: Vec<String>,
}

/// A fixture file's run.
pub struct Report {
    /// Every case, in file order.
    pub cases: Vec<CaseResult>,
    /// Per policy whose settings hold `rules`: the rule numbers no case's answer named.
    pub unreached: Vec<(String, Vec<usize>)>,
}

/// How many cases a fixture file's text holds, if it reads as one (keys checked, nothing
/// loaded): the docs' examples are checked with it.
pub fn cases_in(text: &str) -> Result<usize, String> {
    let fixtures: Fixtures = toml::from_str(text).map_err(|e| e.to_string())?;
    for case in &fixtures.cases {
        request(case).map_err(|e| format!("case {:?}: {e}", case.name))?;
    }
    Ok(fixtures.cases.len())
}

/// Runs the cases of the fixture file `path` on `host`.
pub fn run(path: &Path, host: &Host) -> Result<Report, FixtureError> {
    let invalid = |message: String| FixtureError::Invalid {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read: {e}")))?;
    let fixtures: Fixtures = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let (policies, specs) = match &fixtures.config {
        Some(file) => {
            let config =
                config::Config::load(&base.join(file)).map_err(|e| invalid(e.to_string()))?;
            let specs: Vec<_> = config.policies.iter().map(config::Policy::spec).collect();
            // Policies from a registry are pulled and verified as a start would.
            crate::artifacts::pull_once(&config, &specs.iter().collect::<Vec<_>>())
                .map_err(invalid)?;
            (config.policies, specs)
        }
        None => {
            let mut policies = fixtures.policy.clone();
            for policy in &mut policies {
                policy.module = policy.module.as_ref().map(|m| base.join(m));
                policy.settings_file = policy.settings_file.as_ref().map(|f| base.join(f));
            }
            let specs = policies.iter().map(config::Policy::spec).collect();
            (policies, specs)
        }
    };
    if policies.is_empty() {
        return Err(invalid(
            "no policy to test: name a `config` or give [[policy]] blocks".into(),
        ));
    }
    let loaded = specs
        .iter()
        .map(|spec| {
            let source = spec.read().map_err(|e| invalid(e.to_string()))?;
            host.load(spec, source)
                .map(Arc::new)
                .map_err(|e| invalid(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let set = PolicySet::new(loaded);
    let mut reached: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut cases = Vec::new();
    for case in &fixtures.cases {
        let request = request(case).map_err(|e| invalid(format!("case {:?}: {e}", case.name)))?;
        let outcome = set.decide(&request).outcome();
        for said in &outcome.answers {
            if let Some(rule) = said.reason.as_deref().and_then(rule_number) {
                reached.entry(said.policy.clone()).or_default().insert(rule);
            }
        }
        cases.push(CaseResult {
            name: case.name.clone(),
            problems: compare(case, &request, &outcome),
        });
    }
    let unreached = policies
        .iter()
        .filter_map(|policy| {
            let rules = rule_count(policy)?;
            let seen = reached.get(&policy.name);
            let missing: Vec<usize> = (1..=rules)
                .filter(|n| seen.is_none_or(|s| !s.contains(n)))
                .collect();
            (!missing.is_empty()).then(|| (policy.name.clone(), missing))
        })
        .collect();
    Ok(Report { cases, unreached })
}

/// The request a case describes.
fn request(case: &Case) -> Result<Request, String> {
    let scope: crate::scope::Scope = case.scope.parse().map_err(|e| format!("{e}"))?;
    let account = if case.account.is_empty() {
        Account::anonymous()
    } else {
        Account::user(&case.account, case.groups.clone()).from_source(
            case.source.as_deref().unwrap_or("htpasswd"),
            case.claims
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    let mut request = Request::new(account, Scope::from(&scope), &case.service);
    request.client_ip = case.ip.clone();
    if let Some(time) = &case.time {
        request.time = humantime::parse_rfc3339(time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or_else(|| {
                format!("time {time:?} is not an RFC 3339 instant in UTC (2027-01-01T00:00:00Z)")
            })?;
    }
    request.facts.tag_digest = case.tag_digest.as_deref().map(|now| match now {
        "absent" => super::TagNow::Absent,
        digest => super::TagNow::At(digest.to_string()),
    });
    request.facts.pushed_digest = case.pushed_digest.clone();
    request.facts.digest_tags = case.digest_tags.clone();
    request.facts.signatures = case.signatures.as_ref().map(|s| super::Signatures {
        digest: s.digest.clone(),
        keys: s.keys.clone(),
    });
    if let Some(op) = &case.operation {
        let kind = Kind::from_name(&op.kind).ok_or_else(|| {
            format!(
                "operation kind {:?} is none of base, manifest, blob, upload, tags, catalog, \
                 referrers",
                op.kind
            )
        })?;
        let reference = match (&op.tag, &op.digest) {
            (Some(_), Some(_)) => return Err("an operation has a tag or a digest, not both".into()),
            (Some(tag), None) => Some(Reference::Tag(tag.clone())),
            (None, Some(digest)) => Some(Reference::Digest(digest.clone())),
            (None, None) => None,
        };
        request.operation = Some(Operation {
            method: op.method.to_ascii_uppercase(),
            kind,
            reference,
            mount_from: op.mount_from.clone(),
        });
    }
    Ok(request)
}

/// What differs between what a case expects and the outcome.
fn compare(case: &Case, request: &Request, outcome: &super::Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    let said = |outcome: &super::Outcome| {
        outcome
            .answers
            .iter()
            .map(|s| {
                let why = match (&s.fault, &s.reason) {
                    (Some((kind, message)), _) => format!("fault {kind}: {message}"),
                    (None, Some(reason)) => reason.clone(),
                    (None, None) => "no reason".into(),
                };
                format!("{}: [{}] {why}", s.policy, s.granted.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let expected: BTreeSet<&String> = case.granted.iter().collect();
    let got: BTreeSet<&String> = outcome.granted.iter().collect();
    if expected != got {
        problems.push(format!(
            "granted: expected [{}], got [{}] ({})",
            case.granted.join(", "),
            outcome.granted.join(", "),
            said(outcome)
        ));
    }
    if let Some(policy) = &case.denied_by {
        let first = outcome
            .answers
            .iter()
            .find(|s| {
                s.fault.is_some() || request.scope.actions.iter().any(|a| !s.granted.contains(a))
            })
            .map(|s| s.policy.as_str());
        if first != Some(policy.as_str()) {
            problems.push(format!(
                "denied_by: expected {policy}, got {}",
                first.unwrap_or("none (everything asked was granted)")
            ));
        }
    }
    if let Some(pattern) = &case.reason {
        let matched = outcome
            .answers
            .iter()
            .filter_map(|s| s.reason.as_deref())
            .any(|reason| crate::glob::matches(pattern, reason));
        if !matched {
            problems.push(format!(
                "reason: no answer's reason matches {pattern:?} ({})",
                said(outcome)
            ));
        }
    }
    problems
}

/// `N` of a reason that starts `acl rule N`.
fn rule_number(reason: &str) -> Option<usize> {
    let rest = reason.strip_prefix("acl rule ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// How many rules a policy's settings hold, when they are `{"rules": [...]}`.
fn rule_count(policy: &config::Policy) -> Option<usize> {
    let settings = match (&policy.settings, &policy.settings_file) {
        (Some(json), _) => json.clone(),
        (None, Some(file)) => serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?,
        (None, None) => return None,
    };
    settings.get("rules")?.as_array().map(Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_numbers_are_read_from_acl_reasons() {
        assert_eq!(rule_number("acl rule 3: admins"), Some(3));
        assert_eq!(rule_number("acl rule 12 (x) grants nothing"), Some(12));
        assert_eq!(rule_number("no acl rule matched"), None);
        assert_eq!(rule_number("read-only mode"), None);
    }
}
