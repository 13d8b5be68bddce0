//! The `read-only` policy: grants `pull` and nothing else. Stacked with another policy it
//! puts the registry in maintenance mode: reads keep working, every write is refused.

use portcullis_policy::{Decision, NoSettings, Policy, Request, export_policy};

/// The configured policy; it takes no settings.
pub struct ReadOnly;

impl Policy for ReadOnly {
    type Settings = NoSettings;

    fn configure(_: NoSettings) -> Result<Self, String> {
        Ok(ReadOnly)
    }

    fn authorize(&self, request: &Request) -> Decision {
        request.grant(["pull"]).because("read-only mode")
    }
}

export_policy!(ReadOnly);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::Scope;

    #[test]
    fn only_pull_is_granted() {
        let request =
            Request::new(Scope::repository("a/b", ["push", "pull", "delete"])).account("u");
        assert_eq!(ReadOnly.authorize(&request).granted, ["pull"]);
        assert!(
            ReadOnly
                .authorize(&Request::new(Scope::catalog()))
                .granted
                .is_empty()
        );
    }
}
