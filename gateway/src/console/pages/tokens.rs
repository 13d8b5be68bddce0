//! Personal tokens: the form that makes one, the page that shows it once, and revoking.

use super::{Frame, document};
use maud::{Markup, html};

/// What the forms were filled with, to show again beside an error.
#[derive(Debug, Default)]
pub struct Draft {
    /// The token's name.
    pub name: String,
    /// Days it lives.
    pub days: String,
    /// Repository patterns, one per line.
    pub repositories: String,
    /// Actions ticked.
    pub actions: Vec<String>,
}

/// `/ui/tokens`: make a token, revoke one.
pub fn tokens(
    frame: &Frame,
    max_days: u64,
    draft: &Draft,
    error: Option<&str>,
    notice: Option<&str>,
) -> Markup {
    let content = html! {
        h1 { "Personal tokens" }
        p {
            "A personal token is a password for " code { "docker login" } ", podman, skopeo, "
            "containerd and CI jobs: it works as long as you do, lets through no more than the "
            "policies let you, and can be narrowed to some repositories and actions. "
            "Revoke it here when it is no longer needed or may have leaked."
        }
        @if let Some(notice) = notice {
            p.ok role="status" #notice { (notice) }
        }
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
        h2 { "Make a token" }
        form method="post" action="/ui/tokens" {
            input type="hidden" name="csrf" value=(frame.csrf);
            label for="token-name" { "Name" }
            input #token-name type="text" name="name" value=(draft.name) required maxlength="64"
                placeholder="laptop, ci-release, …";
            label for="days" { "Expires in (days, at most " (max_days) ")" }
            input #days type="number" name="days" min="1" max=(max_days) required
                value=(if draft.days.is_empty() { max_days.min(30).to_string() } else { draft.days.clone() });
            label for="repositories" { "Only these repositories (optional; one per line, * any run of characters)" }
            textarea #repositories name="repositories" rows="3" placeholder="team/*" { (draft.repositories) }
            fieldset {
                legend { "Only these actions (none ticked: all the policies allow)" }
                @for action in ["pull", "push", "delete"] {
                    label.check {
                        input type="checkbox" name="actions" value=(action) checked[draft.actions.iter().any(|a| a == action)];
                        " " (action)
                    }
                }
            }
            button type="submit" { "Make token" }
        }
        h2 { "Revoke a token" }
        form method="post" action="/ui/tokens/revoke" {
            input type="hidden" name="csrf" value=(frame.csrf);
            label for="revoke" { "Its id (shown when it was made), or the token itself" }
            input #revoke type="text" name="token" required autocapitalize="none" spellcheck="false";
            button.danger type="submit" { "Revoke" }
        }
    };
    document("Personal tokens", Some(frame), content)
}

/// What the page showing a new token says of it.
pub struct Made<'a> {
    /// The token: shown once, never again.
    pub token: &'a str,
    /// Its id, for revoking it.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// When it ends, RFC 3339.
    pub expires: &'a str,
    /// Where people log in.
    pub host: &'a str,
    /// What it is narrowed to, as a sentence; None when it is not.
    pub narrowed: Option<String>,
}

/// The new token, shown once.
pub fn made(frame: &Frame, made: &Made) -> Markup {
    let login = format!("docker login {} -u {}", made.host, frame.user);
    let content = html! {
        h1 { "Your new token" }
        p.ok role="status" { "Copy it now: it is shown this once, and Portcullis keeps no copy." }
        code.secret #token { (made.token) }
        button.secondary type="button" data-copy=(made.token) hidden { "Copy" }
        dl.facts #made {
            dt { "Name" } dd { (made.name) }
            dt { "Id" } dd.mono #token-id { (made.id) }
            dt { "Expires" } dd { (made.expires) }
            dt { "Grants" } dd { (made.narrowed.as_deref().unwrap_or("what the policies allow you")) }
        }
        h2 { "Use it" }
        p { "Log in, and paste the token as the password:" }
        div.pull {
            code { (login) }
            button.secondary type="button" data-copy=(login) hidden { "Copy" }
        }
        p.muted { "Keep the id: it revokes the token, here or in the revocation file." }
        p { a href="/ui/tokens" { "Back to personal tokens" } }
    };
    document("Your new token", Some(frame), content)
}
