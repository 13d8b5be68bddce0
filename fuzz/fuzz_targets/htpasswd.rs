//! Fuzzes the htpasswd parser: any text loads or is refused with a line inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::identity::Htpasswd;

fuzz_target!(|text: &str| {
    if let Err(e) = Htpasswd::parse("htpasswd", text) {
        assert!(e.line <= text.lines().count());
    }
});
