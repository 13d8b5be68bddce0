//! A policy as modules were built before 0.3.0: against `portcullis:policy@0.2.0` directly,
//! whose requests carry no time and no facts and whose decisions name no rule. It grants
//! `pull` to accounts of its source and says which claims it saw, so the host's tests can
//! check what reached it.

wit_bindgen::generate!({
    world: "policy",
    path: "../../../gateway/wit/policy-0.2.0",
});

struct Older;

impl Guest for Older {
    fn configure(_settings: String) -> Result<(), String> {
        Ok(())
    }

    fn authorize(request: Request) -> Decision {
        let granted = if request.account.authenticated {
            request
                .scope
                .actions
                .into_iter()
                .filter(|a| a == "pull")
                .collect()
        } else {
            Vec::new()
        };
        let claims: Vec<String> = request
            .account
            .claims
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        Decision {
            granted,
            reason: Some(format!(
                "0.2.0 module: {} from {} with [{}]",
                request.account.name,
                request.account.source,
                claims.join(",")
            )),
        }
    }
}

export!(Older);
