//! The `namespace-owner` policy: every user owns `<account>/...` (pull, push, delete there),
//! authenticated users pull everything else, anonymous requests get nothing.

use portcullis_policy::{Decision, NoSettings, Policy, Request, export_policy};

/// The configured policy; it takes no settings.
pub struct NamespaceOwner;

impl Policy for NamespaceOwner {
    type Settings = NoSettings;

    fn configure(_: NoSettings) -> Result<Self, String> {
        Ok(NamespaceOwner)
    }

    fn authorize(&self, request: &Request) -> Decision {
        let account = &request.account;
        if account.is_anonymous() {
            return Decision::deny("anonymous requests get nothing");
        }
        if !request.scope.is_repository() {
            return Decision::deny("only repositories are owned");
        }
        let owned = request
            .scope
            .name
            .strip_prefix(account.name.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        if owned {
            request
                .grant(["pull", "push", "delete"])
                .because("own namespace")
        } else {
            request
                .grant(["pull"])
                .because("authenticated users pull everything")
        }
    }
}

export_policy!(NamespaceOwner);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::Scope;

    fn decide(account: Option<&str>, scope: Scope) -> Vec<String> {
        let mut request = Request::new(scope);
        if let Some(name) = account {
            request = request.account(name);
        }
        NamespaceOwner.authorize(&request).granted
    }

    const ALL: [&str; 3] = ["pull", "push", "delete"];

    #[test]
    fn owner_gets_everything_in_own_namespace() {
        assert_eq!(
            decide(Some("alice"), Scope::repository("alice/app", ALL)),
            ALL
        );
        assert_eq!(
            decide(Some("alice"), Scope::repository("alice/a/b", ALL)),
            ALL
        );
    }

    #[test]
    fn others_only_pull() {
        assert_eq!(
            decide(Some("bob"), Scope::repository("alice/app", ALL)),
            ["pull"]
        );
        assert_eq!(
            decide(Some("ali"), Scope::repository("alice/app", ALL)),
            ["pull"]
        );
        assert_eq!(
            decide(Some("alice"), Scope::repository("alice", ALL)),
            ["pull"]
        );
    }

    #[test]
    fn anonymous_and_catalog_get_nothing() {
        assert!(decide(None, Scope::repository("alice/app", ["pull"])).is_empty());
        assert!(decide(Some("alice"), Scope::catalog()).is_empty());
    }

    #[test]
    fn settings_must_be_empty() {
        assert!(portcullis_policy::__private::configure::<NamespaceOwner>("{}").is_ok());
        let e = portcullis_policy::__private::configure::<NamespaceOwner>(r#"{"x": 1}"#);
        assert!(e.is_err());
    }
}
