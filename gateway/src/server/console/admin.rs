//! The admins' pages: the status document rendered, and the recent decisions.

use super::{Answer, Failure, Person, Visit, frame};
use crate::console::pages::Section;
use crate::console::pages::admin;
use hyper::StatusCode;

/// Decisions shown at most.
const SHOWN: usize = 200;

/// `/ui/admin/status`.
pub(super) fn status(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    only_admins(person)?;
    let status = visit.app.status();
    Ok(Answer::page(admin::status(
        &frame(visit, person, Section::Status),
        &status,
    )))
}

/// `/ui/admin/decisions?account=&repository=`.
pub(super) fn decisions(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    only_admins(person)?;
    let field = |key: &str| visit.field(key);
    let (account, repository) = (field("account"), field("repository"));
    let recent = visit.app.decisions.recent();
    let kept = recent.len();
    let shown: Vec<_> = recent
        .into_iter()
        .filter(|d| account.is_empty() || d["account"] == account.as_str())
        .filter(|d| {
            repository.is_empty()
                || d["scope"]
                    .as_str()
                    .and_then(|scope| scope.split(':').nth(1))
                    .is_some_and(|name| name.contains(&repository))
        })
        .take(SHOWN)
        .collect();
    Ok(Answer::page(admin::decisions(
        &frame(visit, person, Section::Decisions),
        &account,
        &repository,
        &shown,
        kept,
    )))
}

/// `/ui/admin/shadow`: what the shadow set says, and where it disagrees.
pub(super) fn shadow(visit: &Visit, person: &Person) -> Result<Answer, Failure> {
    only_admins(person)?;
    let status = visit.app.status();
    let latest = visit.app.shadow_tally.latest();
    Ok(Answer::page(admin::shadow(
        &frame(visit, person, Section::Shadow),
        &status["shadow"],
        &latest,
    )))
}

fn only_admins(person: &Person) -> Result<(), Failure> {
    if person.admin {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::FORBIDDEN,
            "Admins only",
            "This page is for the console's admins ([console] admins).",
        ))
    }
}
