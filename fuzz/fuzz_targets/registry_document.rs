//! Fuzzes what the console reads from a registry it does not trust: any bytes as a manifest,
//! an image config and a referrers index, then rendered as the image page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::console::manifest;
use portcullis::console::pages::browse::{Image, image};
use portcullis::console::pages::{Frame, Section};

fuzz_target!(|body: &[u8]| {
    let config = manifest::parse_config(body).ok();
    let referrers = manifest::parse_referrers(body).ok();
    let Ok(manifest) = manifest::parse(body, None) else {
        return;
    };
    let frame = Frame {
        user: "alice",
        source: "htpasswd",
        csrf: "c",
        admin: true,
        tokens: true,
        current: Section::Browse,
    };
    let page = image(
        &frame,
        &Image {
            name: "alice/app",
            reference: "v1",
            pull_host: "registry.example.com",
            manifest: &manifest,
            config: config.as_ref(),
            referrers: referrers.as_deref(),
            deletable: true,
        },
    )
    .into_string();
    // Whatever the registry wrote is escaped: the page's one script tag is its own.
    assert_eq!(page.matches("<script").count(), 1);
});
