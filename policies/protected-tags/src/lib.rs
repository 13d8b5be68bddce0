//! The `protected-tags` policy: release tags (`v*`, `latest`, ...) that only some groups may
//! push or delete. It needs the operation the gateway sees, so it protects tags in gateway
//! mode; everything else (pulls, pushes by digest or of other tags) it grants, leaving those
//! to the policies it is stacked with. A delete by digest names no tag and is not guarded.

use portcullis_policy::{Decision, Kind, Policy, Reference, Request, export_policy};
use regex_lite::Regex;
use serde::Deserialize;

/// The actions a protected tag keeps from everyone outside the groups.
const GUARDED: [&str; 2] = ["push", "delete"];

/// The `settings` of a `[[policy]]` running this module.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Tag patterns: `*` is any run of characters, `?` one character.
    pub tags: Vec<String>,
    /// The groups whose members may push and delete protected tags.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Repository patterns the protection applies to (`*` within one path component, `**`
    /// across them); all repositories when absent.
    pub repositories: Option<Vec<String>>,
}

/// The configured policy.
pub struct ProtectedTags {
    tags: Vec<Regex>,
    groups: Vec<String>,
    repositories: Option<Vec<Regex>>,
}

impl Policy for ProtectedTags {
    type Settings = Settings;

    fn configure(settings: Settings) -> Result<Self, String> {
        if settings.tags.is_empty() {
            return Err(
                "`tags` must list at least one tag pattern, e.g. [\"v*\", \"latest\"]".into(),
            );
        }
        let compile_all = |key: &str, patterns: &[String]| {
            patterns
                .iter()
                .map(|p| glob(p).map_err(|e| format!("`{key}`: pattern {p:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ProtectedTags {
            tags: compile_all("tags", &settings.tags)?,
            groups: settings.groups,
            repositories: match &settings.repositories {
                Some(patterns) => Some(compile_all("repositories", patterns)?),
                None => None,
            },
        })
    }

    fn authorize(&self, request: &Request) -> Decision {
        let everything = request.grant(["*"]);
        let Some(tag) = self.protected_tag(request) else {
            return everything;
        };
        if self.groups.iter().any(|g| request.account.in_group(g)) {
            return everything;
        }
        let allowed = request
            .scope
            .actions
            .iter()
            .map(String::as_str)
            .filter(|a| !GUARDED.contains(a) && *a != "*");
        request.grant(allowed).because(&format!(
            "tag {tag:?} is protected: only members of {:?} may push or delete it",
            self.groups
        ))
    }
}

impl ProtectedTags {
    /// The tag a request writes, if it is a manifest operation on a protected tag.
    fn protected_tag<'r>(&self, request: &'r Request) -> Option<&'r str> {
        let operation = request.operation.as_ref()?;
        let Some(Reference::Tag(tag)) = &operation.reference else {
            return None;
        };
        let in_scope = matches!(operation.kind, Kind::Manifest)
            && request.scope.is_repository()
            && self.tags.iter().any(|p| p.is_match(tag))
            && self
                .repositories
                .as_ref()
                .is_none_or(|repos| repos.iter().any(|p| p.is_match(&request.scope.name)));
        in_scope.then_some(tag.as_str())
    }
}

/// An anchored regex for a glob: `**` any run, `*` any run without `/`, `?` one character
/// other than `/`; everything else literal.
fn glob(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    let mut regex = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                regex.push_str(".*");
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            other => regex.push_str(&regex_lite::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }
    regex.push('$');
    Regex::new(&regex).map_err(|e| e.to_string())
}

export_policy!(ProtectedTags);

#[cfg(test)]
mod tests;
