//! Fuzzes the token verifier: no input but a token this key signed verifies, as an access
//! token or a refresh token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::token::{Embed, Issuer, SigningKey, generate};
use std::sync::OnceLock;
use std::time::Duration;

fn key() -> &'static (tempfile::TempDir, SigningKey) {
    static KEY: OnceLock<(tempfile::TempDir, SigningKey)> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, cert) = generate(dir.path(), false).expect("keygen");
        let key = SigningKey::load(&key, &cert, Embed::X5c).expect("key");
        (dir, key)
    })
}

fuzz_target!(|token: &str| {
    let (_, key) = key();
    let issuer = Issuer::new(
        "portcullis",
        "registry.test",
        Duration::from_secs(300),
        Duration::from_secs(3600),
    );
    assert!(issuer.verify_access(&[key], token).is_err());
    assert!(issuer.verify_refresh(&[key], token).is_err());
});
