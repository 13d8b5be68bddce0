//! The registry scope grammar, `type[(class)]:name:action[,action]`, parsed once at the
//! boundary into an owned [`Scope`]; anything off-grammar is an [`InvalidScope`], never a panic.

use std::fmt;
use std::str::FromStr;

/// Longest repository name the registry accepts.
const MAX_NAME_LEN: usize = 255;

/// One parsed scope, such as `repository:team/app:pull,push`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `repository`, `registry`, ...
    pub resource_type: String,
    /// The optional class in `repository(plugin):...`.
    pub class: Option<String>,
    /// The resource name, validated against the reference grammar.
    pub name: String,
    /// The actions, without duplicates, in the order asked.
    pub actions: Vec<String>,
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {scope:?}: {reason}")]
pub struct InvalidScope {
    /// The scope as received (cut to 100 characters).
    pub scope: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Scope {
    type Err = InvalidScope;

    fn from_str(s: &str) -> Result<Scope, InvalidScope> {
        let invalid = |reason: String| InvalidScope {
            scope: s.chars().take(100).collect(),
            reason,
        };
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| invalid("expected type:name:actions".into()))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected type:name:actions".into()))?;
        let (resource_type, class) = parse_type(kind).map_err(invalid)?;
        validate_name(name).map_err(invalid)?;
        let mut parsed: Vec<String> = Vec::new();
        for action in actions.split(',') {
            if !is_action(action) {
                return Err(invalid(format!(
                    "action {action:?} must be `*` or lowercase letters, digits and `-`"
                )));
            }
            if !parsed.iter().any(|a| a == action) {
                parsed.push(action.to_string());
            }
        }
        Ok(Scope {
            resource_type,
            class,
            name: name.to_string(),
            actions: parsed,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_type)?;
        if let Some(class) = &self.class {
            write!(f, "({class})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

fn parse_type(kind: &str) -> Result<(String, Option<String>), String> {
    let (name, class) = match kind.split_once('(') {
        Some((name, class)) => match class.strip_suffix(')') {
            Some(class) => (name, Some(class)),
            None => return Err(format!("type {kind:?} has an unclosed `(`")),
        },
        None => (kind, None),
    };
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !word(name) {
        return Err(format!(
            "type {name:?} must be lowercase letters and digits"
        ));
    }
    if let Some(class) = class.filter(|c| !word(c)) {
        return Err(format!(
            "class {class:?} must be lowercase letters and digits"
        ));
    }
    Ok((name.to_string(), class.map(str::to_string)))
}

fn is_action(action: &str) -> bool {
    action == "*"
        || (!action.is_empty()
            && action
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

/// Checks a repository name: `/`-separated path components, each lowercase alphanumerics
/// joined by `.`, `_`, `__` or runs of `-`; the first component may instead be a registry
/// host with a port (`host:5000/foo`).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    let mut components = name.split('/');
    let first = components.next().unwrap_or_default();
    if first.contains(':') {
        validate_host(first)?;
        if name == first {
            return Err(format!("{name:?} names a host but no repository"));
        }
    } else {
        validate_component(first)?;
    }
    components.try_for_each(validate_component)
}

fn validate_component(component: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "path component {component:?} must be lowercase letters and digits, \
             joined by `.`, `_`, `__` or `-`"
        ))
    };
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), String> {
    let (domain, port) = host.split_once(':').unwrap_or((host, ""));
    let port_ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if port_ok && domain.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("{host:?} is not a registry host:port"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Scope {
        s.parse()
            .unwrap_or_else(|e| panic!("{s} should parse: {e}"))
    }

    #[test]
    fn parses_the_common_forms() {
        let s = parse("repository:team/app:pull,push");
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.class, None);
        assert_eq!(s.name, "team/app");
        assert_eq!(s.actions, ["pull", "push"]);
        let s = parse("repository(plugin):x:pull");
        assert_eq!(s.class.as_deref(), Some("plugin"));
        let s = parse("registry:catalog:*");
        assert_eq!(
            (s.resource_type.as_str(), s.name.as_str()),
            ("registry", "catalog")
        );
        assert_eq!(s.actions, ["*"]);
    }

    #[test]
    fn a_host_port_name_keeps_its_colon() {
        let s = parse("repository:host:5000/foo:pull");
        assert_eq!(s.name, "host:5000/foo");
        assert_eq!(s.actions, ["pull"]);
    }

    #[test]
    fn separators_follow_the_reference_grammar() {
        for ok in ["a", "a.b", "a_b", "a__b", "a-b", "a---b", "a/b/c", "0/1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a..b", "a___b", "a/", "/a", "a//b", "-a", "a-", "a.", "a/./b", "a/../b", "é",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"a".repeat(255)).is_ok());
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn duplicate_actions_collapse_and_round_trip() {
        let s = parse("repository:a:pull,push,pull");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:a:pull,push");
    }

    #[test]
    fn bad_scopes_say_what_is_wrong() {
        for (bad, why) in [
            ("repository", "expected type:name:actions"),
            ("repository:a", "expected type:name:actions"),
            ("repository:Foo:pull", "path component \"Foo\""),
            ("repository:a:", "action \"\""),
            ("repository:a:pull,,push", "action \"\""),
            ("Repository:a:pull", "type \"Repository\""),
            ("repository(x:a:pull", "unclosed"),
            (":a:pull", "type \"\""),
            ("repository:host:port/a:pull", "not a registry host:port"),
            (
                "repository:host:5000:pull",
                "names a host but no repository",
            ),
        ] {
            let err = bad.parse::<Scope>().expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
