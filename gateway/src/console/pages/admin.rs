//! The admins' pages: what is serving (the `/status` document, rendered), the recent
//! decisions, filtered, and what the shadow set would decide otherwise.

use super::{Frame, document};
use maud::{Markup, html};
use serde_json::Value;
use std::sync::Arc;

/// A JSON value as the pages show it: text as is, a list of texts joined, nothing for null.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Each policy's fault or reason of a decision's `answers`, one per line.
fn reasons(answers: &Value) -> Markup {
    html! {
        @for answer in answers.as_array().into_iter().flatten() {
            @if !answer["fault"].is_null() {
                (text(&answer["policy"])) ": " span.error { (text(&answer["fault"])) } br;
            } @else if !answer["reason"].is_null() {
                (text(&answer["policy"])) ": " (text(&answer["reason"])) br;
            }
        }
    }
}

/// `/ui/admin/status`: the status document as tables.
pub fn status(frame: &Frame, status: &Value) -> Markup {
    let list = |value: &Value| -> Vec<Value> { value.as_array().cloned().unwrap_or_default() };
    let content = html! {
        h1 { "Status" }
        @if let Some(error) = status["config_reload_error"].as_str() {
            p.error role="alert" { "The last edit of the config was refused: " (error) }
        }
        dl.facts #general {
            dt { "Version" } dd { (text(&status["version"])) }
            dt { "Mode" } dd { (text(&status["mode"])) }
            dt { "Service" } dd { (text(&status["service"])) }
            dt { "Issuer" } dd { (text(&status["issuer"])) }
            @if !status["upstream"].is_null() { dt { "Registry" } dd { (text(&status["upstream"])) } }
            dt { "htpasswd users" } dd { (text(&status["users"])) }
            @if !status["revoked_tokens"].is_null() {
                dt { "Revoked personal tokens" } dd { (text(&status["revoked_tokens"])) }
            }
        }
        h2 { "Policies" }
        div.table {
            table #policies {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Module" } th scope="col" { "Digest" }
                    th scope="col" { "World" } th scope="col" { "Loaded" } th scope="col" { "Last reload error" }
                } }
                tbody {
                    @for policy in list(&status["policies"]) {
                        tr {
                            td { (text(&policy["name"])) }
                            td.mono { (text(&policy["module"])) }
                            td.mono { (text(&policy["digest"])) }
                            td { (text(&policy["world"])) }
                            td { (text(&policy["loaded_at"])) }
                            td { @if policy["last_reload_error"].is_null() { span.ok { "none" } } @else { span.error { (text(&policy["last_reload_error"])) } } }
                        }
                    }
                }
            }
        }
        h2 { "Signing keys" }
        dl.facts #keys {
            dt { "Current" } dd.mono { (text(&status["keys"]["current"])) }
            @for previous in list(&status["keys"]["previous"]) {
                dt { "Rotated out" } dd.mono { (text(&previous)) }
            }
        }
        h2 { "Identity sources" }
        div.table {
            table #sources {
                thead { tr { th scope="col" { "Source" } th scope="col" { "State" } } }
                tbody {
                    tr { td { "htpasswd" } td { (text(&status["users"])) " users" } }
                    @if !status["ldap"].is_null() {
                        tr {
                            td { "LDAP " span.mono { (text(&status["ldap"]["url"])) } }
                            td { @if status["ldap"]["last_error"].is_null() { span.ok { "no failure seen" } } @else { span.error { (text(&status["ldap"]["last_error"])) } } }
                        }
                    }
                    @for issuer in list(&status["oidc"]) {
                        tr {
                            td { "OIDC " span.mono { (text(&issuer["issuer"])) } }
                            td {
                                (text(&issuer["keys"])) " keys"
                                @if !issuer["last_error"].is_null() { br; span.error { (text(&issuer["last_error"])) } }
                            }
                        }
                    }
                }
            }
        }
    };
    document("Status", Some(frame), content)
}

/// `/ui/admin/decisions`: the recent decisions matching the filters, newest first.
pub fn decisions(
    frame: &Frame,
    account: &str,
    repository: &str,
    decisions: &[Arc<Value>],
    kept: usize,
) -> Markup {
    let content = html! {
        h1 { "Recent decisions" }
        p.muted { "The last " (kept) " decisions this replica made (the decision log holds them all)." }
        form.inline method="get" action="/ui/admin/decisions" {
            div {
                label for="account" { "Account" }
                input #account type="text" name="account" value=(account) autocapitalize="none" spellcheck="false";
            }
            div {
                label for="repository" { "Repository contains" }
                input #repository type="text" name="repository" value=(repository) autocapitalize="none" spellcheck="false";
            }
            button type="submit" { "Filter" }
        }
        @if decisions.is_empty() {
            p #empty { "No decision matches." }
        } @else {
            div.table {
                table #decisions {
                    thead { tr {
                        th scope="col" { "Time" } th scope="col" { "Via" } th scope="col" { "Account" }
                        th scope="col" { "Scope" } th scope="col" { "Granted" } th scope="col" { "Reasons" }
                    } }
                    tbody {
                        @for decision in decisions {
                            tr {
                                td.time { (text(&decision["time"])) }
                                td { (text(&decision["source"])) }
                                td { @if decision["account"] == "" { "(anonymous)" } @else { (text(&decision["account"])) } }
                                td.mono { (text(&decision["scope"])) }
                                td { (text(&decision["granted"])) }
                                td { (reasons(&decision["answers"])) }
                            }
                        }
                    }
                }
            }
        }
    };
    document("Decisions", Some(frame), content)
}

/// `/ui/admin/shadow`: the shadow set's policies and counts (`shadow`, as `/status` has it;
/// null when none is configured), and its latest disagreements, newest first.
pub fn shadow(frame: &Frame, shadow: &Value, latest: &[Arc<Value>]) -> Markup {
    let content = html! {
        h1 { "Shadow policies" }
        @if shadow.is_null() {
            p #none { "No shadow set is configured: add [[shadow]] blocks to the config to decide a candidate beside the serving policies (docs/policies.md)." }
        } @else {
            p.muted { "The candidate set is decided beside the serving policies for every decision and never enforced." }
            dl.facts #counts {
                @for change in ["same", "widened", "narrowed", "skipped"] {
                    dt { (change) } dd { (text(&shadow["decisions"][change])) }
                }
            }
            h2 { "Candidate policies" }
            div.table {
                table #candidates {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Digest" } th scope="col" { "Last reload error" } } }
                    tbody {
                        @for policy in shadow["policies"].as_array().into_iter().flatten() {
                            tr {
                                td { (text(&policy["name"])) }
                                td.mono { (text(&policy["digest"])) }
                                td { @if policy["last_reload_error"].is_null() { span.ok { "none" } } @else { span.error { (text(&policy["last_reload_error"])) } } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Latest disagreements" }
        @if latest.is_empty() {
            p #agreed { "None so far." }
        } @else {
            div.table {
                table #disagreements {
                    thead { tr {
                        th scope="col" { "Time" } th scope="col" { "Change" } th scope="col" { "Account" }
                        th scope="col" { "Scope" } th scope="col" { "Operation" } th scope="col" { "Serving grants" }
                        th scope="col" { "Candidate grants" } th scope="col" { "Candidate's reasons" }
                    } }
                    tbody {
                        @for d in latest {
                            tr {
                                td.time { (text(&d["time"])) }
                                td { (text(&d["shadow"]["change"])) }
                                td { @if d["account"] == "" { "(anonymous)" } @else { (text(&d["account"])) } }
                                td.mono { (text(&d["scope"])) }
                                td.mono { (text(&d["operation"])) }
                                td { (text(&d["serving"])) }
                                td { (text(&d["shadow"]["granted"])) }
                                td { (reasons(&d["shadow"]["answers"])) }
                            }
                        }
                    }
                }
            }
        }
    };
    document("Shadow", Some(frame), content)
}
