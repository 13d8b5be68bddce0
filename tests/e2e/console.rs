//! The web console end to end: Portcullis with `[console]` in front of Debian's
//! docker-registry, driven by a real headless Chromium (and, for what a browser would never
//! send, by hand-made requests): signing in and out, sessions that end with the account,
//! and forged or tampered requests refused.

use crate::browser::Browser;
use crate::oidc::Provider;
use crate::util::{
    OciImage, SERVICE, Setup, Site, http, jwt_payload, oci_blob, populate, portcullis, push, serve,
    skopeo_stdout, token,
};
use std::collections::BTreeSet;

/// alice and bob own their namespaces; carol is an admin and may do anything; everyone
/// pulls `public/`.
const ACL: &str = r#"{"rules": [
  {"match": {"group": "admins"}, "actions": ["*"], "comment": "admins"},
  {"match": {"account": "/.+/", "name": "${account}/**"}, "actions": ["pull", "push", "delete"], "comment": "your own namespace"},
  {"match": {"name": "public/**"}, "actions": ["pull"], "comment": "everyone reads public/"},
  {"match": {"name": "alice/**"}, "actions": [], "comment": "only alice may use alice/"}
]}"#;

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
];

/// A console in either mode, its session key made by `keygen --session`.
fn console_site(gateway_mode: bool) -> Site {
    Site::start(
        console_setup(gateway_mode),
        gateway_mode,
        b"a console test image",
    )
}

/// The config of [`console_site`], not started yet.
fn console_setup(gateway_mode: bool) -> Setup {
    let setup = if gateway_mode {
        Setup::gateway(ACL, USERS, "")
    } else {
        Setup::new(ACL, USERS)
    };
    std::fs::write(setup.path("groups"), "admins: carol\n").expect("groups");
    // Release tags are for the release group: a second policy for explanations to name.
    let config = setup.path("portcullis.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(
        "\n[[policy]]\nname = \"protected-tags\"\nmodule = \"policies/protected_tags.wasm\"\nsettings = { tags = [\"v*\"], groups = [\"release\"] }\n",
    );
    std::fs::write(&config, text).expect("config");
    setup.insert_config(&console_block(&setup, gateway_mode));
    setup
}

/// Turns the console on for `setup`: a session key made by `keygen --session`, an empty
/// revocation file, and the `[console]` block to insert into the config.
pub(crate) fn console_block(setup: &Setup, gateway_mode: bool) -> String {
    let out = portcullis(
        &[
            "keygen",
            "--session",
            "--out",
            setup.path("keys").to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(setup.path("revoked"), "").expect("revoked");
    let registry_url = if gateway_mode {
        String::new()
    } else {
        format!(
            "registry_url = \"http://127.0.0.1:{}\"\n",
            setup.registry_port
        )
    };
    format!(
        r#"
[console]
enabled = true
admins = ["admins"]
session_key = "keys/session.key"
revoked_tokens = "revoked"
{registry_url}"#
    )
}

pub(crate) fn ui(site: &Site, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", site.setup.gateway_port)
}

/// Signs in through the form, as a person does.
fn sign_in(browser: &Browser, site: &Site, user: &str, password: &str) {
    browser.goto(&ui(site, "/ui/login"));
    browser.fill("#user", user);
    browser.fill("#password", password);
    browser.click("form[action='/ui/login'] button[type=submit]");
}

#[test]
fn people_sign_in_and_out_with_a_password_and_sessions_end_with_the_account() {
    let site = console_site(false);
    let browser = Browser::start(1280, 900);
    browser.goto(&ui(&site, "/ui/"));
    assert!(browser.url().ends_with("/ui/login"), "{}", browser.url());

    sign_in(&browser, &site, "alice", "wrong");
    assert_eq!(
        browser.text(".error").as_deref(),
        Some("invalid username or password")
    );
    assert_eq!(
        browser.attribute("#user", "value").as_deref(),
        Some("alice")
    );

    sign_in(&browser, &site, "alice", "alice-pw");
    assert!(
        browser.url().ends_with("/ui/repositories"),
        "{}",
        browser.url()
    );
    assert_eq!(browser.text(".who").as_deref(), Some("alice"));
    assert!(
        !browser.texts("nav a").iter().any(|t| t == "Status"),
        "alice is no admin"
    );

    // An altered session cookie is no session.
    let cookie = browser
        .cookie("portcullis-session")
        .expect("a session cookie");
    let mut altered = cookie.into_bytes();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
    browser.set_cookie(
        "portcullis-session",
        &String::from_utf8(altered).expect("ascii"),
    );
    browser.goto(&ui(&site, "/ui/repositories"));
    assert!(browser.url().ends_with("/ui/login"), "{}", browser.url());

    sign_in(&browser, &site, "carol", "carol-pw");
    assert!(
        browser.texts("nav a").iter().any(|t| t == "Status"),
        "carol is in admins"
    );
    browser.click("form.signout button");
    assert!(browser.url().ends_with("/ui/login"), "{}", browser.url());
    browser.goto(&ui(&site, "/ui/repositories"));
    assert!(
        browser.url().ends_with("/ui/login"),
        "signed out: {}",
        browser.url()
    );

    // Removing bob from the htpasswd ends his session at his next request.
    sign_in(&browser, &site, "bob", "bob-pw");
    assert_eq!(browser.text(".who").as_deref(), Some("bob"));
    site.setup.remove_user("bob");
    browser.wait_until("bob's session ends", |b| {
        b.goto(&ui(&site, "/ui/repositories"));
        b.url().ends_with("/ui/login")
    });
}

/// The `Set-Cookie` values of a response head, as `name=value` pairs.
fn set_cookies(head: &str) -> Vec<String> {
    head.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().split(';').next().unwrap_or("").to_string())
        })
        .collect()
}

/// The `value` of the hidden `csrf` field of a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().expect("a value").to_string()
}

/// A raw request to the console on `port`: (status, head, body).
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: &str,
) -> (u16, String, String) {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ));
    }
    head.push_str("\r\n");
    let (status, head, body) = http(port, &head, form.as_bytes());
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Signs in by hand at the console on `port`: the session cookie pair and the session's
/// CSRF token.
pub(crate) fn sign_in_by_hand(port: u16, user: &str, password: &str) -> (String, String) {
    let (status, head, page) = request(port, "GET", "/ui/login", &[], "");
    assert_eq!(status, 200);
    let flow = set_cookies(&head).pop().expect("a flow cookie");
    let form = format!("csrf={}&user={user}&password={password}", csrf_of(&page));
    let (status, head, _) = request(port, "POST", "/ui/login", &[("Cookie", &flow)], &form);
    assert_eq!(status, 303, "{head}");
    let session = set_cookies(&head)
        .into_iter()
        .find(|c| c.starts_with("portcullis-session="))
        .expect("a session cookie");
    let (_, _, page) = request(port, "GET", "/ui/repositories", &[("Cookie", &session)], "");
    (session.clone(), csrf_of(&page))
}

/// Makes a personal token by hand in the session `session` with its CSRF token: the token.
pub(crate) fn make_token_by_hand(port: u16, session: &str, csrf: &str, name: &str) -> String {
    let form = format!("csrf={csrf}&name={name}&days=1&repositories=");
    let (status, head, page) = request(port, "POST", "/ui/tokens", &[("Cookie", session)], &form);
    assert_eq!(status, 200, "{head}\n{page}");
    let at = page.find("pcp_").expect("the new token on the page");
    page[at..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .next()
        .expect("a token")
        .to_string()
}

#[test]
fn the_sign_in_form_shares_the_login_throttle() {
    let site = console_site(true);
    let port = site.setup.gateway_port;
    let attempt = |user: &str, password: &str| {
        let (_, head, page) = request(port, "GET", "/ui/login", &[], "");
        let flow = set_cookies(&head).pop().expect("a flow cookie");
        let form = format!("csrf={}&user={user}&password={password}", csrf_of(&page));
        let (status, _, page) = request(port, "POST", "/ui/login", &[("Cookie", &flow)], &form);
        (status, page)
    };
    for _ in 0..5 {
        let (status, page) = attempt("bob", "wrong");
        assert_eq!(status, 401, "{page}");
    }
    // Now even the right password waits, in the form...
    let (status, page) = attempt("bob", "bob-pw");
    assert_eq!(status, 429, "{page}");
    assert!(page.contains("Too many failed sign-ins"), "{page}");
    // ...and at the token endpoint: one throttle for every way in.
    let query = format!("service={SERVICE}");
    assert_eq!(token(port, &query, Some("bob:bob-pw")).0, 429);
    // Counted per account and address: alice, from the same address, is not locked out.
    let (status, _) = attempt("alice", "alice-pw");
    assert_eq!(status, 303);
}

#[test]
fn forged_and_cross_site_requests_are_refused() {
    let site = console_site(true);
    let (session, csrf) = sign_in_by_hand(site.setup.gateway_port, "alice", "alice-pw");
    let (status, head, _) = request(
        site.setup.gateway_port,
        "GET",
        "/ui/repositories",
        &[("Cookie", &session)],
        "",
    );
    assert_eq!(status, 200);
    let csp = crate::util::header(&head, "content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(
        crate::util::header(&head, "cache-control"),
        Some("no-store")
    );
    assert_eq!(crate::util::header(&head, "x-frame-options"), Some("DENY"));

    // Sign-out without the session's token, or with another's, changes nothing.
    for form in ["", "csrf=", "csrf=not-the-token"] {
        let (status, head, _) = request(
            site.setup.gateway_port,
            "POST",
            "/ui/logout",
            &[("Cookie", &session)],
            form,
        );
        assert_eq!(status, 403, "{form:?}: {head}");
        assert!(set_cookies(&head).is_empty(), "{form:?}: nothing cleared");
    }
    // From another site, even with the token (a page that stole it).
    for foreign in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let (status, _, _) = request(
            site.setup.gateway_port,
            "POST",
            "/ui/logout",
            &[("Cookie", &session), foreign],
            &format!("csrf={csrf}"),
        );
        assert_eq!(status, 403, "{foreign:?}");
    }
    // A sign-in form posted without its flow (login CSRF: signing a victim in as us).
    let (status, head, _) = request(
        site.setup.gateway_port,
        "POST",
        "/ui/login",
        &[],
        "csrf=x&user=alice&password=alice-pw",
    );
    assert_eq!(status, 403, "{head}");
    assert!(
        set_cookies(&head)
            .iter()
            .all(|c| !c.starts_with("portcullis-session="))
    );
    // The right token from our own origin signs out.
    let (status, head, _) = request(
        site.setup.gateway_port,
        "POST",
        "/ui/logout",
        &[
            ("Cookie", &session),
            (
                "Origin",
                &format!("http://127.0.0.1:{}", site.setup.gateway_port),
            ),
        ],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 303);
    assert!(set_cookies(&head).contains(&"portcullis-session=".to_string()));
    // A session sealed by another key (another deployment's) opens nothing here.
    let other = console_site(true);
    let (foreign, _) = sign_in_by_hand(other.setup.gateway_port, "alice", "alice-pw");
    let (status, head, _) = request(
        site.setup.gateway_port,
        "GET",
        "/ui/repositories",
        &[("Cookie", &foreign)],
        "",
    );
    assert_eq!(status, 303);
    assert_eq!(crate::util::header(&head, "location"), Some("/ui/login"));
    // The console is not on the operators' listener.
    let head = "GET /ui/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(http(site.setup.admin_port, head, b"").0, 404);
}

/// Whether the policies let `user` pull `name`: what `/token` grants for it.
fn may_pull(site: &Site, user: &str, password: &str, name: &str) -> bool {
    let (status, body) = token(
        site.setup.gateway_port,
        &format!("service={SERVICE}&scope=repository:{name}:pull"),
        Some(&format!("{user}:{password}")),
    );
    assert_eq!(status, 200, "{body}");
    let claims = jwt_payload(body["token"].as_str().expect("a token"));
    claims["access"][0]["actions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "pull"))
}

/// Pushes an image with a creation time and labels as `creds`; its manifest's digest.
fn push_labelled(site: &Site, creds: &str, reference: &str) -> String {
    let dir = site
        .setup
        .path(&format!("labelled-{}", reference.replace(['/', ':'], "-")));
    let image = OciImage::write(
        &dir,
        reference.as_bytes(),
        serde_json::json!({
            "created": "2026-11-30T12:00:00Z",
            "config": {"Labels": {"org.opencontainers.image.source": "https://git.example/app"}},
        }),
    );
    image.tag(&dir, &image.manifest);
    let (ok, err) = push(site.setup.dir.path(), &dir, creds, site.port, reference);
    assert!(ok, "push {reference}: {err}");
    pushed_digest(site, creds, reference)
}

/// The digest the registry holds for `reference` (skopeo may recompress what it pushes).
fn pushed_digest(site: &Site, creds: &str, reference: &str) -> String {
    let (ok, out) = crate::util::skopeo_stdout(
        site.setup.dir.path(),
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            creds,
            &format!("docker://127.0.0.1:{}/{reference}", site.port),
        ],
    );
    assert!(ok, "inspect {reference}");
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out))
    )
}

/// Pushes a two-platform index as `creds`; its digest.
fn push_index(site: &Site, creds: &str, reference: &str) -> String {
    let dir = site.setup.path("index");
    let mut manifests = Vec::new();
    for (architecture, payload) in [("amd64", &b"for amd64"[..]), ("arm64", b"for arm64")] {
        let image = OciImage::write(
            &dir,
            payload,
            serde_json::json!({"architecture": architecture}),
        );
        let mut descriptor = image.manifest.clone();
        descriptor["platform"] = serde_json::json!({"os": "linux", "architecture": architecture});
        manifests.push(descriptor);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let (digest, size) = oci_blob(&dir, index.to_string().as_bytes());
    let image = OciImage::write(&dir, b"unused", serde_json::json!({}));
    image.tag(
        &dir,
        &serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size}),
    );
    let (ok, err) = crate::util::skopeo(
        site.setup.dir.path(),
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            &format!("oci:{}:latest", dir.display()),
            &format!("docker://127.0.0.1:{}/{reference}", site.port),
        ],
    );
    assert!(ok, "push the index: {err}");
    pushed_digest(site, creds, reference)
}

#[test]
fn people_see_exactly_what_the_policies_let_them_pull_and_delete_only_what_they_may() {
    for gateway_mode in [false, true] {
        let mode = if gateway_mode {
            "gateway"
        } else {
            "token-server"
        };
        let site = console_site(gateway_mode);
        let app = push_labelled(&site, "alice:alice-pw", "alice/app:1");
        for (creds, reference) in [
            ("alice:alice-pw", "alice/lib:1"),
            ("bob:bob-pw", "bob/tool:1"),
            ("carol:carol-pw", "public/base:1"),
            ("carol:carol-pw", "secret/plans:1"),
        ] {
            let (ok, err) = site.push(creds, reference);
            assert!(ok, "{mode}: push {reference}: {err}");
        }
        let index = push_index(&site, "carol:carol-pw", "public/multi:1");
        let all = [
            "alice/app",
            "alice/lib",
            "bob/tool",
            "public/base",
            "public/multi",
            "secret/plans",
        ];
        let browser = Browser::start(1280, 900);
        for (user, password) in USERS {
            let expected: BTreeSet<&str> = all
                .iter()
                .copied()
                .filter(|name| may_pull(&site, user, password, name))
                .collect();
            sign_in(&browser, &site, user, password);
            let shown: BTreeSet<String> = browser.texts("#repositories a").into_iter().collect();
            let shown: BTreeSet<&str> = shown.iter().map(String::as_str).collect();
            assert_eq!(
                shown, expected,
                "{mode}: {user} sees what the policies let them pull"
            );
            browser.click("form.signout button");
        }
        // What the policies say, spelled out: nobody but carol sees secret/.
        assert!(!may_pull(&site, "alice", "alice-pw", "secret/plans"));

        sign_in(&browser, &site, "alice", "alice-pw");
        browser.fill("#q", "LIB");
        browser.click("form[role=search] button");
        assert_eq!(
            browser.texts("#repositories a"),
            ["alice/lib"],
            "{mode}: search"
        );
        browser.goto(&ui(&site, "/ui/repositories"));
        browser.click("#repositories a[href*='alice%2Fapp']");
        assert_eq!(browser.texts("#tags td a"), ["1"], "{mode}");
        browser.click("#tags td a");
        let facts = browser.text("#facts").expect("the facts");
        assert!(facts.contains(&app), "{mode}: the digest pushed: {facts}");
        assert!(
            facts.contains("application/vnd.oci.image.manifest.v1+json"),
            "{facts}"
        );
        assert!(
            facts.contains("2026-11-30T12:00:00Z") && facts.contains("linux/amd64"),
            "{facts}"
        );
        assert!(
            browser
                .text("#labels")
                .is_some_and(|l| l.contains("https://git.example/app")),
            "{mode}: labels"
        );
        assert!(
            browser
                .text("#referrers")
                .is_some_and(|r| r.contains("does not serve")),
            "{mode}: registry 2.8 has no referrers API"
        );
        let registry_host = if gateway_mode {
            format!("127.0.0.1:{}", site.setup.gateway_port)
        } else {
            format!("127.0.0.1:{}", site.setup.registry_port)
        };
        assert_eq!(
            browser.attribute("button[data-copy]", "data-copy"),
            Some(format!("docker pull {registry_host}/alice/app@{app}")),
            "{mode}: the pull line names where people pull from"
        );
        // The index lists its platforms.
        browser.goto(&ui(&site, "/ui/manifest?name=public/multi&ref=1"));
        let platforms = browser.text("#platforms").expect("a platforms table");
        assert!(
            platforms.contains("linux/amd64") && platforms.contains("linux/arm64"),
            "{platforms}"
        );
        assert!(browser.text("#facts").is_some_and(|f| f.contains(&index)));
        assert!(
            browser.text("a.button[href^='/ui/delete']").is_none(),
            "{mode}: alice may not delete public/"
        );

        // Nothing of another's: the same answer as for what does not exist.
        for path in [
            "/ui/repository?name=secret/plans",
            "/ui/repository?name=no/such",
            "/ui/manifest?name=secret/plans&ref=1",
        ] {
            browser.goto(&ui(&site, path));
            assert_eq!(
                browser
                    .text(".error")
                    .as_deref()
                    .map(|e| e.starts_with("There is no")),
                Some(true),
                "{mode}: {path}"
            );
        }
        browser.goto(&ui(&site, "/ui/delete?name=public/base&ref=1"));
        assert!(
            browser
                .text(".error")
                .is_some_and(|e| e.contains("do not let you delete")),
            "{mode}: the refusal says why"
        );

        // A tag alone cannot be deleted on registry 2.x: the console says so and why.
        browser.goto(&ui(&site, "/ui/manifest?name=alice/app&ref=1"));
        browser.click("a.button[href^='/ui/delete']");
        browser.click("form[action='/ui/delete'] button.danger");
        assert!(
            browser
                .text(".error")
                .is_some_and(|e| e.contains("deletes whole manifests")),
            "{mode}: {:?}",
            browser.text("main")
        );
        // By digest, it goes, with the confirmation first.
        browser.goto(&ui(
            &site,
            &format!("/ui/manifest?name=alice/app&ref={app}"),
        ));
        browser.click("a.button[href^='/ui/delete']");
        assert!(
            browser
                .text("main")
                .is_some_and(|m| m.contains("every tag that points at it"))
        );
        browser.click("form[action='/ui/delete'] button.danger");
        assert_eq!(
            browser.text("p.ok").as_deref(),
            Some(&*format!("Deleted {app}.")),
            "{mode}"
        );
        assert!(
            browser.texts("#tags td a").is_empty(),
            "{mode}: the tag went with it"
        );
    }
}

#[test]
fn thousands_of_repositories_page_and_search() {
    let site = console_site(true);
    let mut names: Vec<String> = (0..130).map(|i| format!("public/r{i:03}")).collect();
    names.extend((0..30).map(|i| format!("secret/s{i:03}")));
    populate(site.setup.registry_port, &names);
    let browser = Browser::start(1280, 900);
    sign_in(&browser, &site, "alice", "alice-pw");
    let mut seen = Vec::new();
    loop {
        let page = browser.texts("#repositories a");
        assert!(page.len() <= 50);
        seen.extend(page);
        if browser.text("a[rel=next]").is_none() {
            break;
        }
        browser.click("a[rel=next]");
    }
    let public: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("public/"))
        .cloned()
        .collect();
    assert_eq!(
        seen, public,
        "every public repository once, in order, none of secret/"
    );
    browser.goto(&ui(&site, "/ui/repositories?q=r12&page=1"));
    assert_eq!(
        browser.texts("#repositories a"),
        (120..130)
            .map(|i| format!("public/r{i}"))
            .collect::<Vec<_>>()
    );
    browser.goto(&ui(&site, "/ui/repositories?q=s00"));
    assert!(browser.texts("#repositories a").is_empty());
    assert!(browser.text("#empty").is_some());
}

/// Asks the explain form, as the person signed in to `browser`.
pub(crate) fn explain(browser: &Browser, site: &Site, query: &str) {
    browser.goto(&ui(site, &format!("/ui/explain?{query}")));
}

#[test]
fn explain_names_the_policy_that_denies_and_changes_nothing() {
    let site = console_site(false);
    let browser = Browser::start(1280, 900);
    sign_in(&browser, &site, "bob", "bob-pw");
    browser.click("nav a[href='/ui/explain']");
    browser.fill("#name", "alice/app");
    browser.run("document.querySelector('#action').value = 'push'; return null;");
    browser.click("form[action='/ui/explain'] button");
    assert!(
        browser.url().contains("name=alice%2Fapp"),
        "{}",
        browser.url()
    );
    let verdict = browser.text("#verdict h2").expect("a verdict");
    assert_eq!(verdict, "Denied: push on alice/app");
    assert_eq!(
        browser.text("#why").as_deref(),
        Some("Refused by acl: acl rule 4 (only alice may use alice/) grants nothing.")
    );
    let answers = browser.texts("#answers tbody tr");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers[0].starts_with("acl") && answers[0].contains("nothing"),
        "{answers:?}"
    );
    assert!(
        answers[1].starts_with("protected-tags") && answers[1].contains("push"),
        "{answers:?}"
    );

    // As gateway mode sees it: with a tag, the protected-tags policy has its say.
    explain(&browser, &site, "name=bob/app&action=push&ref=v1");
    assert_eq!(
        browser.text("#verdict h2").as_deref(),
        Some("Denied: push on bob/app")
    );
    assert!(
        browser
            .text("#why")
            .is_some_and(|w| w.starts_with("Refused by protected-tags")),
        "{:?}",
        browser.text("#why")
    );
    assert!(
        browser
            .text("#request")
            .is_some_and(|r| r.contains("PUT manifest tag v1"))
    );
    explain(&browser, &site, "name=bob/app&action=push&ref=dev");
    assert_eq!(
        browser.text("#verdict h2").as_deref(),
        Some("Granted: push on bob/app")
    );

    // Only admins ask for others, or as others would be.
    for other in ["account=alice", "groups=admins"] {
        explain(
            &browser,
            &site,
            &format!("name=alice/app&action=push&{other}"),
        );
        assert!(
            browser
                .text(".error")
                .is_some_and(|e| e.contains("Only admins")),
            "{other}"
        );
    }
    browser.click("form.signout button");

    sign_in(&browser, &site, "carol", "carol-pw");
    let decided = |browser: &Browser| {
        browser.goto(&ui(&site, "/ui/admin/decisions"));
        browser.texts("#decisions tbody tr").len()
    };
    let before = decided(&browser);
    explain(&browser, &site, "name=alice/app&action=push&account=alice");
    assert_eq!(
        browser.text("#verdict h2").as_deref(),
        Some("Granted: push on alice/app")
    );
    explain(&browser, &site, "name=alice/app&action=push&account=nobody");
    assert!(
        browser
            .text(".error")
            .is_some_and(|e| e.contains("neither the htpasswd nor the directory"))
    );
    explain(
        &browser,
        &site,
        "name=team/app&action=push&account=nobody&groups=admins",
    );
    assert_eq!(
        browser.text("#verdict h2").as_deref(),
        Some("Granted: push on team/app")
    );
    assert!(
        browser
            .text("#request")
            .is_some_and(|r| r.contains("admins"))
    );
    assert_eq!(
        decided(&browser),
        before,
        "explaining decides nothing that is logged"
    );

    // The decisions page shows real ones, filtered: bob's refused push through /token.
    let query = format!("service={SERVICE}&scope=repository:alice/app:push");
    assert_eq!(
        token(site.setup.gateway_port, &query, Some("bob:bob-pw")).0,
        200
    );
    browser.goto(&ui(
        &site,
        "/ui/admin/decisions?account=bob&repository=alice",
    ));
    let rows = browser.texts("#decisions tbody tr");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].contains("repository:alice/app:push") && rows[0].contains("only alice"),
        "{rows:?}"
    );
    browser.goto(&ui(&site, "/ui/admin/status"));
    let policies = browser.texts("#policies tbody tr");
    assert_eq!(policies.len(), 2, "{policies:?}");
    assert!(policies[0].starts_with("acl") && policies[0].contains("none"));
    assert!(browser.text("#keys").is_some_and(|k| k.contains("Current")));
    browser.click("form.signout button");

    sign_in(&browser, &site, "bob", "bob-pw");
    browser.goto(&ui(&site, "/ui/admin/status"));
    assert!(
        browser
            .text(".error")
            .is_some_and(|e| e.contains("for the console's admins"))
    );
}

/// Makes a personal token in the console as the person signed in to `browser`: (token, id).
fn make_token(
    browser: &Browser,
    site: &Site,
    name: &str,
    repositories: &str,
    actions: &[&str],
) -> (String, String) {
    browser.goto(&ui(site, "/ui/tokens"));
    browser.fill("#token-name", name);
    browser.fill("#days", "7");
    if !repositories.is_empty() {
        browser.fill("#repositories", repositories);
    }
    for action in actions {
        browser.click_in_page(&format!("input[name=actions][value={action}]"));
    }
    browser.click("form[action='/ui/tokens'] button[type=submit]");
    let token = browser.text("#token").expect("the token, shown once");
    let id = browser.text("#token-id").expect("its id");
    (token, id)
}

/// Whether `creds` may read `reference` (a pull's first step): skopeo inspect.
fn can_pull(site: &Site, creds: &str, reference: &str) -> bool {
    skopeo_stdout(
        site.setup.dir.path(),
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            creds,
            &format!("docker://127.0.0.1:{}/{reference}", site.port),
        ],
    )
    .0
}

#[test]
fn personal_tokens_log_clients_in_until_revoked_or_their_owner_leaves() {
    for gateway_mode in [false, true] {
        let mode = if gateway_mode {
            "gateway"
        } else {
            "token-server"
        };
        let site = console_site(gateway_mode);
        let browser = Browser::start(1280, 900);
        sign_in(&browser, &site, "alice", "alice-pw");
        let (laptop, laptop_id) = make_token(&browser, &site, "laptop", "", &[]);
        assert!(laptop.starts_with("pcp_"), "{mode}: {laptop}");
        let login = browser
            .attribute("div.pull button[data-copy]", "data-copy")
            .expect("a login line");
        assert!(
            login.starts_with("docker login ") && login.ends_with(" -u alice"),
            "{login}"
        );
        let (ok, err) = site.push(&format!("alice:{laptop}"), "alice/app:1");
        assert!(ok, "{mode}: the token pushes as alice: {err}");
        assert!(
            can_pull(&site, &format!("alice:{laptop}"), "alice/app:1"),
            "{mode}"
        );
        assert!(
            !can_pull(&site, &format!("bob:{laptop}"), "alice/app:1"),
            "{mode}: it is alice's"
        );
        assert!(
            !can_pull(&site, &format!("alice:{laptop}"), "secret/none:1"),
            "{mode}: no more than the policies give alice"
        );

        // Narrowed: pulls of alice/app only.
        let (narrow, narrow_id) = make_token(&browser, &site, "ci", "alice/app", &["pull"]);
        assert!(
            browser
                .text("#made")
                .is_some_and(|m| m.contains("pull, only on alice/app"))
        );
        assert!(
            can_pull(&site, &format!("alice:{narrow}"), "alice/app:1"),
            "{mode}"
        );
        let (ok, _) = site.push(&format!("alice:{narrow}"), "alice/app:2");
        assert!(!ok, "{mode}: a pull-only token does not push");
        let (ok, _) = site.push(&format!("alice:{narrow}"), "alice/other:1");
        assert!(!ok, "{mode}: nor reaches another repository");

        // Issue 19: a Bearer token minted with a personal token carries it: its narrowing
        // (the catalog included) and its revocation (below), in gateway mode.
        let bearer = |creds: &str, scope: &str| -> String {
            let (status, json) = token(
                site.setup.gateway_port,
                &format!("service={SERVICE}&scope={scope}"),
                Some(creds),
            );
            assert_eq!(status, 200, "{mode}: {json}");
            json["token"].as_str().expect("a token").to_string()
        };
        let with_bearer = |bearer: &str, path: &str| -> (u16, String) {
            let head = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
            );
            let (status, _, body) = http(site.port, &head, b"");
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        let laptop_bearer = bearer(&format!("alice:{laptop}"), "repository:alice/app:pull");
        if gateway_mode {
            let (ok, err) = site.push(&format!("alice:{laptop}"), "alice/other:1");
            assert!(ok, "{mode}: {err}");
            let narrow_bearer = bearer(&format!("alice:{narrow}"), "registry:catalog:*");
            let (status, listed) = with_bearer(&narrow_bearer, "/v2/_catalog");
            assert_eq!(status, 200, "{listed}");
            assert!(
                listed.contains("\"alice/app\"") && !listed.contains("alice/other"),
                "the narrowed token's Bearer token lists only alice/app: {listed}"
            );
            let (status, listed) = with_bearer(&laptop_bearer, "/v2/_catalog");
            assert_eq!(status, 200, "{listed}");
            assert!(listed.contains("alice/other"), "{listed}");
            assert_eq!(
                with_bearer(&laptop_bearer, "/v2/alice/app/tags/list").0,
                200
            );
        }

        // Revoked: at once here, and without a restart at a running replica that reads
        // the same files.
        let (config_b, port_b) = site.setup.replica_config();
        let _b = serve(&config_b, port_b);
        let token_at_b = |creds: &str| {
            let query = format!("service={SERVICE}&scope=repository:alice/app:pull");
            token(port_b, &query, Some(creds)).0
        };
        assert_eq!(
            token_at_b(&format!("alice:{laptop}")),
            200,
            "{mode}: replica b takes the laptop token before it is revoked"
        );
        browser.goto(&ui(&site, "/ui/tokens"));
        browser.fill("#revoke", &laptop_id);
        let revoked_at = std::time::Instant::now();
        browser.click("form[action='/ui/tokens/revoke'] button");
        assert!(
            browser
                .text("#notice")
                .is_some_and(|n| n.contains(&laptop_id)),
            "{mode}: {:?}",
            browser.text("main")
        );
        assert!(
            !can_pull(&site, &format!("alice:{laptop}"), "alice/app:1"),
            "{mode}: revoked"
        );
        if gateway_mode {
            let (status, body) = with_bearer(&laptop_bearer, "/v2/alice/app/tags/list");
            assert_eq!(
                status, 401,
                "the revoked token's Bearer token dies with it: {body}"
            );
            assert!(body.contains("was revoked"), "{body}");
        }
        let revoked = std::fs::read_to_string(site.setup.path("revoked")).expect("the file");
        assert!(
            revoked.contains(&laptop_id) && revoked.contains("revoked by alice"),
            "{revoked}"
        );
        assert_eq!(
            token_at_b(&format!("alice:{narrow}")),
            200,
            "{mode}: replica b opens alice's token"
        );
        while token_at_b(&format!("alice:{laptop}")) != 401 {
            assert!(
                revoked_at.elapsed() < std::time::Duration::from_secs(10),
                "{mode}: replica b still takes the revoked token"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!(
            "{mode}: replica b refused the revoked token {:?} after the revocation",
            revoked_at.elapsed()
        );
        // Issue 19: a revocation file that goes missing (a volume not mounted, a mistyped
        // path) revives nothing: both replicas keep the revocations they read.
        let file = site.setup.path("revoked");
        let kept = std::fs::read_to_string(&file).expect("the file");
        std::fs::remove_file(&file).expect("removed");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(
            !can_pull(&site, &format!("alice:{laptop}"), "alice/app:1"),
            "{mode}: a missing revocation file revived the token"
        );
        assert_eq!(
            token_at_b(&format!("alice:{laptop}")),
            401,
            "{mode}: at b too"
        );
        std::fs::write(&file, kept).expect("restored");
        browser.click("form.signout button");

        // bob may not revoke alice's token by its id; carol, an admin, may.
        sign_in(&browser, &site, "bob", "bob-pw");
        let (bobs, _) = make_token(&browser, &site, "bob's", "", &[]);
        browser.goto(&ui(&site, "/ui/tokens"));
        browser.fill("#revoke", &narrow_id);
        browser.click("form[action='/ui/tokens/revoke'] button");
        assert!(
            browser
                .text(".error")
                .is_some_and(|e| e.contains("not the id of one of your tokens"))
        );
        assert!(
            can_pull(&site, &format!("alice:{narrow}"), "alice/app:1"),
            "{mode}: still good"
        );
        browser.click("form.signout button");
        sign_in(&browser, &site, "carol", "carol-pw");
        browser.goto(&ui(&site, "/ui/tokens"));
        browser.fill("#revoke", &narrow_id);
        browser.click("form[action='/ui/tokens/revoke'] button");
        assert!(browser.text("#notice").is_some());
        assert!(
            !can_pull(&site, &format!("alice:{narrow}"), "alice/app:1"),
            "{mode}: revoked by an admin"
        );

        // A token ends with its owner.
        let (ok, err) = site.push(&format!("bob:{bobs}"), "bob/app:1");
        assert!(ok, "{mode}: {err}");
        site.setup.remove_user("bob");
        let gone = || !can_pull(&site, &format!("bob:{bobs}"), "bob/app:1");
        let started = std::time::Instant::now();
        while !gone() {
            assert!(
                started.elapsed().as_secs() < 10,
                "{mode}: bob's token outlived bob"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The `[console.sso]` block for `provider` (its client secret written beside the config),
/// with `extra` lines.
pub(crate) fn sso_block(setup: &Setup, provider: &Provider, extra: &str) -> String {
    std::fs::write(setup.path("sso-secret"), "console-secret\n").expect("secret");
    format!(
        r#"
[console.sso]
issuer = "{}"
client_id = "console"
client_secret_file = "sso-secret"
groups = ["{{groups}}"]
scopes = ["openid", "profile", "email", "groups", "offline_access"]
prompt = "login consent"
insecure_http = true
recheck_seconds = 1
{extra}
"#,
        provider.issuer()
    )
}

/// A token-server console with "Sign in with SSO" at a provider of its own.
fn sso_site() -> (Site, Provider) {
    let setup = console_setup(false);
    let provider = Provider::for_console(&format!(
        "http://127.0.0.1:{}/ui/sso/callback",
        setup.gateway_port
    ));
    setup.insert_config(&sso_block(&setup, &provider, ""));
    (
        Site::start(setup, false, b"an SSO person's image"),
        provider,
    )
}

/// Signs `person` in through the provider's own login pages (any name logs in there).
pub(crate) fn sso_sign_in(browser: &Browser, site: &Site, provider: &Provider, person: &str) {
    browser.goto(&ui(site, "/ui/login"));
    browser.click("a[href='/ui/sso']");
    assert!(
        browser.url().starts_with(&provider.issuer()),
        "at the provider: {}",
        browser.url()
    );
    browser.fill("input[name=login]", person);
    browser.fill("input[name=password]", "anything");
    browser.click("button.login-submit");
    if browser.text("button.login-submit").is_some() {
        // The consent page (offline_access asks for it).
        browser.click("button.login-submit");
    }
}

/// Issue 19: anyone may open the sign-in link, so it costs the provider one discovery fetch
/// an hour, not one per visit; and each answer of the provider is acted on once, however
/// often it is replayed.
#[test]
fn the_sso_link_and_a_replayed_answer_cost_the_provider_nothing_more() {
    let (site, provider) = sso_site();
    let port = site.setup.gateway_port;
    let discovered = provider.fetches("discovery");
    let mut started = None;
    for _ in 0..5 {
        let (status, head, _) = request(port, "GET", "/ui/sso", &[], "");
        assert_eq!(status, 303, "{head}");
        started = Some(head);
    }
    assert!(
        provider.fetches("discovery") - discovered <= 1,
        "five visits, {} discovery fetches",
        provider.fetches("discovery") - discovered
    );
    let head = started.expect("a start");
    let flow = set_cookies(&head)
        .into_iter()
        .find(|c| c.starts_with("portcullis-flow="))
        .expect("the flow cookie");
    let location = crate::util::header(&head, "location").expect("to the provider");
    let state = location
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("state="))
        .expect("a state");
    let callback = format!("/ui/sso/callback?code=made-up&state={state}");
    let asked = provider.fetches("token");
    let (status, _, page) = request(port, "GET", &callback, &[("Cookie", &flow)], "");
    assert_eq!(status, 401, "the provider refuses a made-up code: {page}");
    assert_eq!(provider.fetches("token") - asked, 1);
    let (status, _, page) = request(port, "GET", &callback, &[("Cookie", &flow)], "");
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("used already"), "{page}");
    assert_eq!(
        provider.fetches("token") - asked,
        1,
        "the replay did not reach the provider"
    );
}

#[test]
fn people_sign_in_with_sso_and_their_tokens_end_when_the_provider_forgets_them() {
    let (site, provider) = sso_site();
    let browser = Browser::start(1280, 900);
    let sso = |person: &str| sso_sign_in(&browser, &site, &provider, person);

    sso("dana");
    assert!(
        browser.url().ends_with("/ui/repositories"),
        "{}",
        browser.url()
    );
    assert_eq!(browser.text(".who").as_deref(), Some("dana"));
    assert_eq!(
        browser.attribute(".who", "title").as_deref(),
        Some(&*provider.issuer()),
        "the source is the provider"
    );
    explain(&browser, &site, "name=dana/app&action=push");
    assert_eq!(
        browser.text("#verdict h2").as_deref(),
        Some("Granted: push on dana/app")
    );
    let seen = browser.text("#request").expect("the request");
    assert!(
        seen.contains("engineering"),
        "the provider's groups: {seen}"
    );
    assert!(
        seen.contains("email=dana@example.test"),
        "the provider's claims: {seen}"
    );

    // dana, whose provider holds no registry password, gets one here.
    let (token, _) = make_token(&browser, &site, "laptop", "", &[]);
    let (ok, err) = site.push(&format!("dana:{token}"), "dana/app:1");
    assert!(ok, "an SSO person's token pushes: {err}");
    provider.forget("dana");
    let started = std::time::Instant::now();
    while can_pull(&site, &format!("dana:{token}"), "dana/app:1") {
        assert!(
            started.elapsed().as_secs() < 10,
            "dana's token outlived her at the provider"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    browser.click("form.signout button");

    // The provider cannot make anyone an htpasswd user.
    sso("alice");
    assert!(
        browser.url().contains("/ui/sso/callback"),
        "{}",
        browser.url()
    );
    assert!(
        browser
            .text(".error")
            .is_some_and(|e| e.contains("is an htpasswd user's")),
        "{:?}",
        browser.text("main")
    );
    // Issue 19: an SSO person whose name the htpasswd comes to hold loses their session
    // and their personal token at the next use, not only at the next sign-in.
    sso("frank");
    assert!(
        browser.url().ends_with("/ui/repositories"),
        "{}",
        browser.url()
    );
    let (franks, _) = make_token(&browser, &site, "laptop", "", &[]);
    let (ok, err) = site.push(&format!("frank:{franks}"), "frank/app:1");
    assert!(ok, "frank's token pushes: {err}");
    let htpasswd = site.setup.path("htpasswd");
    let out = portcullis(
        &["passwd", htpasswd.to_str().expect("utf-8"), "frank"],
        Some("frank-pw\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = std::time::Instant::now();
    while can_pull(&site, &format!("frank:{franks}"), "frank/app:1") {
        assert!(
            started.elapsed().as_secs() < 10,
            "the SSO frank's token outlived the htpasswd's frank"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    browser.goto(&ui(&site, "/ui/repositories"));
    assert!(
        browser.url().ends_with("/ui/login"),
        "the SSO frank's session ended: {}",
        browser.url()
    );
    // The provider's error text is not shown: anyone can make a link carry any.
    browser.goto(&ui(
        &site,
        "/ui/sso/callback?error=access_denied&error_description=Call+support+at+555",
    ));
    let shown = browser.text("main").unwrap_or_default();
    assert!(
        shown.contains("the sign-in was declined") && !shown.contains("555"),
        "{shown}"
    );

    // A callback that this browser did not start is refused.
    browser.goto(&ui(&site, "/ui/sso/callback?code=stolen&state=guessed"));
    assert!(
        browser
            .text(".error")
            .is_some_and(|e| e.contains("was not started here"))
    );
    browser.goto(&ui(&site, "/ui/repositories"));
    assert!(browser.url().ends_with("/ui/login"), "not signed in");
}

/// What a browser-based registry UI does, step by step, as Joxit's docker-registry-ui 2.x
/// does it (XHR): list the catalog, read the challenge, fetch a token from its realm, then
/// list again with the token. The token request carries the person's credentials either as
/// a header the UI's own login form made (`header`), or, as Joxit relies on, as the browser
/// adds them itself once the person has signed in to the token server in its prompt
/// (`browser`: only `withCredentials`).
const UI_FLOW: &str = r#"
const [registry, user, password, style] = arguments;
const xhr = (method, url, opts = {}) => new Promise((resolve) => {
  const r = new XMLHttpRequest();
  r.open(method, url);
  r.withCredentials = Boolean(opts.credentials);
  for (const [k, v] of Object.entries(opts.headers || {})) r.setRequestHeader(k, v);
  r.onloadend = () => resolve({
    status: r.status,
    challenge: r.getResponseHeader('www-authenticate'),
    body: r.responseText,
  });
  r.send();
});
(async () => {
  const first = await xhr('GET', registry + '/v2/_catalog');
  const m = /Bearer realm="(?<realm>[^"]+)",service="(?<service>[^"]+)",scope="(?<scope>[^"]+)"/
    .exec(first.challenge || '');
  if (!m) return done({ first });
  const url = `${m.groups.realm}?service=${m.groups.service}&scope=${m.groups.scope}`;
  const headers = style === 'header' ? { Authorization: 'Basic ' + btoa(user + ':' + password) } : {};
  const token = await xhr('GET', url, { credentials: true, headers });
  const bearer = JSON.parse(token.body || '{}').token;
  const catalog = await xhr('GET', registry + '/v2/_catalog', {
    headers: { Authorization: 'Bearer ' + bearer },
  });
  done({ first, scope: m.groups.scope, token: token.status, catalog });
})().catch((e) => done({ error: String(e) }));
"#;

/// A static web server (Python's) on its own port: where a browser-based UI's page lives.
fn static_site(dir: &std::path::Path) -> (crate::util::Daemon, u16) {
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>registry ui</title>",
    )
    .expect("page");
    let port = crate::util::free_port();
    let mut child = std::process::Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    crate::util::wait_for("the static site", &mut child, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (crate::util::Daemon(child), port)
}

#[test]
fn a_browser_based_registry_ui_on_an_allowed_origin_gets_a_token_and_the_filtered_catalog() {
    let pages = tempfile::tempdir().expect("tempdir");
    let (_ui, ui_port) = static_site(pages.path());
    let (_elsewhere, other_port) = static_site(pages.path());
    let setup = Setup::gateway_with(
        ACL,
        USERS,
        &format!("cors_origins = [\"http://127.0.0.1:{ui_port}\"]\n"),
        "",
    );
    std::fs::write(setup.path("groups"), "admins: carol\n").expect("groups");
    // No anonymous access: the token server must ask the browser for credentials.
    let config = setup.path("portcullis.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("anonymous = true", "anonymous = false"),
    )
    .expect("config");
    let site = Site::start(setup, true, b"an image for a web UI");
    for (creds, reference) in [
        ("alice:alice-pw", "alice/app:1"),
        ("bob:bob-pw", "bob/tool:1"),
        ("carol:carol-pw", "public/base:1"),
    ] {
        let (ok, err) = site.push(creds, reference);
        assert!(ok, "{err}");
    }
    let registry = format!("http://127.0.0.1:{}", site.setup.gateway_port);
    let browser = Browser::start(1280, 900);
    let flow = |ui_port: u16, user: &str, password: &str, style: &str| {
        browser.goto(&format!("http://127.0.0.1:{ui_port}/"));
        browser.run_async(
            UI_FLOW,
            vec![
                registry.clone().into(),
                user.into(),
                password.into(),
                style.into(),
            ],
        )
    };
    let listed = |seen: &serde_json::Value| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(seen["catalog"]["body"].as_str().unwrap_or(""))
            .expect("json")["repositories"]
            .clone()
    };
    let seen = flow(ui_port, "alice", "alice-pw", "header");
    assert_eq!(seen["first"]["status"], 401, "{seen}");
    assert_eq!(
        seen["scope"], "registry:catalog:*",
        "the challenge names the scope: {seen}"
    );
    assert_eq!(seen["token"], 200, "{seen}");
    assert_eq!(seen["catalog"]["status"], 200, "{seen}");
    assert_eq!(
        listed(&seen),
        serde_json::json!(["alice/app", "public/base"]),
        "alice's page lists what the policies let her pull"
    );
    // Joxit's way: the person signed in to the token server in the browser's own prompt
    // (here, a navigation carrying bob's name and password), and the browser adds his
    // credentials to the UI's requests itself.
    browser.goto(&format!(
        "http://bob:bob-pw@127.0.0.1:{}/token?service={}",
        site.setup.gateway_port,
        crate::util::SERVICE
    ));
    let seen = flow(ui_port, "", "", "browser");
    assert_eq!(seen["token"], 200, "{seen}");
    assert_eq!(
        listed(&seen),
        serde_json::json!(["bob/tool", "public/base"]),
        "{seen}"
    );

    // Without credentials, the token server asks the browser for them (its prompt), and
    // the page may read that answer.
    let ui_origin = format!("http://127.0.0.1:{ui_port}");
    let (status, head, _) = request(
        site.setup.gateway_port,
        "GET",
        &format!(
            "/token?service={}&scope=registry:catalog:*",
            crate::util::SERVICE
        ),
        &[("Origin", &ui_origin)],
        "",
    );
    assert_eq!(status, 401);
    assert_eq!(
        crate::util::header(&head, "www-authenticate"),
        Some("Basic realm=\"portcullis\"")
    );
    assert_eq!(
        crate::util::header(&head, "access-control-allow-origin"),
        Some(&*ui_origin)
    );
    assert_eq!(
        crate::util::header(&head, "access-control-allow-credentials"),
        Some("true")
    );
    // The preflight of a request with a token: answered without credentials.
    let (status, head, _) = request(
        site.setup.gateway_port,
        "OPTIONS",
        "/v2/_catalog",
        &[
            ("Origin", &ui_origin),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        "",
    );
    assert_eq!(status, 204);
    assert!(
        crate::util::header(&head, "access-control-allow-headers")
            .is_some_and(|h| h.contains("Authorization"))
    );

    // A page elsewhere reads nothing: the browser withholds every answer.
    let seen = flow(other_port, "alice", "alice-pw", "header");
    assert_eq!(seen["first"]["status"], 0, "{seen}");
    assert!(seen.get("catalog").is_none(), "{seen}");
}

/// A repository name of `length` characters that the registry accepts.
fn long_name(length: usize) -> String {
    let mut name = String::from("public/");
    while name.len() < length {
        name.push_str(if name.ends_with('/') {
            "team"
        } else {
            "-platform"
        });
    }
    name.truncate(length);
    name.trim_end_matches('-').to_string()
}

/// Checks the page shown: no sideways scrolling at this width, and every link, button and
/// field reachable by keyboard (in the tab order, and takes focus). Saves a screenshot into
/// `$PORTCULLIS_SCREENSHOTS` (scripts/screenshots.sh) when set.
fn check_page(browser: &Browser, name: &str, width: u32) {
    let overflow = browser
        .run("return document.documentElement.scrollWidth - document.documentElement.clientWidth;");
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "{name} at {width} px scrolls sideways by {overflow} px"
    );
    let unreachable = browser.run(
        "return [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea')]
           .filter((el) => el.offsetParent !== null)
           .filter((el) => { el.focus(); return el.tabIndex < 0 || document.activeElement !== el; })
           .map((el) => el.outerHTML.slice(0, 80));",
    );
    assert_eq!(
        unreachable,
        serde_json::json!([]),
        "{name}: not reachable by keyboard"
    );
    if let Some(dir) = std::env::var_os("PORTCULLIS_SCREENSHOTS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        browser.run("window.scrollTo(0, 0); document.activeElement.blur(); return null;");
        // The whole page, not the first screenful (up to 4000 px): the window's size
        // includes the browser's own bars, and it grows asynchronously.
        let before = browser.size();
        for _ in 0..50 {
            let [inner, outer, page] = [
                "window.innerHeight",
                "window.outerHeight",
                "document.documentElement.scrollHeight",
            ]
            .map(|h| browser.run(&format!("return {h};")).as_u64().unwrap_or(0) as u32);
            if inner >= page.min(4000) {
                break;
            }
            browser.resize(width, page.min(4000) + outer.saturating_sub(inner));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        browser.screenshot(&dir.join(format!("{name}-{width}.png")));
        browser.resize(before.0, before.1);
    }
}

#[test]
fn every_page_reads_on_a_phone_and_a_desktop_and_works_by_keyboard() {
    let site = console_site(true);
    let long = long_name(200);
    assert_eq!(long.len(), 200);
    let mut names: Vec<String> = (1..=12).map(|i| format!("public/service-{i:02}")).collect();
    names.push(long.clone());
    populate(site.setup.registry_port, &names);
    let app = push_labelled(&site, "alice:alice-pw", "alice/app:1.4.2");
    push_index(&site, "carol:carol-pw", "public/multi:1");
    let browser = Browser::start(1280, 900);
    for (width, height) in [(1280, 900), (390, 844)] {
        browser.resize(width, height);
        browser.goto(&ui(&site, "/ui/login"));
        check_page(&browser, "sign-in", width);
        sign_in(&browser, &site, "carol", "carol-pw");
        check_page(&browser, "repositories", width);
        browser.goto(&ui(&site, &format!("/ui/repository?name={long}")));
        assert!(browser.text("h1").is_some_and(|h| h == long));
        check_page(&browser, "long-name", width);
        browser.goto(&ui(&site, "/ui/repository?name=alice/app"));
        check_page(&browser, "repository", width);
        browser.goto(&ui(
            &site,
            &format!("/ui/manifest?name=alice/app&ref={app}"),
        ));
        check_page(&browser, "image", width);
        browser.goto(&ui(&site, "/ui/manifest?name=public/multi&ref=1"));
        check_page(&browser, "index", width);
        browser.goto(&ui(&site, &format!("/ui/delete?name=alice/app&ref={app}")));
        check_page(&browser, "delete", width);
        explain(
            &browser,
            &site,
            "name=alice/app&action=push&ref=v2&account=bob",
        );
        check_page(&browser, "explain", width);
        browser.goto(&ui(&site, "/ui/tokens"));
        check_page(&browser, "tokens", width);
        make_token(
            &browser,
            &site,
            "release pipeline",
            "public/*",
            &["pull", "push"],
        );
        check_page(&browser, "token-made", width);
        browser.goto(&ui(&site, "/ui/admin/status"));
        check_page(&browser, "status", width);
        browser.goto(&ui(&site, "/ui/admin/decisions"));
        check_page(&browser, "decisions", width);
        browser.goto(&ui(&site, "/ui/repository?name=secret/none"));
        check_page(&browser, "not-found", width);
        browser.click("form.signout button");
    }
}
