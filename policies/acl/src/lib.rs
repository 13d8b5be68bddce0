//! The `acl` policy: ordered rules, the first whose `match` fits decides, granted = requested
//! ∩ the rule's `actions`. A rule may match where the account comes from (`source`) and the
//! claims of a workload's token (`claims`). Settings are strict: unknown keys, rules without
//! `actions`, bad patterns and bad CIDRs fail the load instead of silently matching everyone.
//! A rule may hold only within a time window (`from`, `until`): the policy then asks the
//! gateway for the time of each decision.

mod pattern;

use pattern::{Context, Pattern};
use portcullis_policy::glob::OneOrMany;
use portcullis_policy::{Decision, Needs, Policy, Request, export_policy};
use serde::Deserialize;
use std::net::IpAddr;

/// The policy's settings: `{"rules": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The rules, tried in order.
    pub rules: Vec<RuleSettings>,
}

/// One rule as written in the settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// What the request must look like for the rule to decide; `{}` matches every request.
    #[serde(rename = "match")]
    pub matches: MatchSettings,
    /// The actions the rule allows (`*` = all); `[]` makes it a deny rule.
    pub actions: Vec<String>,
    /// Free text, shown as the reason of the decisions this rule makes.
    #[serde(default)]
    pub comment: Option<String>,
    /// The rule holds from this instant on (RFC 3339 in UTC, `2027-01-01T00:00:00Z`).
    #[serde(default)]
    pub from: Option<String>,
    /// The rule holds until this instant, exclusive (RFC 3339 in UTC).
    #[serde(default)]
    pub until: Option<String>,
}

/// The `match` keys; each takes one pattern or a list of them (any may match).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSettings {
    account: Option<OneOrMany>,
    group: Option<OneOrMany>,
    name: Option<OneOrMany>,
    #[serde(rename = "type")]
    resource_type: Option<OneOrMany>,
    service: Option<OneOrMany>,
    ip: Option<OneOrMany>,
    /// Where the account comes from: `htpasswd`, `ldap`, or the issuer of its token.
    source: Option<OneOrMany>,
    /// Claims of the account's token, each matched by its own patterns.
    claims: Option<std::collections::BTreeMap<String, OneOrMany>>,
}

/// The configured policy: rules with every pattern compiled.
pub struct Acl {
    rules: Vec<Rule>,
}

struct Rule {
    account: Vec<Pattern>,
    group: Vec<Pattern>,
    name: Vec<Pattern>,
    resource_type: Vec<Pattern>,
    service: Vec<Pattern>,
    ip: Vec<ipnet::IpNet>,
    source: Vec<Pattern>,
    /// Each claim with its patterns: every one must have a value that one pattern matches.
    claims: Vec<(String, Vec<Pattern>)>,
    actions: Vec<String>,
    number: usize,
    comment: Option<String>,
    /// The window the rule holds in: `[from, until)`, Unix seconds; the text as written.
    window: Option<Window>,
}

struct Window {
    from: u64,
    until: u64,
    text: String,
}

impl Policy for Acl {
    type Settings = Settings;

    fn configure(settings: Settings) -> Result<Self, String> {
        let rules = settings
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| Rule::compile(i + 1, rule))
            .collect::<Result<_, _>>()?;
        Ok(Acl { rules })
    }

    fn needs(&self) -> Needs {
        if self.rules.iter().any(|rule| rule.window.is_some()) {
            Needs::TIME
        } else {
            Needs::empty()
        }
    }

    fn authorize(&self, request: &Request) -> Decision {
        match self.rules.iter().find(|rule| rule.matches(request)) {
            Some(rule) => {
                let decision = request.grant(rule.actions.iter().map(String::as_str));
                let reason = rule.reason(&decision.granted, request.scope.actions.len());
                decision.because(&reason).rule(&rule.number.to_string())
            }
            None => Decision::deny("no acl rule matched"),
        }
    }
}

export_policy!(Acl);

impl Rule {
    fn compile(number: usize, settings: RuleSettings) -> Result<Rule, String> {
        let at = |key: &str| format!("rule {number}, match.{key}");
        let patterns = |key: &str, values: Option<OneOrMany>| -> Result<Vec<Pattern>, String> {
            values
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|v| Pattern::parse(v).map_err(|e| format!("{}: {e}", at(key))))
                .collect()
        };
        let m = settings.matches;
        let ip =
            m.ip.map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|v| parse_net(v).map_err(|e| format!("{}: {e}", at("ip"))))
                .collect::<Result<_, _>>()?;
        if let Some(bad) = settings
            .actions
            .iter()
            .find(|a| a.is_empty() || a.contains(','))
        {
            return Err(format!(
                "rule {number}, actions: {bad:?} is not an action name"
            ));
        }
        let instant = |key: &str, text: &Option<String>| -> Result<Option<u64>, String> {
            text.as_deref()
                .map(|t| {
                    let time = humantime::parse_rfc3339(t).map_err(|e| {
                        format!(
                            "rule {number}, {key}: {t:?} is not an RFC 3339 instant in UTC \
                             (2027-01-01T00:00:00Z): {e}"
                        )
                    })?;
                    Ok(time
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()))
                })
                .transpose()
        };
        let (from, until) = (
            instant("from", &settings.from)?,
            instant("until", &settings.until)?,
        );
        let window = match (from, until) {
            (None, None) => None,
            (Some(from), Some(until)) if from >= until => {
                return Err(format!(
                    "rule {number}: from ({}) is not before until ({})",
                    settings.from.unwrap_or_default(),
                    settings.until.unwrap_or_default()
                ));
            }
            (from, until) => Some(Window {
                from: from.unwrap_or(0),
                until: until.unwrap_or(u64::MAX),
                text: match (&settings.from, &settings.until) {
                    (Some(f), Some(u)) => format!("from {f} until {u}"),
                    (Some(f), None) => format!("from {f}"),
                    (None, Some(u)) => format!("until {u}"),
                    (None, None) => String::new(),
                },
            }),
        };
        Ok(Rule {
            window,
            account: patterns("account", m.account)?,
            group: patterns("group", m.group)?,
            name: patterns("name", m.name)?,
            resource_type: patterns("type", m.resource_type)?,
            service: patterns("service", m.service)?,
            ip,
            source: patterns("source", m.source)?,
            claims: m
                .claims
                .unwrap_or_default()
                .into_iter()
                .map(|(claim, values)| {
                    let key = format!("claims.{claim}");
                    Ok((claim, patterns(&key, Some(values))?))
                })
                .collect::<Result<_, String>>()?,
            actions: settings.actions,
            number,
            comment: settings.comment,
        })
    }

    /// The decision's reason: the rule and its comment when it grants all that was asked;
    /// when it grants less, what it grants, so that a comment written for a grant ("everyone
    /// may pull team-a") never reads as the reason of a refusal.
    fn reason(&self, granted: &[String], asked: usize) -> String {
        let number = match &self.window {
            Some(window) => format!("{} ({})", self.number, window.text),
            None => self.number.to_string(),
        };
        match (&self.comment, granted.len() == asked) {
            (Some(comment), true) => format!("acl rule {number}: {comment}"),
            (None, true) => format!("acl rule {number}"),
            (comment, false) => {
                let grants = if granted.is_empty() {
                    "grants nothing".to_string()
                } else {
                    format!("grants only {}", granted.join(", "))
                };
                match comment {
                    Some(comment) => format!("acl rule {number} ({comment}) {grants}"),
                    None => format!("acl rule {number} {grants}"),
                }
            }
        }
    }

    fn matches(&self, request: &Request) -> bool {
        let account = &request.account;
        let ctx = Context {
            account: &account.name,
            groups: &account.groups,
            claims: &account.claims,
        };
        let any = |patterns: &[Pattern], value: &str| {
            patterns.is_empty() || patterns.iter().any(|p| p.matches(value, &ctx))
        };
        // Outside its window a rule does not match; with no time given (a gateway that did
        // not set it), a windowed rule never does.
        let in_window = self
            .window
            .as_ref()
            .is_none_or(|w| request.time != 0 && w.from <= request.time && request.time < w.until);
        in_window
            && any(&self.account, &account.name)
            && (self.group.is_empty() || account.groups.iter().any(|g| any(&self.group, g)))
            && any(&self.name, &request.scope.name)
            && any(&self.resource_type, &request.scope.type_)
            && any(&self.service, &request.service)
            && (self.ip.is_empty() || self.ip_matches(request.client_ip.as_deref()))
            && any(&self.source, &account.source)
            && self
                .claims
                .iter()
                .all(|(claim, patterns)| account.claims(claim).any(|value| any(patterns, value)))
    }

    fn ip_matches(&self, client_ip: Option<&str>) -> bool {
        match client_ip.and_then(|ip| ip.parse::<IpAddr>().ok()) {
            Some(ip) => self.ip.iter().any(|net| net.contains(&ip)),
            None => false,
        }
    }
}

/// A CIDR (`10.0.0.0/8`) or a single address.
fn parse_net(value: &str) -> Result<ipnet::IpNet, String> {
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is neither an IP address nor a CIDR like 10.0.0.0/8"))
}

#[cfg(test)]
mod tests;
