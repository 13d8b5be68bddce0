//! Personal tokens in the console: making one (shown once) and revoking one by id or by the
//! token itself. A person revokes their own tokens; an admin any.

use super::{Answer, Failure, Form, Person, Visit, frame};
use crate::console::pages::Section;
use crate::console::pages::tokens::{self, Draft, Made};
use crate::identity::personal::{MAX_NAME, MAX_REPOSITORIES, PREFIX, Refusal, is_id};
use crate::identity::{Limit, Personal, PersonalTokens};
use hyper::StatusCode;
use std::time::{Duration, SystemTime};

const ACTIONS: [&str; 3] = ["pull", "push", "delete"];

/// `GET /ui/tokens`.
pub(super) fn page(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    enabled(visit)?;
    // The notice echoes an id only when it is shaped like one: a link cannot make the page
    // say anything else.
    let notice = visit.query.get("revoked").filter(|id| is_id(id)).map(|id| {
        format!(
            "Revoked {id}. Every replica refuses it once it reads the revocation file \
                 (about a second)."
        )
    });
    Ok(Answer::page(tokens::tokens(
        &frame(visit, person, Section::Tokens),
        visit.console.config.token_max_days,
        &Draft::default(),
        None,
        notice.as_deref(),
    )))
}

/// `POST /ui/tokens`: makes a token for the signed-in person.
pub(super) fn make(visit: &Visit, person: &Person, form: &Form) -> Result<Answer, Failure> {
    let personal_tokens = enabled(visit)?;
    let max_days = visit.console.config.token_max_days;
    let draft = Draft {
        name: form.get("name").trim().to_string(),
        days: form.get("days").trim().to_string(),
        repositories: form.get("repositories").to_string(),
        actions: form.all("actions"),
    };
    let limit = match checked(&draft, max_days) {
        Ok(limit) => limit,
        Err(why) => {
            return Ok(Answer::Page {
                status: StatusCode::BAD_REQUEST,
                markup: tokens::tokens(
                    &frame(visit, person, Section::Tokens),
                    max_days,
                    &draft,
                    Some(&why),
                    None,
                ),
                cookies: Vec::new(),
            });
        }
    };
    let days: u64 = draft.days.parse().unwrap_or(1);
    let session = &person.session;
    let now = crate::identity::unix_now();
    let expires = now.saturating_add(days * 24 * 3600);
    let personal = Personal {
        id: personal_tokens
            .new_id(&session.user, expires)
            .map_err(Failure::internal)?,
        user: session.user.clone(),
        source: session.source.clone(),
        credential: session
            .credential
            .clone()
            .filter(|c| c.starts_with("ldap:")),
        groups: if session.is_sso() {
            session.groups.clone()
        } else {
            Vec::new()
        },
        claims: if session.is_sso() {
            session.claims.clone()
        } else {
            Vec::new()
        },
        provider_refresh: session.provider_refresh.clone(),
        name: draft.name.clone(),
        issued: now,
        expires,
        limit,
    };
    if session.is_sso() && personal.provider_refresh.is_none() {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "No token without the provider's consent",
            "Your identity provider gave no refresh token at sign-in (the offline_access \
             scope), so Portcullis could not tell when you leave it: a personal token cannot \
             be made. Ask your administrator to allow offline_access for Portcullis.",
        ));
    }
    let token = personal_tokens.seal(&personal).map_err(Failure::internal)?;
    let expires = humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(personal.expires),
    )
    .to_string();
    let narrowed = (!personal.limit.is_open()).then(|| describe(&personal.limit));
    tracing::info!(user = %personal.user, id = %personal.id, name = %personal.name, "personal token made");
    Ok(Answer::page(tokens::made(
        &frame(visit, person, Section::Tokens),
        &Made {
            token: &token,
            id: &personal.id,
            name: &personal.name,
            expires: &expires,
            host: &visit.app.pull_host(visit),
            narrowed,
        },
    )))
}

/// `POST /ui/tokens/revoke`: by id (one's own, or any for an admin) or by the token itself.
pub(super) async fn revoke(visit: &Visit, person: &Person, form: &Form) -> Result<Answer, Failure> {
    let personal_tokens = enabled(visit)?;
    let user = &person.session.user;
    let given = form.get("token").trim();
    let refuse = |why: &str| {
        Ok(Answer::Page {
            status: StatusCode::BAD_REQUEST,
            markup: tokens::tokens(
                &frame(visit, person, Section::Tokens),
                visit.console.config.token_max_days,
                &Draft::default(),
                Some(why),
                None,
            ),
            cookies: Vec::new(),
        })
    };
    let (id, until) = if given.starts_with(PREFIX) {
        match personal_tokens.open("", given) {
            Ok(personal) if personal.user == *user || person.admin => {
                (personal.id, Some(personal.expires))
            }
            Ok(_) => return refuse("This token is not yours to revoke."),
            Err(Refusal::Ended(why)) => return refuse(&format!("Nothing to revoke: {why}.")),
            Err(Refusal::Unknown) => {
                return refuse("This is not a personal token of this gateway.");
            }
        }
    } else if personal_tokens.owns(user, given) || (person.admin && !given.is_empty()) {
        (given.to_string(), None)
    } else {
        return refuse("This is not the id of one of your tokens.");
    };
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    let note = format!("revoked by {user} at {now}");
    let written = match visit.app.revoke(&id, until, user, &note).await {
        Ok(written) => written,
        Err(why) => return refuse(&why),
    };
    if written {
        tracing::info!(%user, %id, "personal token revoked");
    }
    Ok(Answer::redirect(format!(
        "/ui/tokens?revoked={}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    )))
}

fn enabled(visit: &Visit) -> Result<&PersonalTokens, Failure> {
    visit.app.identity.personal().ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "Personal tokens are off",
            "This gateway makes no personal tokens ([console] token_max_days = 0).",
        )
    })
}

/// The limit a filled form asks for, or what is wrong with it.
fn checked(draft: &Draft, max_days: u64) -> Result<Limit, String> {
    if draft.name.is_empty() || draft.name.chars().count() > MAX_NAME {
        return Err(format!(
            "Give the token a name of 1 to {MAX_NAME} characters."
        ));
    }
    if draft.name.chars().any(char::is_control) {
        return Err("The name must be plain text.".into());
    }
    match draft.days.parse::<u64>() {
        Ok(days) if (1..=max_days).contains(&days) => {}
        _ => return Err(format!("A token lives 1 to {max_days} days.")),
    }
    let repositories: Vec<String> = draft
        .repositories
        .lines()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    if repositories.len() > MAX_REPOSITORIES {
        return Err(format!("At most {MAX_REPOSITORIES} repository patterns."));
    }
    if let Some(bad) = repositories.iter().find(|r| {
        r.len() > 255
            || !r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*?:".contains(&b))
    }) {
        return Err(format!(
            "{bad:?} is not a repository pattern (lowercase names, / between parts, * and ?)."
        ));
    }
    if let Some(bad) = draft
        .actions
        .iter()
        .find(|a| !ACTIONS.contains(&a.as_str()))
    {
        return Err(format!("{bad:?} is not an action."));
    }
    Ok(Limit {
        repositories,
        actions: draft.actions.clone(),
    })
}

/// A limit as a sentence.
fn describe(limit: &Limit) -> String {
    let actions = if limit.actions.is_empty() {
        "what the policies allow you".to_string()
    } else {
        limit.actions.join(", ")
    };
    if limit.repositories.is_empty() {
        format!("{actions}, wherever the policies allow it")
    } else {
        format!("{actions}, only on {}", limit.repositories.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(name: &str, days: &str, repositories: &str, actions: &[&str]) -> Draft {
        Draft {
            name: name.into(),
            days: days.into(),
            repositories: repositories.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn forms_are_checked_with_a_reason() {
        let limit =
            checked(&draft("ci", "30", "team/*\n other/app ", &["pull"]), 90).expect("good");
        assert_eq!(limit.repositories, ["team/*", "other/app"]);
        assert_eq!(limit.actions, ["pull"]);
        for (bad, why) in [
            (draft("", "30", "", &[]), "name"),
            (draft("ci", "0", "", &[]), "1 to 90"),
            (draft("ci", "91", "", &[]), "1 to 90"),
            (draft("ci", "x", "", &[]), "1 to 90"),
            (
                draft("ci", "1", "Team/App", &[]),
                "not a repository pattern",
            ),
            (draft("ci", "1", "", &["admin"]), "not an action"),
            (draft("a\u{7}", "1", "", &[]), "plain text"),
        ] {
            let error = checked(&bad, 90).expect_err(why);
            assert!(error.contains(why), "{error}");
        }
        assert!(describe(&limit).contains("only on team/*, other/app"));
    }
}
