//! Fuzzes the groups parser: any text loads or is refused with a line inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::identity::Groups;

fuzz_target!(|text: &str| {
    if let Err(e) = Groups::parse("groups", text) {
        assert!(e.line <= text.lines().count());
    }
});
