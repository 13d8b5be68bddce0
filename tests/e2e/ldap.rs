//! Directory users end to end: a real OpenLDAP server (Debian's slapd, its own config in a
//! temp dir, TLS with a certificate made here, the memberof overlay) holds users,
//! `groupOfNames` groups and a group of groups; skopeo logs in and pushes as a directory
//! user in both modes, decided by nested groups and by attributes handed to the policies;
//! every way a directory login can go wrong is refused, closed.

use crate::util::{
    Daemon, SERVICE, Setup, Site, free_port, http, jwt_payload, post_token, require, token,
    wait_for,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BASE: &str = "dc=example,dc=org";
const ADMIN: &str = "cn=admin,dc=example,dc=org";

/// `engineering` (holding the group `devs`, which holds alice) pushes to `eng/`; the
/// `platform` department pushes to `platform/`; everyone reads `public/`.
const ACL: &str = r#"{"rules": [
  {"match": {"group": "engineering", "name": "eng/**"}, "actions": ["pull", "push"], "comment": "engineering, nested groups included"},
  {"match": {"claims": {"departmentNumber": "platform"}, "name": "platform/**"}, "actions": ["pull", "push"], "comment": "by department"},
  {"match": {"account": "/.+/", "name": "${account}/**"}, "actions": ["pull", "push"]}
]}"#;

const PEOPLE: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: ou=services,dc=example,dc=org
objectClass: organizationalUnit
ou: services

dn: cn=portcullis,ou=services,dc=example,dc=org
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: portcullis
userPassword: service-pw

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: A
mail: alice@example.org
departmentNumber: platform
userPassword: alice-pw

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B
departmentNumber: sales
userPassword: bob-pw

dn: uid=dave,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dave
cn: Dave, without a password: an account that cannot log in
sn: D

dn: cn=devs,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: devs
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=engineering,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: engineering
member: cn=devs,ou=groups,dc=example,dc=org
";

/// slapd, stopped when dropped.
struct Slapd {
    child: Child,
    /// `ldap://` (StartTLS) and `ldaps://` ports.
    port: u16,
    tls_port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Slapd {
    /// A fresh directory; `extra` lines go into slapd.conf's global section.
    fn start(extra: &str) -> Slapd {
        require("slapd");
        require("ldapadd");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("db")).expect("mkdir");
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("a certificate");
        std::fs::write(root.join("ldap.crt"), cert.cert.pem()).expect("cert");
        std::fs::write(root.join("ldap.key"), cert.signing_key.serialize_pem()).expect("key");
        std::fs::write(
            root.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 include /etc/ldap/schema/nis.schema\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload memberof\n\
                 pidfile {root}/slapd.pid\n\
                 TLSCertificateFile {root}/ldap.crt\nTLSCertificateKeyFile {root}/ldap.key\n\
                 {extra}\n\
                 database mdb\nsuffix \"{BASE}\"\nrootdn \"{ADMIN}\"\nrootpw admin-pw\n\
                 directory {root}/db\noverlay memberof\n",
                root = root.display()
            ),
        )
        .expect("slapd.conf");
        let (port, tls_port) = (free_port(), free_port());
        let mut slapd = Slapd {
            child: Self::spawn(root, port, tls_port),
            port,
            tls_port,
            dir,
        };
        slapd.wait();
        slapd.ldif("ldapadd", PEOPLE);
        slapd
    }

    fn spawn(root: &Path, port: u16, tls_port: u16) -> Child {
        Command::new("slapd")
            .args(["-d", "0", "-h"])
            .arg(format!(
                "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"
            ))
            .arg("-f")
            .arg(root.join("slapd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd runs")
    }

    fn wait(&mut self) {
        let port = self.port;
        wait_for("slapd", &mut self.child, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `tool` (ldapadd, ldapmodify, ldapdelete) as the admin with `input`.
    fn ldif(&self, tool: &str, input: &str) {
        let r = crate::util::run_with_stdin(
            Command::new(tool).args([
                "-x",
                "-H",
                &format!("ldap://127.0.0.1:{}", self.port),
                "-D",
                ADMIN,
                "-w",
                "admin-pw",
            ]),
            input,
        );
        assert!(r.ok, "{tool}: {}", r.text);
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ldap.crt")
    }
}

/// The `[identity.ldap]` block for `url`, with `ca`.
fn ldap_config(setup: &Setup, url: &str, ca: &Path, extra: &str) -> String {
    std::fs::write(setup.path("ldap-password"), "service-pw\n").expect("password file");
    format!(
        r#"
[identity.ldap]
url = "{url}"
ca = "{ca}"
bind_dn = "cn=portcullis,ou=services,{BASE}"
bind_password_file = "ldap-password"
user_base = "ou=people,{BASE}"
user_filter = "(uid={{username}})"
group_base = "ou=groups,{BASE}"
group_filter = "(member={{dn}})"
attributes = ["mail", "departmentNumber"]
timeout_seconds = 2
{extra}
"#,
        ca = ca.display()
    )
}

fn site(gateway_mode: bool, block: impl FnOnce(&Setup) -> String) -> Site {
    // The htpasswd holds only carol: everyone else is the directory's.
    let users = &[("carol", "carol-pw")];
    let setup = if gateway_mode {
        Setup::gateway(ACL, users, "")
    } else {
        Setup::new(ACL, users)
    };
    setup.insert_config(&block(&setup));
    Site::start(setup, gateway_mode, b"a directory user's image")
}

#[test]
fn a_directory_user_pushes_by_nested_groups_and_attributes_in_both_modes() {
    let slapd = Slapd::start("");
    for (gateway_mode, url) in [
        (false, format!("ldaps://127.0.0.1:{}", slapd.tls_port)),
        (true, format!("ldap://127.0.0.1:{}", slapd.port)),
    ] {
        let starttls = if gateway_mode { "starttls = true" } else { "" };
        let site = site(gateway_mode, |setup| {
            ldap_config(setup, &url, &slapd.ca(), starttls)
        });
        let mode = if gateway_mode {
            "gateway, StartTLS"
        } else {
            "token-server, LDAPS"
        };
        let (ok, err) = site.push("alice:alice-pw", "eng/app:1");
        assert!(
            ok,
            "{mode}: alice, in engineering through devs, pushes to eng/: {err}"
        );
        let (ok, err) = site.push("alice:alice-pw", "platform/tool:1");
        assert!(ok, "{mode}: alice's department reaches the policies: {err}");
        let (ok, _) = site.push("bob:bob-pw", "eng/app:2");
        assert!(!ok, "{mode}: bob is in no group");
        let (ok, _) = site.push("bob:bob-pw", "platform/tool:2");
        assert!(!ok, "{mode}: bob is in sales");
        let (ok, err) = site.push("bob:bob-pw", "bob/own:1");
        assert!(ok, "{mode}: bob pushes his own: {err}");
        let (ok, _) = site.push("alice:wrong", "alice/x:1");
        assert!(!ok, "{mode}: a wrong password");
        // The htpasswd's own user still logs in, and is never sent to the directory.
        let (ok, err) = site.push("carol:carol-pw", "carol/x:1");
        assert!(ok, "{mode}: carol from the htpasswd: {err}");
    }
}

/// mallory, suspended by name; oscar, by the `suspended` group (a posixGroup, whose
/// `memberUid` compares names exactly).
const SUSPENDED: &str = "\
dn: uid=mallory,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: mallory
cn: Mallory
sn: M
userPassword: mallory-pw

dn: uid=oscar,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: oscar
cn: Oscar
sn: O
userPassword: oscar-pw

dn: cn=suspended,ou=groups,dc=example,dc=org
objectClass: posixGroup
cn: suspended
gidNumber: 5000
memberUid: oscar
";

const SUSPENDING: &str = r#"{"rules": [
  {"match": {"account": "mallory"}, "actions": [], "comment": "mallory is suspended"},
  {"match": {"group": "suspended"}, "actions": [], "comment": "the suspended group"},
  {"match": {"source": "ldap", "name": "secret/**"}, "actions": ["pull", "push"], "comment": "the directory's people"},
  {"match": {"account": "/.+/", "name": "team/**"}, "actions": ["pull", "push"], "comment": "everyone"}
]}"#;

/// Issue 19: the directory matches `uid` without case and folds spaces; the account is the
/// entry's own spelling, so no spelling escapes a rule or a group about the name, shares a
/// throttle count of its own, or shows in the decision log; and a name the directory holds
/// is no OIDC workload's to take.
#[test]
fn every_spelling_of_a_directory_name_is_the_one_account_and_no_other_source_takes_it() {
    let slapd = Slapd::start("");
    slapd.ldif("ldapadd", SUSPENDED);
    let provider = crate::oidc::Provider::start();
    let url = format!("ldaps://127.0.0.1:{}", slapd.tls_port);
    let setup = Setup::gateway(
        SUSPENDING,
        &[("carol", "carol-pw")],
        "[log]\ndecisions = \"decisions.jsonl\"\n",
    );
    let block = ldap_config(&setup, &url, &slapd.ca(), "").replace(
        "group_filter = \"(member={dn})\"",
        "group_filter = \"(|(member={dn})(memberUid={username}))\"",
    );
    setup.insert_config(&block);
    setup.insert_config(&crate::oidc::issuer_block(
        &provider,
        "{repository}",
        "repository_owner = \"acme\"",
    ));
    let site = Site::start(setup, true, b"a suspended user's image");
    for spelling in ["mallory", "Mallory", "MALLORY", "mallory ", " mallory"] {
        let (ok, _) = site.push(&format!("{spelling}:mallory-pw"), "team/app:1");
        assert!(!ok, "{spelling:?} is mallory, and mallory is suspended");
    }
    for spelling in ["oscar", "Oscar", "OSCAR"] {
        let (ok, _) = site.push(&format!("{spelling}:oscar-pw"), "team/app:1");
        assert!(!ok, "{spelling:?} is oscar, in the suspended group");
    }
    let (ok, err) = site.push("bob:bob-pw", "team/app:1");
    assert!(ok, "bob is not suspended: {err}");
    let (ok, err) = site.push("alice:alice-pw", "secret/plans:1");
    assert!(ok, "the directory's alice reaches secret/: {err}");
    let log = std::fs::read_to_string(site.setup.path("decisions.jsonl")).expect("the log");
    assert!(log.contains("\"account\":\"mallory\""), "{log}");
    for typed in ["Mallory", "MALLORY", "mallory ", "Oscar"] {
        assert!(
            !log.contains(&format!("\"account\":\"{typed}\"")),
            "{typed:?} logged"
        );
    }

    // Five wrong passwords under five spellings are five failures of one account.
    for spelling in ["Bob", "BOB", "bob ", "bOb", " bob"] {
        assert_eq!(site.get(spelling, "wrong", "/v2/").0, 401, "{spelling:?}");
    }
    let (status, body) = site.get("bob", "bob-pw", "/v2/");
    assert_eq!(status, 429, "bob's sixth try from here waits: {body}");

    // A workload whose template renders a directory user's name is not that user.
    let job = provider.token(&[("repository", "alice"), ("repository_owner", "acme")]);
    let (status, body) = site.get("ci", &job, "/v2/secret/plans/tags/list");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("is a directory user's"), "{body}");
    let (status, body) = crate::util::post_token(
        site.setup.gateway_port,
        &format!(
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={job}\
             &subject_token_type=urn:ietf:params:oauth:token-type:jwt&service={SERVICE}\
             &scope=repository:secret/plans:pull"
        ),
    );
    assert_eq!(status, 401, "the exchange too: {body}");
    let other = provider.token(&[("repository", "acme-app"), ("repository_owner", "acme")]);
    assert_eq!(
        site.get("ci", &other, "/v2/team/x/tags/list").0,
        404,
        "a workload with a name of its own logs in"
    );
}

/// Every way a directory login can go wrong is refused, closed, and nothing is remembered:
/// a name made of filter metacharacters, an empty password (on a server that would take it
/// as an anonymous bind), an account that cannot bind, a directory that stops, one that
/// never answers, one with a certificate nobody vouches for.
#[test]
fn directory_logins_fail_closed_and_remember_only_successes() {
    // `allow bind_anon_dn`: a DN with an empty password binds as anonymous, the classic
    // bypass a client must not walk into.
    let mut slapd = Slapd::start("allow bind_anon_dn");
    let url = format!("ldaps://127.0.0.1:{}", slapd.tls_port);
    let site = site(true, |setup| {
        ldap_config(setup, &url, &slapd.ca(), "cache_seconds = 60")
    });
    let tags = "/v2/alice/app/tags/list";
    assert_eq!(
        site.get("alice", "alice-pw", tags).0,
        404,
        "alice logs in (no such repository)"
    );
    for (what, user, password) in [
        ("a wildcard that would find alice", "al*", "alice-pw"),
        ("a filter injection", "alice)(uid=*", "alice-pw"),
        ("an empty password", "alice", ""),
        ("an account without a password", "dave", "anything"),
        ("an unknown user", "mallory", "alice-pw"),
    ] {
        let (status, body) = site.get(user, password, tags);
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            body.contains("invalid username or password"),
            "{what}: {body}"
        );
    }

    // The directory stops: alice's remembered login still works for cache_seconds; bob's
    // first login fails as unavailable, never as a wrong password.
    slapd.stop();
    assert_eq!(site.get("alice", "alice-pw", tags).0, 404, "remembered");
    let (status, body) = site.get("bob", "bob-pw", "/v2/bob/app/tags/list");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("identity provider cannot be reached"),
        "{body}"
    );
    assert!(!body.contains("password"), "{body}");
    // A wrong password while it is down is no more remembered than a failure.
    assert_eq!(site.get("alice", "wrong", tags).0, 503);
    // Counted, and shown in /readyz (which stays ready: htpasswd users are served).
    let admin = |path: &str| {
        let (status, _, body) = http(
            site.setup.admin_port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            b"",
        );
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (_, metrics) = admin("/metrics");
    assert!(
        metrics.contains("portcullis_logins_total{source=\"ldap\",result=\"unavailable\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_logins_total{source=\"ldap\",result=\"ok\"}"),
        "{metrics}"
    );
    let (status, ready) = admin("/readyz");
    assert_eq!(
        status, 200,
        "still ready while the directory is away: {ready}"
    );
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("json");
    assert!(
        ready["ldap"]
            .as_str()
            .is_some_and(|e| e.contains("Connection refused")),
        "{ready}"
    );

    // It comes back: bob logs in.
    slapd.child = Slapd::spawn(slapd.dir.path(), slapd.port, slapd.tls_port);
    slapd.wait();
    assert_eq!(site.get("bob", "bob-pw", "/v2/bob/app/tags/list").0, 404);
}

#[test]
fn a_silent_directory_or_an_unknown_certificate_is_unavailable_within_the_timeout() {
    let slapd = Slapd::start("");
    // A directory that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!(
        "ldaps://127.0.0.1:{}",
        silent.local_addr().expect("addr").port()
    );
    let wrong_ca = tempfile::tempdir().expect("tempdir");
    let other =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    std::fs::write(wrong_ca.path().join("other.crt"), other.cert.pem()).expect("write");
    for (what, url, ca) in [
        ("silent", silent_url, slapd.ca()),
        (
            "an unknown certificate",
            format!("ldaps://127.0.0.1:{}", slapd.tls_port),
            wrong_ca.path().join("other.crt"),
        ),
    ] {
        let site = site(true, |setup| ldap_config(setup, &url, &ca, ""));
        let started = std::time::Instant::now();
        let (status, body) = site.get("alice", "alice-pw", "/v2/alice/app/tags/list");
        assert_eq!(status, 503, "{what}: {body}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "{what}: the 2 s timeout held the login for {:?}",
            started.elapsed()
        );
        // htpasswd users are not held up by the directory.
        assert_eq!(
            site.get("carol", "carol-pw", "/v2/carol/x/tags/list").0,
            404,
            "{what}"
        );
        if what == "an unknown certificate" {
            // Issue 23: the operator reads which key to set.
            let config = site.setup.path("portcullis.toml");
            let out = crate::util::portcullis(
                &["check", "--config", config.to_str().expect("utf-8")],
                None,
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("invalid peer certificate")
                    && stderr.contains("[identity.ldap] ca"),
                "{stderr}"
            );
        }
    }
    drop(silent);
}

#[test]
fn a_directory_users_refresh_token_ends_when_the_entry_goes() {
    let slapd = Slapd::start("");
    let url = format!("ldaps://127.0.0.1:{}", slapd.tls_port);
    let site = site(true, |setup| {
        ldap_config(setup, &url, &slapd.ca(), "cache_seconds = 1")
    });
    let port = site.setup.gateway_port;
    let offline = format!("service={SERVICE}&offline_token=true&client_id=docker");
    let (status, json) = token(port, &offline, Some("bob:bob-pw"));
    assert_eq!(status, 200, "{json}");
    let refresh = json["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();
    // alice is in `engineering` through `devs`: a refreshed token is decided with her
    // directory groups, as a password login is.
    let (_, json) = token(port, &offline, Some("alice:alice-pw"));
    let alices = json["refresh_token"].as_str().expect("a refresh token");
    let (status, json) = post_token(
        port,
        &format!(
            "grant_type=refresh_token&service={SERVICE}&refresh_token={alices}&scope=repository:eng/app:push"
        ),
    );
    assert_eq!(status, 200, "{json}");
    let claims = jwt_payload(json["token"].as_str().expect("a token"));
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["push"]));
    assert_eq!(claims["src"], "ldap", "{claims}");
    assert!(
        claims["grp"].to_string().contains("engineering"),
        "{claims}"
    );
    let redeem = || {
        post_token(
            port,
            &format!("grant_type=refresh_token&service={SERVICE}&refresh_token={refresh}"),
        )
    };
    assert_eq!(redeem().0, 200);
    slapd.ldif("ldapdelete", "uid=bob,ou=people,dc=example,dc=org\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (status, body) = redeem();
    assert_eq!(status, 401, "{body}");
    assert!(
        body.to_string().contains("no longer in the directory"),
        "{body}"
    );
}

#[test]
fn a_directory_users_personal_token_ends_when_the_entry_goes() {
    use crate::console::{console_block, make_token_by_hand, sign_in_by_hand};
    let slapd = Slapd::start("");
    let url = format!("ldaps://127.0.0.1:{}", slapd.tls_port);
    let site = site(true, |setup| {
        ldap_config(setup, &url, &slapd.ca(), "cache_seconds = 1") + &console_block(setup, true)
    });
    let port = site.setup.gateway_port;
    // bob signs in to the console with his directory password and makes a token.
    let (session, csrf) = sign_in_by_hand(port, "bob", "bob-pw");
    let laptop = format!(
        "bob:{}",
        make_token_by_hand(port, &session, &csrf, "laptop")
    );
    let (ok, err) = site.push(&laptop, "bob/app:1");
    assert!(ok, "{err}");
    let query = format!("service={SERVICE}&scope=repository:bob/app:pull");
    let login = || token(port, &query, Some(&laptop));
    assert_eq!(login().0, 200);
    // Gone from the directory: the token ends once the remembered lookup expires.
    slapd.ldif("ldapdelete", "uid=bob,ou=people,dc=example,dc=org\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (status, body) = login();
    assert_eq!(status, 401, "{body}");
    let (ok, _) = site.push(&laptop, "bob/app:2");
    assert!(!ok, "a token outlived its owner's entry");
}

#[test]
fn check_binds_the_service_account_and_says_what_fails() {
    let slapd = Slapd::start("");
    let setup = Setup::gateway(ACL, &[("carol", "carol-pw")], "");
    let url = format!("ldaps://127.0.0.1:{}", slapd.tls_port);
    setup.insert_config(&ldap_config(&setup, &url, &slapd.ca(), ""));
    let config = setup.path("portcullis.toml");
    let check = || {
        crate::util::portcullis(
            &["check", "--config", config.to_str().expect("utf-8")],
            None,
        )
    };
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("ldap {url}: bound as cn=portcullis")),
        "{stdout}"
    );
    std::fs::write(setup.path("ldap-password"), "wrong\n").expect("write");
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the service account's bind"), "{stderr}");
}

/// Issue 23: `check` warns about what silently does nothing: an attribute no entry has
/// (OpenLDAP spells it `departmentNumber`), an htpasswd user who shadows the directory's
/// (whose directory password is then refused, which the log also says at a refusal).
#[test]
fn check_warns_about_unseen_attributes_and_shadowed_users() {
    let slapd = Slapd::start("");
    let setup = Setup::gateway(ACL, &[("carol", "carol-pw"), ("bob", "htpasswd-bob")], "");
    let url = format!("ldaps://127.0.0.1:{}", slapd.tls_port);
    let block = ldap_config(&setup, &url, &slapd.ca(), "")
        .replace("\"departmentNumber\"]", "\"department\"]");
    setup.insert_config(&block);
    let config = setup.path("portcullis.toml");
    let out = crate::util::portcullis(
        &["check", "--config", config.to_str().expect("utf-8")],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "warnings do not fail: {stdout}");
    assert!(
        stdout.contains("no entry under user_base has department"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bob in the htpasswd and in the directory"),
        "{stdout}"
    );
    assert!(!stdout.contains("carol in the htpasswd"), "{stdout}");

    // bob logs in with his directory password: refused, and the log says why.
    let (_registry, log) = (setup.start_plain_registry(), setup.path("portcullis.log"));
    let gateway = setup.start_gateway_logged(&log);
    let head = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        data_encoding::BASE64.encode(b"bob:bob-pw")
    );
    assert_eq!(
        http(gateway.port, &head, b"").0,
        401,
        "the htpasswd's bob is asked"
    );
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("only the htpasswd's password is checked") {
            break;
        }
        assert!(started.elapsed().as_secs() < 5, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A Samba Active Directory domain controller of our own: provisioned into a temp dir
/// (about 3 s, as root), serving LDAPS only on a loopback address of its own (its ports
/// are fixed), with a certificate made here. Stopped when dropped.
struct ActiveDirectory {
    _samba: Daemon,
    address: String,
    dir: tempfile::TempDir,
}

/// The domain's base DN.
const AD_BASE: &str = "DC=example,DC=test";

impl ActiveDirectory {
    fn start() -> ActiveDirectory {
        require("samba");
        require("samba-tool");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // LDAPS is on port 636 whatever we say: a loopback address nobody else uses.
        let address = (10..250u16)
            .map(|n| format!("127.0.{}.{}", std::process::id() % 200 + 20, n))
            .find(|a| std::net::TcpStream::connect((a.as_str(), 636)).is_err())
            .expect("a free loopback address");
        let cert =
            rcgen::generate_simple_self_signed(vec![address.clone()]).expect("a certificate");
        std::fs::write(root.join("ad.crt"), cert.cert.pem()).expect("cert");
        let key = root.join("ad.key");
        std::fs::write(&key, cert.signing_key.serialize_pem()).expect("key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let dc = root.join("dc");
        let r = crate::util::run(
            Command::new("samba-tool")
                .args([
                    "domain",
                    "provision",
                    "--realm=EXAMPLE.TEST",
                    "--domain=EXAMPLE",
                ])
                .args([
                    "--server-role=dc",
                    "--dns-backend=NONE",
                    "--adminpass=Admin-pw1!x",
                ])
                .arg(format!("--targetdir={}", dc.display()))
                .arg(format!("--host-ip={address}"))
                .arg(format!("--option=interfaces={address}/8"))
                .arg("--option=bind interfaces only=yes")
                .arg(format!(
                    "--option=tls certfile={}",
                    root.join("ad.crt").display()
                ))
                .arg(format!("--option=tls keyfile={}", key.display()))
                .arg("--option=tls cafile="),
        );
        assert!(r.ok, "provision: {}", r.text);
        let conf = dc.join("etc/smb.conf");
        let sam = dc.join("private/sam.ldb");
        for command in [
            "user create svc Svc-pw1!xx",
            "user create alice Alice-pw1!x",
            "user create bob Bob-pw1!xx",
            "user create eve Eve-pw1!xxx",
            "user disable eve",
            "group add devs",
            "group add engineering",
            "group addmembers devs alice",
            "group addmembers engineering devs",
        ] {
            let r = crate::util::run(
                Command::new("samba-tool")
                    .args(command.split(' '))
                    .arg("-s")
                    .arg(&conf)
                    .arg("-H")
                    .arg(&sam),
            );
            assert!(r.ok, "samba-tool {command}: {}", r.text);
        }
        let log = std::fs::File::create(root.join("samba.log")).expect("log");
        let mut child = Command::new("samba")
            .args(["-i", "-M", "single", "-s"])
            .arg(&conf)
            .arg("--option=server services=ldap")
            // Its own pid file: the default one in /run/samba is shared by every samba.
            .arg(format!("--option=pid directory={}", root.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("samba runs");
        let probe = address.clone();
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect((probe.as_str(), 636)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "samba exited with {status}: {}",
                    std::fs::read_to_string(root.join("samba.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed().as_secs() < 30,
                "samba did not listen on {probe}:636"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ActiveDirectory {
            _samba: Daemon(child),
            address,
            dir,
        }
    }
}

/// Active Directory's own nested groups: alice is in `devs`, which is in `engineering`;
/// the in-chain matching rule (1.2.840.113556.1.4.1941) finds both in one search. A
/// disabled account cannot log in.
#[test]
fn active_directory_users_log_in_with_their_nested_groups() {
    let ad = ActiveDirectory::start();
    let site = site(true, |setup| {
        std::fs::write(setup.path("ad-password"), "Svc-pw1!xx\n").expect("password file");
        format!(
            r#"
[identity.ldap]
url = "ldaps://{address}"
ca = "{ca}"
bind_dn = "CN=svc,CN=Users,{AD_BASE}"
bind_password_file = "ad-password"
user_base = "CN=Users,{AD_BASE}"
user_filter = "(&(sAMAccountName={{username}})(!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
username_attribute = "sAMAccountName"
member_of_attribute = ""
group_base = "{AD_BASE}"
group_filter = "(member:1.2.840.113556.1.4.1941:={{dn}})"
timeout_seconds = 5
"#,
            address = ad.address,
            ca = ad.dir.path().join("ad.crt").display(),
        )
    });
    let (ok, err) = site.push("alice:Alice-pw1!x", "eng/app:1");
    assert!(
        ok,
        "alice, in engineering through devs, pushes to eng/: {err}"
    );
    let (ok, _) = site.push("bob:Bob-pw1!xx", "eng/app:2");
    assert!(!ok, "bob is in no group");
    let (ok, err) = site.push("bob:Bob-pw1!xx", "bob/own:1");
    assert!(ok, "bob pushes his own: {err}");
    let (status, body) = site.get("eve", "Eve-pw1!xxx", "/v2/eve/x/tags/list");
    assert_eq!(status, 401, "a disabled account: {body}");
    let (status, _) = site.get("alice", "wrong", "/v2/alice/x/tags/list");
    assert_eq!(status, 401);
}

/// Issue 19: an SSO provider may name the directory's people only when it is declared the
/// directory's own (`directory_users`); then the person is the directory's, with its groups,
/// and ends with the entry. Without it, the directory's `alice` is not the provider's to hand
/// out.
#[test]
fn an_sso_provider_signs_in_the_directorys_people_only_when_declared_their_own() {
    use crate::browser::Browser;
    use crate::console::{console_block, explain, sso_block, sso_sign_in, ui};
    let slapd = Slapd::start("");
    let url = format!("ldaps://127.0.0.1:{}", slapd.tls_port);
    for declared in [false, true] {
        let mut provider = None;
        let site = site(true, |setup| {
            let started = crate::oidc::Provider::for_console(&format!(
                "http://127.0.0.1:{}/ui/sso/callback",
                setup.gateway_port
            ));
            let extra = if declared {
                "directory_users = true"
            } else {
                ""
            };
            let block = ldap_config(setup, &url, &slapd.ca(), "cache_seconds = 1")
                + &console_block(setup, true)
                + &sso_block(setup, &started, extra);
            provider = Some(started);
            block
        });
        let provider = provider.expect("a provider");
        let browser = Browser::start(1280, 900);
        sso_sign_in(&browser, &site, &provider, "alice");
        if !declared {
            let error = browser.text(".error").unwrap_or_default();
            assert!(
                error.contains("is a directory user's") && error.contains("directory_users"),
                "{error}"
            );
            browser.goto(&ui(&site, "/ui/repositories"));
            assert!(browser.url().ends_with("/ui/login"), "not signed in");
            continue;
        }
        assert!(
            browser.url().ends_with("/ui/repositories"),
            "{}",
            browser.url()
        );
        assert_eq!(browser.attribute(".who", "title").as_deref(), Some("ldap"));
        explain(&browser, &site, "name=eng/app&action=push");
        assert_eq!(
            browser.text("#verdict h2").as_deref(),
            Some("Granted: push on eng/app"),
            "the directory's groups (engineering, through devs), not the provider's"
        );
        browser.click("form.signout button");
        sso_sign_in(&browser, &site, &provider, "zed");
        let error = browser.text(".error").unwrap_or_default();
        assert!(error.contains("is not in the directory"), "{error}");

        sso_sign_in(&browser, &site, &provider, "alice");
        assert!(browser.url().ends_with("/ui/repositories"));
        slapd.ldif("ldapdelete", "uid=alice,ou=people,dc=example,dc=org\n");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        browser.goto(&ui(&site, "/ui/repositories"));
        assert!(
            browser.url().ends_with("/ui/login"),
            "the session ended with the entry: {}",
            browser.url()
        );
    }
}

/// Issue 23: examples/gateway-ldap works as shipped, against a real OpenLDAP (only the
/// addresses, ports and the module's path are changed): `check` passes, directory users push
/// by their nested groups, their department and their own namespace, and the local admin
/// everywhere.
#[test]
fn the_gateway_ldap_example_works_against_a_real_directory() {
    use crate::util::{free_port, oci_image, push, serve, wasm};
    let slapd = Slapd::start("");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gateway-ldap");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("auth")).expect("auth");
    for file in ["portcullis.toml", "acl.json", "registry.yml", "auth/groups"] {
        std::fs::copy(example.join(file), root.join(file)).expect("copied");
    }
    std::fs::write(root.join("ldap-password"), "service-pw\n").expect("password");
    std::fs::copy(slapd.ca(), root.join("ldap-ca.pem")).expect("ca");
    let bin = |args: &[&str], stdin: Option<&str>| {
        let out = crate::util::portcullis(args, stdin);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let path = |name: &str| root.join(name).to_str().expect("utf-8").to_string();
    let said = bin(&["keygen", "--out", &path("keys")], None);
    assert!(
        said.contains("token-server mode")
            && said.contains("gateway mode: the registry keeps no auth"),
        "keygen says what each mode needs: {said}"
    );
    bin(
        &["passwd", &path("auth/htpasswd"), "admin"],
        Some("admin-pw\n"),
    );
    let (port, admin, registry_port) = (free_port(), free_port(), free_port());
    let config = std::fs::read_to_string(root.join("portcullis.toml"))
        .expect("config")
        .replace("127.0.0.1:5000", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:5002", &format!("127.0.0.1:{registry_port}"))
        .replace(
            "ldaps://ldap.example.org",
            &format!("ldaps://127.0.0.1:{}", slapd.tls_port),
        )
        .replace(
            "../../target/wasm32-unknown-unknown/release/acl.wasm",
            wasm("acl").to_str().expect("utf-8"),
        );
    std::fs::write(root.join("portcullis.toml"), config).expect("config");
    let registry_config = std::fs::read_to_string(root.join("registry.yml"))
        .expect("registry.yml")
        .replace("examples/gateway-ldap/data", &path("data"))
        .replace("127.0.0.1:5002", &format!("127.0.0.1:{registry_port}"));
    std::fs::write(root.join("registry.yml"), registry_config).expect("registry.yml");

    let checked = bin(&["check", "--config", &path("portcullis.toml")], None);
    assert!(checked.contains("bound as cn=portcullis"), "{checked}");
    assert!(
        !checked.contains("warning"),
        "the example is clean: {checked}"
    );
    let _registry = crate::util::registry(
        &root.join("registry.yml"),
        registry_port,
        &[],
        &root.join("registry.log"),
    );
    let _gateway = serve(&root.join("portcullis.toml"), port);
    let image = root.join("image");
    oci_image(&image, b"the example's image");
    let push_as = |creds: &str, reference: &str| push(root, &image, creds, port, reference);
    for (creds, reference, allowed) in [
        ("alice:alice-pw", "eng/app:1", true),
        ("Alice:alice-pw", "platform/tool:1", true),
        ("bob:bob-pw", "bob/own:1", true),
        ("bob:bob-pw", "eng/app:2", false),
        ("admin:admin-pw", "anything/at-all:1", true),
    ] {
        let (ok, err) = push_as(creds, reference);
        assert_eq!(ok, allowed, "{creds} {reference}: {err}");
    }
}
