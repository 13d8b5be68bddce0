//! The web console end to end: Portcullis with `[console]` in front of Debian's
//! docker-registry, driven by a real headless Chromium (and, for what a browser would never
//! send, by hand-made requests): signing in and out, sessions that end with the account,
//! and forged or tampered requests refused.

use crate::browser::Browser;
use crate::util::{Setup, Site, http, portcullis};

/// alice and bob own their namespaces; carol is an admin; everyone pulls `public/`.
const ACL: &str = r#"{"rules": [
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
    let setup = if gateway_mode {
        Setup::gateway(ACL, USERS, "")
    } else {
        Setup::new(ACL, USERS)
    };
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
    std::fs::write(setup.path("groups"), "admins: carol\n").expect("groups");
    std::fs::write(setup.path("revoked"), "").expect("revoked");
    let registry_url = if gateway_mode {
        String::new()
    } else {
        format!(
            "registry_url = \"http://127.0.0.1:{}\"\n",
            setup.registry_port
        )
    };
    setup.insert_config(&format!(
        r#"
[console]
enabled = true
admins = ["admins"]
session_key = "keys/session.key"
revoked_tokens = "revoked"
{registry_url}"#
    ));
    Site::start(setup, gateway_mode, b"a console test image")
}

fn ui(site: &Site, path: &str) -> String {
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

/// A raw request to the console: (status, head, body).
fn request(
    site: &Site,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: &str,
) -> (u16, String, String) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        site.setup.gateway_port
    );
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
    let (status, head, body) = http(site.setup.gateway_port, &head, form.as_bytes());
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Signs in by hand: the session cookie pair and the session's CSRF token.
fn sign_in_by_hand(site: &Site, user: &str, password: &str) -> (String, String) {
    let (status, head, page) = request(site, "GET", "/ui/login", &[], "");
    assert_eq!(status, 200);
    let flow = set_cookies(&head).pop().expect("a flow cookie");
    let form = format!("csrf={}&user={user}&password={password}", csrf_of(&page));
    let (status, head, _) = request(site, "POST", "/ui/login", &[("Cookie", &flow)], &form);
    assert_eq!(status, 303, "{head}");
    let session = set_cookies(&head)
        .into_iter()
        .find(|c| c.starts_with("portcullis-session="))
        .expect("a session cookie");
    let (_, _, page) = request(site, "GET", "/ui/repositories", &[("Cookie", &session)], "");
    (session.clone(), csrf_of(&page))
}

#[test]
fn forged_and_cross_site_requests_are_refused() {
    let site = console_site(true);
    let (session, csrf) = sign_in_by_hand(&site, "alice", "alice-pw");
    let (status, head, _) = request(
        &site,
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
        let (status, head, _) = request(&site, "POST", "/ui/logout", &[("Cookie", &session)], form);
        assert_eq!(status, 403, "{form:?}: {head}");
        assert!(set_cookies(&head).is_empty(), "{form:?}: nothing cleared");
    }
    // From another site, even with the token (a page that stole it).
    let (status, _, _) = request(
        &site,
        "POST",
        "/ui/logout",
        &[("Cookie", &session), ("Origin", "http://evil.example")],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 403);
    let (status, _, _) = request(
        &site,
        "POST",
        "/ui/logout",
        &[("Cookie", &session), ("Sec-Fetch-Site", "cross-site")],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 403);
    // A sign-in form posted without its flow (login CSRF: signing a victim in as us).
    let (status, head, _) = request(
        &site,
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
        &site,
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
    let (foreign, _) = sign_in_by_hand(&other, "alice", "alice-pw");
    let (status, head, _) = request(
        &site,
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
