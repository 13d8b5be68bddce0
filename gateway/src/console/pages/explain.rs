//! Explain: why a request is granted or denied, policy by policy, as a dry run.

use super::{Frame, document};
use crate::policy::{Outcome, Reference, Request};
use maud::{Markup, html};

/// The actions the explain form offers.
pub const ACTIONS: [&str; 3] = ["pull", "push", "delete"];

/// What the form was filled with.
#[derive(Debug, Default)]
pub struct Question {
    /// The repository.
    pub name: String,
    /// `pull`, `push` or `delete`.
    pub action: String,
    /// A tag or digest, to ask as gateway mode would (with the operation).
    pub reference: String,
    /// Admins: the account to ask for (empty: oneself).
    pub account: String,
    /// Admins: groups to ask with instead of the account's own, comma-separated.
    pub groups: String,
    /// Admins: claims to ask with instead of the account's own, `name=value` per line.
    pub claims: String,
    /// Admins: the account's source to ask with instead of its own.
    pub source: String,
}

impl Question {
    /// Whether an admin asked for another account, or with other groups, claims or source.
    pub fn on_behalf(&self) -> bool {
        !(self.account.is_empty()
            && self.groups.is_empty()
            && self.claims.is_empty()
            && self.source.is_empty())
    }
}

/// `/ui/explain`: the form, and the answer when one was asked.
pub fn explain(
    frame: &Frame,
    question: &Question,
    answer: Option<(&Request, &Outcome)>,
    error: Option<&str>,
) -> Markup {
    let content = html! {
        h1 { "Explain a decision" }
        p.muted { "Ask the policies serving now what they answer, and why. Nothing is changed or logged." }
        form method="get" action="/ui/explain" {
            label for="name" { "Repository" }
            input #name type="text" name="name" value=(question.name) required
                autocapitalize="none" spellcheck="false" placeholder="team/app";
            label for="action" { "Action" }
            select #action name="action" {
                @for action in ACTIONS {
                    option value=(action) selected[question.action == action] { (action) }
                }
            }
            label for="reference" { "Tag or digest (optional)" }
            input #reference type="text" name="ref" value=(question.reference)
                autocapitalize="none" spellcheck="false" placeholder="as gateway mode sees a request for it";
            @if frame.admin {
                details.panel open[question.on_behalf()] {
                    summary { "On behalf of another account (admins)" }
                    label for="account" { "Account (empty: yourself)" }
                    input #account type="text" name="account" value=(question.account)
                        autocapitalize="none" spellcheck="false";
                    label for="groups" { "Groups, comma-separated (empty: the account's own)" }
                    input #groups type="text" name="groups" value=(question.groups);
                    label for="claims" { "Claims, one name=value per line (empty: the account's own)" }
                    textarea #claims name="claims" rows="3" { (question.claims) }
                    label for="source" { "Source (empty: the account's own)" }
                    input #source type="text" name="source" value=(question.source)
                        placeholder="htpasswd, ldap, or an issuer URL";
                }
            }
            button type="submit" { "Explain" }
        }
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
        @if let Some((request, outcome)) = answer {
            (verdict(request, outcome))
        }
    };
    document("Explain", Some(frame), content)
}

fn verdict(request: &Request, outcome: &Outcome) -> Markup {
    let asked = &request.scope.actions;
    let granted = asked.iter().all(|a| outcome.granted.contains(a));
    let account = &request.account;
    html! {
        section #verdict aria-live="polite" {
            h2 {
                @if granted {
                    span.verdict-granted { "Granted" }
                } @else {
                    span.verdict-denied { "Denied" }
                }
                ": " (asked.join(", ")) " on " (request.scope.name)
            }
            @if !granted {
                @if let Some(why) = outcome.withheld_by(asked) {
                    p #why { "Refused by " strong { (why) } "." }
                }
            }
            div.table {
                table #answers {
                    thead { tr {
                        th scope="col" { "Policy" }
                        th scope="col" { "Granted" }
                        th scope="col" { "Reason" }
                    } }
                    tbody {
                        @for said in &outcome.answers {
                            tr {
                                td { (said.policy) br; span.muted.mono title=(said.digest) { (short(&said.digest)) } }
                                td {
                                    @if let Some((kind, message)) = &said.fault {
                                        span.verdict-denied { "fault (" (kind) ")" } br; (message)
                                    } @else if said.granted.is_empty() {
                                        span.verdict-denied { "nothing" }
                                    } @else {
                                        (said.granted.join(", "))
                                    }
                                }
                                td { (said.reason.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
            @if outcome.answers.is_empty() {
                p.error { "No policy answered: everything is denied." }
            }
            h2 { "What the policies saw" }
            dl.facts #request {
                dt { "Account" } dd { (if account.name.is_empty() { "(anonymous)" } else { &account.name }) }
                dt { "Source" } dd { (account.source) }
                dt { "Groups" } dd { (if account.groups.is_empty() { "(none)".to_string() } else { account.groups.join(", ") }) }
                @if !account.claims.is_empty() {
                    dt { "Claims" }
                    dd { @for (name, value) in &account.claims { span.mono { (name) "=" (value) } br; } }
                }
                dt { "Scope" } dd.mono { (request.scope.type_) ":" (request.scope.name) ":" (asked.join(",")) }
                dt { "Client address" } dd { (request.client_ip.as_deref().unwrap_or("")) }
                dt { "Operation" }
                dd {
                    @if let Some(operation) = &request.operation {
                        (operation.method) " " (operation.kind.name())
                        @if let Some(reference) = &operation.reference {
                            " "
                            @match reference {
                                Reference::Tag(tag) => { "tag " span.mono { (tag) } }
                                Reference::Digest(digest) => { "digest " span.mono { (digest) } }
                            }
                        }
                        " (as gateway mode asks)"
                    } @else {
                        "none (as a token request asks)"
                    }
                }
            }
        }
    }
}

/// `sha256:0123456789ab`: enough of a digest to tell modules apart.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}
