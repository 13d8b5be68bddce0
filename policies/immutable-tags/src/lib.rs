//! The `immutable-tags` policy: tags that, once they exist, cannot be overwritten or deleted
//! (optionally except by some groups). Pushing the digest a tag already names is allowed (a
//! CI retry); deleting by digest a manifest that an immutable tag names is refused too, since
//! the registry would drop the tag with it. It decides with facts from the registry (what a
//! tag names now, which tags name a digest), which only gateway mode gathers; token requests
//! name no tag and are granted, leaving them to the policies it is stacked with.

use portcullis_policy::glob::{OneOrMany, matches};
use portcullis_policy::{Decision, Kind, Needs, Policy, Reference, Request, TagNow, export_policy};
use serde::Deserialize;

/// The `settings` of a `[[policy]]` running this module: `{"rules": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The rules; a tag is immutable when any rule covers it.
    pub rules: Vec<RuleSettings>,
}

/// One rule: which tags of which repositories are immutable, and for whom not.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Repository patterns (`*` within one path component, `**` across them).
    pub repositories: OneOrMany,
    /// Tag patterns (`v*`, `release-?.*`).
    pub tags: OneOrMany,
    /// Groups whose members may still move and delete these tags.
    #[serde(default)]
    pub except_groups: Vec<String>,
}

/// The configured policy.
pub struct ImmutableTags {
    rules: Vec<Rule>,
}

struct Rule {
    number: usize,
    repositories: Vec<String>,
    tags: Vec<String>,
    except_groups: Vec<String>,
}

impl Rule {
    /// Whether `tag` of `repository` is immutable for `request`'s account under this rule.
    fn binds(&self, request: &Request, tag: &str) -> bool {
        self.repositories
            .iter()
            .any(|p| matches(p, &request.scope.name))
            && self.tags.iter().any(|p| matches(p, tag))
            && !self
                .except_groups
                .iter()
                .any(|g| request.account.in_group(g))
    }
}

impl Policy for ImmutableTags {
    type Settings = Settings;

    fn configure(settings: Settings) -> Result<Self, String> {
        if settings.rules.is_empty() {
            return Err(
                "`rules` must hold at least one rule, e.g. {\"repositories\": \"releases/**\", \
                 \"tags\": [\"v*\"]}"
                    .into(),
            );
        }
        let rules = settings
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                let number = i + 1;
                let repositories = rule.repositories.into_vec();
                let tags = rule.tags.into_vec();
                if repositories.is_empty() || tags.is_empty() {
                    return Err(format!(
                        "rule {number}: `repositories` and `tags` must each name at least one \
                         pattern"
                    ));
                }
                if let Some(empty) = repositories.iter().chain(&tags).find(|p| p.is_empty()) {
                    return Err(format!("rule {number}: {empty:?} is not a pattern"));
                }
                Ok(Rule {
                    number,
                    repositories,
                    tags,
                    except_groups: rule.except_groups,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(ImmutableTags { rules })
    }

    fn needs(&self) -> Needs {
        Needs::TAG_DIGEST | Needs::DIGEST_TAGS
    }

    fn authorize(&self, request: &Request) -> Decision {
        let everything = request.grant(["*"]);
        let Some(op) = request
            .operation
            .as_ref()
            .filter(|op| op.kind == Kind::Manifest)
        else {
            return everything;
        };
        let facts = &request.facts;
        match (op.method.as_str(), &op.reference) {
            ("PUT", Some(Reference::Tag(tag))) => {
                let Some(rule) = self.rules.iter().find(|r| r.binds(request, tag)) else {
                    return everything;
                };
                match (&facts.tag_digest, &facts.pushed_digest) {
                    (Some(TagNow::Absent), _) => everything,
                    (Some(TagNow::At(now)), Some(pushed)) if now == pushed => everything,
                    (Some(TagNow::At(now)), _) => refuse(
                        request,
                        rule,
                        &format!("tag {tag:?} is immutable: it names {now} and cannot be moved"),
                    ),
                    (None, _) => refuse(
                        request,
                        rule,
                        &format!("tag {tag:?} is immutable and what it names now is unknown"),
                    ),
                }
            }
            ("DELETE", Some(Reference::Tag(tag))) => {
                match self.rules.iter().find(|r| r.binds(request, tag)) {
                    // A tag that does not exist deletes nothing: the registry says so.
                    Some(_) if facts.tag_digest == Some(TagNow::Absent) => everything,
                    Some(rule) => refuse(
                        request,
                        rule,
                        &format!("tag {tag:?} is immutable and cannot be deleted"),
                    ),
                    None => everything,
                }
            }
            ("DELETE", Some(Reference::Digest(digest))) => {
                let Some(tags) = &facts.digest_tags else {
                    // Unknown: refused if any rule could bind a tag of this repository.
                    return match self.rules.iter().find(|r| {
                        r.repositories
                            .iter()
                            .any(|p| matches(p, &request.scope.name))
                    }) {
                        Some(rule) => refuse(
                            request,
                            rule,
                            &format!("which tags name {digest} is unknown; immutable tags may"),
                        ),
                        None => everything,
                    };
                };
                for tag in tags {
                    if let Some(rule) = self.rules.iter().find(|r| r.binds(request, tag)) {
                        return refuse(
                            request,
                            rule,
                            &format!(
                                "{digest} is named by the immutable tag {tag:?}: deleting it \
                                 would delete the tag"
                            ),
                        );
                    }
                }
                everything
            }
            _ => everything,
        }
    }
}

/// Withholds `push` and `delete`, keeping what else was asked.
fn refuse(request: &Request, rule: &Rule, why: &str) -> Decision {
    let kept = request
        .scope
        .actions
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "push" && *a != "delete" && *a != "*");
    request
        .grant(kept)
        .because(&format!("immutable-tags rule {}: {why}", rule.number))
        .rule(&rule.number.to_string())
}

export_policy!(ImmutableTags);

#[cfg(test)]
mod tests;
