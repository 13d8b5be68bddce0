//! Explain: the policies' answer to a request, as a dry run, for oneself or (admins) for any
//! account, with the groups, claims and source the policies would see.

use super::{Answer, Failure, Person, Visit, frame};
use crate::console::pages::Section;
use crate::console::pages::explain::{self, ACTIONS, Question};
use crate::identity::{Origin, Principal};
use crate::policy::{Kind, Operation, Request as PolicyRequest, Scope};
use crate::proxy::{repository_name, tag_or_digest};
use crate::server::{ApiError, App};
use hyper::StatusCode;

/// Claims an admin may type at most.
const MAX_CLAIMS: usize = 64;

/// `GET /ui/explain?name=&action=&ref=[&account=&groups=&claims=&source=]`.
pub(super) async fn explain(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    let field = |key: &str| visit.field(key);
    let question = Question {
        name: field("name"),
        action: field("action"),
        reference: field("ref"),
        account: field("account"),
        groups: field("groups"),
        claims: field("claims"),
        source: field("source"),
    };
    let frame = frame(visit, person, Section::Explain);
    if question.name.is_empty() {
        return Ok(Answer::page(explain::explain(
            &frame, &question, None, None,
        )));
    }
    match ask(visit, person, &question).await {
        Ok(request) => {
            let outcome = visit.app.explain(request.clone()).await;
            Ok(Answer::page(explain::explain(
                &frame,
                &question,
                Some((&request, &outcome)),
                None,
            )))
        }
        Err(Refusal::Form(why)) => Ok(Answer::Page {
            status: StatusCode::BAD_REQUEST,
            markup: explain::explain(&frame, &question, None, Some(&why)),
            cookies: Vec::new(),
        }),
        Err(Refusal::Failed(failure)) => Err(failure),
    }
}

/// Why a question gets no answer.
enum Refusal {
    /// The form is wrong: said next to it.
    Form(String),
    /// Something failed.
    Failed(Failure),
}

/// The policy request the question stands for.
async fn ask(
    visit: &Visit,
    person: &Person,
    question: &Question,
) -> Result<PolicyRequest, Refusal> {
    repository_name(&question.name).map_err(|e| Refusal::Form(ApiError::from(e).to_string()))?;
    if !ACTIONS.contains(&question.action.as_str()) {
        return Err(Refusal::Form(format!(
            "the action must be one of {}",
            ACTIONS.join(", ")
        )));
    }
    let reference = match question.reference.as_str() {
        "" => None,
        text => {
            Some(tag_or_digest(text).map_err(|e| Refusal::Form(ApiError::from(e).to_string()))?)
        }
    };
    let principal = asked_for(visit, person, question).await?;
    let operation = reference.map(|reference| Operation {
        method: match question.action.as_str() {
            "push" => "PUT",
            "delete" => "DELETE",
            _ => "GET",
        }
        .into(),
        kind: Kind::Manifest,
        reference: Some(reference),
        mount_from: None,
    });
    Ok(PolicyRequest {
        account: App::account(&principal),
        scope: Scope {
            type_: "repository".into(),
            class: None,
            name: question.name.clone(),
            actions: vec![question.action.clone()],
        },
        service: visit.app.issuer.service.clone(),
        client_ip: Some(visit.client.to_string()),
        operation,
        time: 0,
        facts: crate::policy::Facts::none(),
    })
}

/// Whom the question is about: the person, or for an admin the account named, as the
/// identity sources know it, with what the admin typed in place of its groups, claims and
/// source.
async fn asked_for(
    visit: &Visit,
    person: &Person,
    question: &Question,
) -> Result<Principal, Refusal> {
    let on_behalf = !question.account.is_empty() && question.account != person.principal.name;
    let overrides =
        !(question.groups.is_empty() && question.claims.is_empty() && question.source.is_empty());
    if (on_behalf || overrides) && !person.admin {
        return Err(Refusal::Failed(Failure::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Only admins may ask on behalf of another account.",
        )));
    }
    let mut principal = if on_behalf {
        let found = visit
            .app
            .identity
            .look_up(&question.account)
            .await
            .map_err(|e| Refusal::Failed(Failure::from(super::login_refused(e))))?;
        match (found, overrides) {
            (Some(principal), _) => principal,
            (None, true) => Principal {
                name: question.account.clone(),
                groups: Vec::new(),
                origin: Origin::Htpasswd,
                claims: Vec::new(),
            },
            (None, false) => {
                return Err(Refusal::Form(format!(
                    "neither the htpasswd nor the directory knows {:?}: give its groups, claims \
                     or source to ask about it anyway",
                    question.account
                )));
            }
        }
    } else {
        person.principal.clone()
    };
    if !question.groups.is_empty() {
        principal.groups = question
            .groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
    }
    if !question.claims.is_empty() {
        let mut claims = Vec::new();
        for line in question
            .claims
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| Refusal::Form(format!("claim {line:?} is not name=value")))?;
            claims.push((name.trim().to_string(), value.trim().to_string()));
        }
        if claims.len() > MAX_CLAIMS {
            return Err(Refusal::Form(format!("more than {MAX_CLAIMS} claims")));
        }
        principal.claims = claims;
    }
    if !question.source.is_empty() {
        principal.origin = match question.source.as_str() {
            "htpasswd" => Origin::Htpasswd,
            "ldap" => Origin::Ldap,
            issuer => Origin::Oidc(issuer.to_string()),
        };
    }
    Ok(principal)
}
