//! Fuzzes the scope grammar: any input parses or is refused, and what parses prints back to
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::scope::Scope;

fuzz_target!(|text: &str| {
    if let Ok(scope) = text.parse::<Scope>() {
        assert_eq!(scope.to_string().parse::<Scope>().ok(), Some(scope));
    }
});
