//! The `signed-images` policy: repositories whose images may be pulled only when a named
//! key signed them (cosign's key-based signatures, as cosign and skopeo push them). It
//! decides with the signatures fact: the configured keys (`[signatures] keys`) with a valid
//! signature over exactly the manifest served, which only gateway mode gathers. Everything
//! but manifest pulls it grants, leaving it to the policies it is stacked with.

use portcullis_policy::glob::{OneOrMany, matches};
use portcullis_policy::{Decision, Kind, Needs, Policy, Reference, Request, export_policy};
use serde::Deserialize;

/// The `settings` of a `[[policy]]` running this module: `{"rules": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The rules; the first whose repositories match decides a pull.
    pub rules: Vec<RuleSettings>,
}

/// One rule: which repositories, and whose signature a pull needs there.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Repository patterns (`*` within one path component, `**` across them).
    pub repositories: OneOrMany,
    /// Key names of `[signatures] keys`; a valid signature by any of them will do.
    pub keys: Vec<String>,
}

/// The configured policy.
pub struct SignedImages {
    rules: Vec<Rule>,
}

struct Rule {
    number: usize,
    repositories: Vec<String>,
    keys: Vec<String>,
}

impl Policy for SignedImages {
    type Settings = Settings;

    fn configure(settings: Settings) -> Result<Self, String> {
        if settings.rules.is_empty() {
            return Err(
                "`rules` must hold at least one rule, e.g. {\"repositories\": \"prod/**\", \
                 \"keys\": [\"release\"]}"
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
                if repositories.is_empty() || repositories.iter().any(String::is_empty) {
                    return Err(format!(
                        "rule {number}: `repositories` must name at least one pattern"
                    ));
                }
                if rule.keys.is_empty() || rule.keys.iter().any(String::is_empty) {
                    return Err(format!(
                        "rule {number}: `keys` must name at least one key of [signatures] keys"
                    ));
                }
                Ok(Rule {
                    number,
                    repositories,
                    keys: rule.keys,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(SignedImages { rules })
    }

    fn needs(&self) -> Needs {
        Needs::SIGNATURES
    }

    fn authorize(&self, request: &Request) -> Decision {
        let everything = request.grant(["*"]);
        let pulls_manifest = request.operation.as_ref().is_some_and(|op| {
            op.kind == Kind::Manifest
                && (op.method == "GET" || op.method == "HEAD")
                && !matches!(&op.reference, Some(Reference::Tag(tag)) if is_attachment(tag))
        });
        if !pulls_manifest {
            return everything;
        }
        let Some(rule) = self.rules.iter().find(|r| {
            r.repositories
                .iter()
                .any(|p| matches(p, &request.scope.name))
        }) else {
            return everything;
        };
        let wanted = rule.keys.join(", ");
        let withheld = |why: String| {
            let kept = request
                .scope
                .actions
                .iter()
                .map(String::as_str)
                .filter(|a| *a != "pull" && *a != "*");
            request
                .grant(kept)
                .because(&format!("signed-images rule {}: {why}", rule.number))
                .rule(&rule.number.to_string())
        };
        match &request.facts.signatures {
            Some(found) if found.digest.is_empty() => {
                withheld("the reference names no manifest, and nothing unsigned is served".into())
            }
            None => withheld(format!(
                "the signatures of the manifest are unknown (it needs a signature by {wanted})"
            )),
            Some(found) => match found.keys.iter().find(|k| rule.keys.contains(k)) {
                Some(key) => everything
                    .because(&format!(
                        "signed-images rule {}: {} is signed by {key}",
                        rule.number, found.digest
                    ))
                    .rule(&rule.number.to_string()),
                None if found.keys.is_empty() => withheld(format!(
                    "{} has no valid signature by a configured key; it needs one by {wanted}",
                    found.digest
                )),
                None => withheld(format!(
                    "{} is signed by {} only; it needs a signature by {wanted}",
                    found.digest,
                    found.keys.join(", ")
                )),
            },
        }
    }
}

/// cosign's attachments beside an image (`sha256-<hex>.sig`, `.att`, `.sbom`): what
/// signers and verifiers read to sign and check, never an image to run.
fn is_attachment(tag: &str) -> bool {
    tag.strip_prefix("sha256-").is_some_and(|rest| {
        let (hex, kind) = rest.split_once('.').unwrap_or((rest, ""));
        hex.len() == 64
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && matches!(kind, "sig" | "att" | "sbom")
    })
}

export_policy!(SignedImages);

#[cfg(test)]
mod tests;
