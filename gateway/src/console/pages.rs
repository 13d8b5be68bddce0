//! The console's HTML: one function per page, each taking what it shows and returning the
//! markup (maud escapes every value). No page needs JavaScript to work; the one script
//! only adds copy buttons. Styles and script are files of their own, embedded in the binary
//! and served under `/ui/assets/`, so the Content-Security-Policy allows nothing inline.

pub mod admin;
pub mod browse;
pub mod explain;
pub mod tokens;

use maud::{DOCTYPE, Markup, html};

/// The stylesheet, embedded.
pub const STYLESHEET: &str = include_str!("assets/console.css");
/// The script (copy buttons), embedded.
pub const SCRIPT: &str = include_str!("assets/console.js");

/// What every page of a signed-in person shows around its content.
pub struct Frame<'a> {
    /// The account name.
    pub user: &'a str,
    /// Where the account comes from, as shown (`htpasswd`, `ldap`, the SSO issuer).
    pub source: &'a str,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: &'a str,
    /// Whether the admin pages are listed.
    pub admin: bool,
    /// Whether personal tokens are on.
    pub tokens: bool,
    /// The navigation entry of this page.
    pub current: Section,
}

/// The navigation entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Repositories and their images.
    Browse,
    /// Why a request is granted or denied.
    Explain,
    /// Personal tokens.
    Tokens,
    /// The status page (admins).
    Status,
    /// The recent decisions (admins).
    Decisions,
    /// The shadow set's disagreements (admins).
    Shadow,
    /// None of the above (an error page).
    None,
}

/// The whole document: head, the navigation for a signed-in person, the content.
pub fn document(title: &str, frame: Option<&Frame>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Portcullis" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "Portcullis" }
                    @if let Some(frame) = frame {
                        nav aria-label="Console" {
                            ul {
                                (entry(frame, Section::Browse, "/ui/repositories", "Repositories"))
                                (entry(frame, Section::Explain, "/ui/explain", "Explain"))
                                @if frame.tokens {
                                    (entry(frame, Section::Tokens, "/ui/tokens", "Tokens"))
                                }
                                @if frame.admin {
                                    (entry(frame, Section::Status, "/ui/admin/status", "Status"))
                                    (entry(frame, Section::Decisions, "/ui/admin/decisions", "Decisions"))
                                    (entry(frame, Section::Shadow, "/ui/admin/shadow", "Shadow"))
                                }
                            }
                        }
                        form.signout method="post" action="/ui/logout" {
                            span.who title=(frame.source) { (frame.user) }
                            input type="hidden" name="csrf" value=(frame.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    (content)
                }
            }
        }
    }
}

fn entry(frame: &Frame, section: Section, href: &str, label: &str) -> Markup {
    html! {
        li {
            @if frame.current == section {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    }
}

/// The sign-in page: the password form, and the SSO button when SSO is configured.
pub fn sign_in(csrf: &str, user: &str, error: Option<&str>, sso: bool) -> Markup {
    let content = html! {
        section.signin {
            h1 { "Sign in" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="user" { "User name" }
                input #user type="text" name="user" value=(user) autocomplete="username"
                    autocapitalize="none" spellcheck="false" required autofocus;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
            @if sso {
                p.or { "or" }
                a.button href="/ui/sso" { "Sign in with SSO" }
            }
        }
    };
    document("Sign in", None, content)
}

/// A page that says what went wrong and what to do.
pub fn problem(frame: Option<&Frame>, title: &str, message: &str) -> Markup {
    let content = html! {
        h1 { (title) }
        p.error role="alert" { (message) }
        p { a href="/ui/" { "Back to the console" } }
    };
    document(title, frame, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_everywhere() {
        let hostile = r#"<script>alert("x")</script>"#;
        let frame = Frame {
            user: hostile,
            source: hostile,
            csrf: hostile,
            admin: true,
            tokens: true,
            current: Section::Browse,
        };
        let page = problem(Some(&frame), hostile, hostile).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        let page = sign_in(hostile, hostile, Some(hostile), true).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
    }
}
