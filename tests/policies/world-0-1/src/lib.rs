//! A policy as modules were built before 0.2.0: against `portcullis:policy@0.1.0` directly,
//! whose accounts carry no source and no claims. It grants `pull` to authenticated
//! accounts and says whose groups it saw, so the host's tests can check what reached it.

wit_bindgen::generate!({
    world: "policy",
    path: "../../../gateway/wit/policy-0.1.0",
});

struct Legacy;

impl Guest for Legacy {
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
        Decision {
            granted,
            reason: Some(format!(
                "0.1.0 module: {} in [{}]",
                request.account.name,
                request.account.groups.join(",")
            )),
        }
    }
}

export!(Legacy);
