//! Fuzzes the acl policy's settings: any JSON loads or is refused, and a loaded rule set
//! grants only actions that were asked for.
#![no_main]

use acl::Acl;
use libfuzzer_sys::fuzz_target;
use portcullis_policy::{Policy, Request, Scope};

fuzz_target!(|text: &str| {
    if let Ok(acl) = portcullis_policy::__private::configure::<Acl>(text) {
        for (account, name) in [("alice", "alice/app"), ("", "public/x"), ("admin", "a/b/c")] {
            let request =
                Request::new(Scope::repository(name, ["pull", "push"])).account(account);
            let decision = acl.authorize(&request);
            assert!(decision.granted.iter().all(|g| g == "pull" || g == "push"));
        }
    }
});
