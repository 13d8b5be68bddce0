//! Workload identity end to end: a real OpenID provider (npm's oidc-provider, started on a
//! loopback port) issues JWTs with CI-style claims; a workload logs in with its JWT as the
//! password (skopeo, in both modes), or exchanges it for a registry token (RFC 8693), and
//! the policies decide by the account and groups made from its claims. Every bad token is
//! refused with a reason and nothing is remembered.

use crate::util::{Daemon, SERVICE, Setup, Site, free_port, header, http, jwt_payload, require};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// A workload of the `acme` organisation pushes to its own repository, by the claims of its
/// token (world 0.2.0); anything else is refused.
const ACL: &str = r#"{"rules": [
  {"match": {"claims": {"repository_owner": "acme"}, "name": "${claim:repository}"}, "actions": ["pull", "push"], "comment": "a job pushes its own repository"},
  {"match": {"account": "alice"}, "actions": ["*"]}
]}"#;

const USERS: &[(&str, &str)] = &[("alice", "alice-pw")];

/// The provider, stopped when dropped.
pub struct Provider {
    node: Daemon,
    port: u16,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Provider {
    pub fn start() -> Provider {
        Provider::start_with(None)
    }

    /// A provider that also signs people in to a console whose SSO callback is `redirect`.
    pub fn for_console(redirect: &str) -> Provider {
        Provider::start_with(Some(redirect))
    }

    fn start_with(console_redirect: Option<&str>) -> Provider {
        require("node");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc/provider.mjs");
        assert!(
            script.with_file_name("node_modules").exists(),
            "run `npm ci --prefix tests/oidc` (scripts/test.sh does) first"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("provider.pem");
        let port = free_port();
        let mut child = Command::new("node")
            .arg(&script)
            .arg(port.to_string())
            .arg(&key)
            .args(console_redirect)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("the listening line");
        assert!(line.starts_with("oidc provider listening"), "{line:?}");
        // It goes on writing (notices of its development pages): read them, or a write to
        // a closed pipe kills it.
        std::thread::spawn(move || stdout.lines().for_each(drop));
        Provider {
            node: Daemon(child),
            port,
            key,
            _dir: dir,
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The provider forgets `account` (they left): their refresh tokens stop working.
    pub fn forget(&self, account: &str) {
        let head = format!(
            "GET /forget?account={account} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(http(self.port, &head, b"").0, 200);
    }

    /// A token from the provider's own token endpoint, with these claims.
    pub fn token(&self, claims: &[(&str, &str)]) -> String {
        let body: String = claims.iter().map(|(k, v)| format!("&{k}={v}")).collect();
        let body = format!("grant_type=client_credentials{body}");
        let head = format!(
            "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data_encoding::BASE64.encode(b"ci:ci-secret"),
            body.len()
        );
        let (status, head, body) = http(self.port, &head, body.as_bytes());
        assert_eq!(status, 200, "{head}");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        json["access_token"].as_str().expect("a token").to_string()
    }

    /// A token signed with the provider's own key that it would not issue itself.
    fn forge(&self, claims: serde_json::Value) -> String {
        self.forge_as("provider-key-1", claims)
    }

    /// As [`Provider::forge`], naming the key `kid`.
    fn forge_as(&self, kid: &str, claims: serde_json::Value) -> String {
        let pem = std::fs::read(&self.key).expect("the provider's key");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(&pem).expect("an RSA key"),
        )
        .expect("signs")
    }

    /// How often the provider was asked for (`jwks`, `discovery`, `token`).
    pub fn fetches(&self, what: &str) -> u64 {
        let (_, _, body) = http(
            self.port,
            "GET /fetches HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"",
        );
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")[what]
            .as_u64()
            .expect("a count")
    }

    /// Later fetches of the provider's keys take `seconds`.
    fn slow_keys(&self, seconds: u64) {
        let head = format!(
            "GET /slow-jwks?seconds={seconds} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(http(self.port, &head, b"").0, 200);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The `[[identity.oidc]]` block for the provider, GitHub-style.
fn oidc_config(provider: &Provider, require_owner: &str) -> String {
    issuer_block(
        provider,
        "gha:{repository}",
        &format!("repository_owner = \"{require_owner}\""),
    )
    .replace(
        "insecure_http",
        "groups = [\"{repository_owner}\"]\ninsecure_http",
    )
}

/// An `[[identity.oidc]]` block for the provider with this username template and the
/// `require` table's inside.
pub(crate) fn issuer_block(provider: &Provider, username: &str, require: &str) -> String {
    format!(
        r#"
[[identity.oidc]]
issuer = "{issuer}"
audience = "{SERVICE}"
username = "{username}"
require = {{ {require} }}
insecure_http = true
"#,
        issuer = provider.issuer()
    )
}

fn site(provider: &Provider, gateway_mode: bool) -> Site {
    let setup = if gateway_mode {
        Setup::gateway(ACL, USERS, "[log]\ndecisions = \"decisions.jsonl\"\n")
    } else {
        Setup::new(ACL, USERS)
    };
    setup.insert_config(&oidc_config(provider, "acme"));
    Site::start(setup, gateway_mode, b"a workload's image")
}

fn push_as(site: &Site, token: &str, reference: &str) -> (bool, String) {
    site.push(&format!("ci:{token}"), reference)
}

#[test]
fn a_workload_pushes_with_its_jwt_as_the_password_in_both_modes() {
    let provider = Provider::start();
    for gateway_mode in [false, true] {
        let site = site(&provider, gateway_mode);
        let mode = if gateway_mode {
            "gateway"
        } else {
            "token-server"
        };
        let app = provider.token(&[("repository", "acme/app"), ("repository_owner", "acme")]);
        let (ok, err) = push_as(&site, &app, "acme/app:1");
        assert!(ok, "{mode}: acme/app's workload pushes to acme/: {err}");
        let (ok, _) = push_as(&site, &app, "acme/lib:1");
        assert!(
            !ok,
            "{mode}: but not another repository: denials follow the claims"
        );
        // Another organisation's workload is refused by `require`, whatever it asks.
        let evil = provider.token(&[("repository", "evil/app"), ("repository_owner", "evil")]);
        let (ok, err) = push_as(&site, &evil, "acme/app:2");
        assert!(!ok, "{mode}: evil's workload pushed");
        assert!(
            err.contains("401") || err.contains("unauthorized"),
            "{mode}: {err}"
        );
        // The htpasswd still works beside it.
        let (ok, err) = site.push("alice:alice-pw", "alice/x:1");
        assert!(ok, "{mode}: alice: {err}");
    }
}

/// A POST to the gateway's /token; (status, JSON body).
fn token_request(port: u16, form: &str) -> (u16, serde_json::Value) {
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        form.len()
    );
    let (status, _, body) = http(port, &head, form.as_bytes());
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn a_workload_token_is_exchanged_for_a_registry_token_decided_per_scope() {
    let provider = Provider::start();
    let site = site(&provider, true);
    let gateway = site.setup.gateway_port;
    let jwt = provider.token(&[("repository", "acme/app"), ("repository_owner", "acme")]);
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&subject_token={jwt}&service={SERVICE}&scope=repository:acme/app:pull,push&scope=repository:other/app:pull"
    );
    let (status, body) = token_request(gateway, &form);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body.get("refresh_token").is_none(),
        "a workload gets no refresh token"
    );
    let token = body["access_token"].as_str().expect("a token");
    let claims = jwt_payload(token);
    assert_eq!(claims["sub"], "gha:acme/app");
    assert_eq!(claims["src"], provider.issuer());
    assert_eq!(
        claims["access"],
        serde_json::json!([
            {"type": "repository", "name": "acme/app", "actions": ["pull", "push"]},
            {"type": "repository", "name": "other/app", "actions": []},
        ])
    );
    // The workload JWT never reaches the registry: the gateway takes our token instead.
    let (status, head, _) = http(
        gateway,
        &format!(
            "GET /v2/acme/app/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
        b"",
    );
    assert!(status == 404 || status == 200, "{head}");
    let (status, head, _) = http(
        gateway,
        &format!(
            "GET /v2/acme/app/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt}\r\nConnection: close\r\n\r\n"
        ),
        b"",
    );
    assert_eq!(
        status, 401,
        "the workload's own JWT is no registry token: {head}"
    );
    assert!(header(&head, "www-authenticate").is_some_and(|c| c.contains("invalid_token")));
    // The decision log names where the account came from and the claims the policies saw,
    // never the token.
    let started = std::time::Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(site.setup.path("decisions.jsonl")).unwrap_or_default();
        if log.contains("gha:acme/app") || started.elapsed().as_secs() > 5 {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let line: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|d| d["account"] == "gha:acme/app")
        .expect("a decision for the workload");
    assert_eq!(line["account_source"], provider.issuer());
    assert!(
        line["claims"]
            .as_array()
            .expect("claims")
            .contains(&serde_json::json!(["repository_owner", "acme"])),
        "{line}"
    );
    let signature = jwt.rsplit('.').next().expect("a signature");
    assert!(
        !log.contains(signature),
        "the token reached the decision log"
    );
}

#[test]
fn bad_workload_tokens_are_refused_with_a_reason_and_never_remembered() {
    let provider = Provider::start();
    let site = site(&provider, true);
    let gateway = site.setup.gateway_port;
    let issuer = provider.issuer();
    let good = |extra: serde_json::Value| {
        let mut claims = serde_json::json!({
            "iss": issuer, "aud": SERVICE, "sub": "ci", "iat": now(), "exp": now() + 300,
            "repository": "acme/app", "repository_owner": "acme",
        });
        // `null` takes a claim out.
        for (k, v) in extra.as_object().expect("an object") {
            match v {
                serde_json::Value::Null => {
                    claims.as_object_mut().expect("an object").remove(k);
                }
                v => claims[k] = v.clone(),
            }
        }
        claims
    };
    let basic = |token: &str| {
        let head = format!(
            "GET /v2/acme/app/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            data_encoding::BASE64.encode(format!("ci:{token}").as_bytes())
        );
        let (status, _, body) = http(gateway, &head, b"");
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    // A token the provider itself signed, well formed: accepted (the registry has no tags).
    let (status, body) = basic(&provider.forge(good(serde_json::json!({}))));
    assert!(status == 404 || status == 200, "{status}: {body}");
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good(serde_json::json!({})),
        &EncodingKey::from_secret(b"anyone's secret"),
    )
    .expect("signs");
    let none = format!(
        "{}.{}.",
        data_encoding::BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        data_encoding::BASE64URL_NOPAD.encode(good(serde_json::json!({})).to_string().as_bytes())
    );
    let huge = provider.forge(good(serde_json::json!({"padding": "x".repeat(20_000)})));
    let cases = [
        (
            "expired",
            provider.forge(good(
                serde_json::json!({"iat": now() - 7200, "exp": now() - 3600}),
            )),
            "ExpiredSignature",
        ),
        (
            "not yet valid",
            provider.forge(good(serde_json::json!({"nbf": now() + 3600}))),
            "ImmatureSignature",
        ),
        (
            "another audience",
            provider.forge(good(serde_json::json!({"aud": "elsewhere"}))),
            "InvalidAudience",
        ),
        (
            "issued in the future",
            provider.forge(good(
                serde_json::json!({"iat": now() + 3600, "exp": now() + 7200}),
            )),
            "in the future",
        ),
        (
            "too old",
            provider.forge(good(serde_json::json!({"iat": now() - 2 * 86_400}))),
            "issued more than",
        ),
        ("HS256", hs256, "only asymmetric"),
        ("alg none", none, "unreadable token"),
        ("huge", huge, "is not a workload token"),
        (
            "missing claim",
            provider.forge(good(serde_json::json!({"repository": null}))),
            "no `repository` claim",
        ),
        (
            "another owner",
            provider.forge(good(serde_json::json!({"repository_owner": "evil"}))),
            "does not match",
        ),
    ];
    for (what, token, reason) in cases {
        let (status, body) = basic(&token);
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.contains(reason), "{what}: {body}");
    }
    // A token of another issuer is no OIDC login: a wrong password, nothing more.
    let (status, body) = basic(&provider.forge(good(
        serde_json::json!({"iss": "https://elsewhere.example"}),
    )));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid username or password"), "{body}");

    // Keys the issuer does not list: fetched again at most every 10 s, however many come.
    let stranger = stranger_key();
    let before = provider.fetches("jwks");
    for i in 0..20 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("unknown-{i}"));
        let token =
            jsonwebtoken::encode(&header, &good(serde_json::json!({})), &stranger).expect("signs");
        let (status, body) = basic(&token);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("does not list"), "{body}");
    }
    assert!(
        provider.fetches("jwks") - before <= 1,
        "a flood of kids fetched the keys again and again"
    );

    // Replayed after the required claim changed: the same token is refused at once.
    let token = provider.token(&[("repository", "acme/app"), ("repository_owner", "acme")]);
    assert!(matches!(basic(&token).0, 200 | 404));
    let config = site.setup.path("portcullis.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let tmp = site.setup.path("portcullis.toml.new");
    std::fs::write(
        &tmp,
        text.replace(
            "repository_owner = \"acme\"",
            "repository_owner = \"acme-corp\"",
        ),
    )
    .expect("write");
    std::fs::rename(&tmp, &config).expect("rename");
    let refused = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        basic(&token).0 == 401
    });
    assert!(refused, "the remembered token kept its old admission");
}

/// An RSA key of nobody's issuer, for tokens signed by a key the provider does not list.
fn stranger_key() -> EncodingKey {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("stranger.pem");
    let out = Command::new("node")
        .args([
            "-e",
            "const {generateKeyPairSync}=require('node:crypto');const fs=require('node:fs');\
             const {privateKey}=generateKeyPairSync('rsa',{modulusLength:2048});\
             fs.writeFileSync(process.argv[1],privateKey.export({format:'pem',type:'pkcs8'}));",
        ])
        .arg(&key)
        .output()
        .expect("node runs");
    assert!(out.status.success(), "{out:?}");
    EncodingKey::from_rsa_pem(&std::fs::read(&key).expect("key")).expect("an RSA key")
}

#[test]
fn an_issuer_that_goes_away_keeps_serving_its_last_keys_and_one_never_reached_fails_closed() {
    let mut provider = Provider::start();
    let site = site(&provider, true);
    let gateway = site.setup.gateway_port;
    let token = provider.token(&[("repository", "acme/app"), ("repository_owner", "acme")]);
    let later = provider.token(&[
        ("repository", "acme/app"),
        ("repository_owner", "acme"),
        ("ref", "refs/heads/later"),
    ]);
    let tags = |token: &str| {
        let head = format!(
            "GET /v2/acme/app/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            data_encoding::BASE64.encode(format!("ci:{token}").as_bytes())
        );
        let (status, head, body) = http(gateway, &head, b"");
        (status, head, String::from_utf8_lossy(&body).into_owned())
    };
    assert!(matches!(tags(&token).0, 200 | 404));
    // The provider goes away: its keys were fetched, so its other tokens still verify.
    let _ = provider.node.0.kill();
    let _ = provider.node.0.wait();
    let (status, _, body) = tags(&later);
    assert!(matches!(status, 200 | 404), "{status}: {body}");

    // An issuer whose keys were never fetched, down from the start: refused, as a 503 that
    // does not call anyone's password wrong.
    let gone = Provider::start();
    let site = self::site(&gone, true);
    let token = gone.token(&[("repository", "acme/app"), ("repository_owner", "acme")]);
    drop(gone);
    let head = format!(
        "GET /v2/acme/app/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        data_encoding::BASE64.encode(format!("ci:{token}").as_bytes())
    );
    let (status, head, body) = http(site.setup.gateway_port, &head, b"");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{head}{body}");
    assert!(
        body.contains("identity provider cannot be reached"),
        "{body}"
    );
    assert!(!body.contains("password"), "{body}");
}

#[test]
fn check_asks_each_issuer_and_says_what_fails() {
    let provider = Provider::start();
    let setup = Setup::gateway(ACL, USERS, "");
    setup.insert_config(&oidc_config(&provider, "acme"));
    let config = setup.path("portcullis.toml");
    let out = crate::util::portcullis(
        &["check", "--config", config.to_str().expect("utf-8")],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "oidc issuer {}: 1 signing key(s)",
            provider.issuer()
        )),
        "{stdout}"
    );
    let issuer = provider.issuer();
    drop(provider);
    let out = crate::util::portcullis(
        &["check", "--config", config.to_str().expect("utf-8")],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "oidc issuer {issuer}: {issuer}/.well-known/openid-configuration"
        )),
        "{stderr}"
    );
    // Issue 23: the cause and what it means, not only "client error (Connect)"; and a
    // one-shot check does not speak of keys that "stay".
    assert!(
        stderr.contains("Connection refused") && stderr.contains("nothing listens"),
        "{stderr}"
    );
    assert!(!stderr.contains("the last good ones stay"), "{stderr}");
}

#[test]
fn a_kubernetes_style_workload_is_named_from_nested_claims() {
    let provider = Provider::start();
    let acl = r#"{"rules": [
      {"match": {"account": "k8s:ci/*", "name": "ci/**"}, "actions": ["pull", "push"]}
    ]}"#;
    let setup = Setup::gateway(acl, USERS, "");
    setup.insert_config(&issuer_block(
        &provider,
        "k8s:{kubernetes.io/namespace}/{kubernetes.io/serviceaccount/name}",
        "\"kubernetes.io/namespace\" = \"ci\"",
    ));
    let site = Site::start(setup, true, b"a pod's image");
    let pod = |namespace: &str| {
        provider.token(&[("namespace", namespace), ("serviceaccount", "builder")])
    };
    let (ok, err) = site.push(&format!("pod:{}", pod("ci")), "ci/tool:1");
    assert!(ok, "the ci namespace's builder pushes: {err}");
    let (ok, _) = site.push(&format!("pod:{}", pod("default")), "ci/tool:2");
    assert!(!ok, "another namespace's pod is refused by require");
}

/// Issue 19: a token naming a key the issuer does not list makes Portcullis fetch the keys
/// again; while that fetch waits on an issuer in trouble, logins with known keys go on.
#[test]
fn a_token_of_an_unknown_key_does_not_hold_up_logins_with_known_keys() {
    let provider = Provider::start();
    let site = site(&provider, true);
    let job = || provider.token(&[("repository", "acme/app"), ("repository_owner", "acme")]);
    let (ok, err) = push_as(&site, &job(), "acme/app:1");
    assert!(ok, "the keys are fetched: {err}");
    // Keys are fetched again at most every 10 s: wait that out, then the issuer slows down.
    std::thread::sleep(std::time::Duration::from_secs(10));
    provider.slow_keys(6);
    let unknown = provider.forge_as(
        "a-key-nobody-lists",
        serde_json::json!({
            "iss": provider.issuer(), "aud": SERVICE, "sub": "ci", "iat": now(),
            "exp": now() + 300, "repository": "acme/app", "repository_owner": "acme",
        }),
    );
    let port = site.setup.gateway_port;
    let path = "/v2/acme/app/tags/list";
    let refetch = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let (status, _, _) = http(
            port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
                data_encoding::BASE64.encode(format!("ci:{unknown}").as_bytes())
            ),
            b"",
        );
        (status, started.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A fresh token (never remembered) of the known key, while the fetch hangs.
    let fresh = job();
    let started = std::time::Instant::now();
    let (status, body) = site.get("ci", &fresh, path);
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        took < std::time::Duration::from_secs(3),
        "a login with a known key waited {took:?} for the fetch of the keys"
    );
    let (status, waited) = refetch.join().expect("the unknown key's request");
    assert_eq!(status, 401, "the unknown key is refused");
    assert!(
        waited >= std::time::Duration::from_secs(5),
        "it did wait: {waited:?}"
    );
    eprintln!("known key: {took:?} while the unknown key's fetch took {waited:?}");
}

/// Issue 23: a refused login leaves a trace an operator can act on: the source, the account
/// or subject, the client and the reason, at info, never a secret, and a flood of them
/// bounded.
#[test]
fn refused_logins_are_logged_with_their_reason_and_bounded() {
    let provider = Provider::start();
    let setup = Setup::gateway(ACL, USERS, "");
    setup.insert_config(&oidc_config(&provider, "acme"));
    let _registry = setup.start_plain_registry();
    let log = setup.path("portcullis.log");
    let gateway = setup.start_gateway_logged(&log);
    let get = |user: &str, password: &str| {
        let head = format!(
            "GET /v2/acme/app/tags/list HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes())
        );
        http(gateway.port, &head, b"").0
    };
    let evil = provider.token(&[("repository", "evil/app"), ("repository_owner", "evil")]);
    assert_eq!(get("ci", &evil), 401);
    assert_eq!(get("alice", "not-her-password"), 401);
    let lines = || {
        std::fs::read_to_string(&log)
            .expect("the log")
            .lines()
            .filter(|l| l.contains("login refused"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    while lines().len() < 2 && started.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let seen = lines();
    let workload = seen
        .iter()
        .find(|l| l.contains("source=\"oidc\"") || l.contains("source=oidc"))
        .unwrap_or_else(|| panic!("no workload refusal in {seen:?}"));
    assert!(
        workload.contains("repository_owner") && workload.contains("client=127.0.0.1"),
        "{workload}"
    );
    let password = seen
        .iter()
        .find(|l| l.contains("account=alice"))
        .unwrap_or_else(|| panic!("no password refusal in {seen:?}"));
    assert!(
        password.contains("invalid username or password"),
        "{password}"
    );
    let text = std::fs::read_to_string(&log).expect("the log");
    let signature = evil.rsplit('.').next().expect("a signature");
    assert!(!text.contains(signature) && !text.contains("not-her-password"));

    // A flood from many names: at most 60 lines a minute, the rest counted.
    for n in 0..100 {
        get(&format!("guesser{n}"), "x");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let flood = lines().len();
    assert!(flood <= 60, "{flood} lines in a minute");
}

/// Issue 23: `portcullis identity test` shows what a workload token becomes without a
/// registry: the account, groups and claims, each `require` with its value, and why not.
#[test]
fn identity_test_shows_what_a_workload_token_becomes() {
    let provider = Provider::start();
    let setup = Setup::gateway(ACL, USERS, "");
    setup.insert_config(&oidc_config(&provider, "acme"));
    let config = setup.path("portcullis.toml");
    let run = |args: &[&str]| {
        let mut all = vec![
            "identity",
            "test",
            "--config",
            config.to_str().expect("utf-8"),
        ];
        all.extend_from_slice(args);
        let out = crate::util::portcullis(&all, None);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), json)
    };
    let write = |name: &str, text: &str| {
        let path = setup.path(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_string()
    };
    let good = write(
        "good.jwt",
        &provider.token(&[("repository", "acme/app"), ("repository_owner", "acme")]),
    );
    let (ok, json) = run(&["--jwt", &good]);
    assert!(ok, "{json}");
    assert_eq!(json["verified"], true);
    assert_eq!(json["account"], "gha:acme/app");
    assert_eq!(json["groups"], serde_json::json!(["acme"]));
    assert_eq!(json["require"][0]["met"], true, "{json}");

    let evil = write(
        "evil.jwt",
        &provider.token(&[("repository", "evil/app"), ("repository_owner", "evil")]),
    );
    let (ok, json) = run(&["--jwt", &evil]);
    assert!(!ok);
    assert_eq!(
        json["require"][0],
        serde_json::json!({"claim": "repository_owner", "pattern": "acme", "value": "evil", "met": false})
    );
    assert!(
        json["refused"]
            .as_str()
            .is_some_and(|r| r.contains("repository_owner")),
        "{json}"
    );

    // Claims alone, no signature: what a template would make of them.
    let claims = write(
        "claims.json",
        r#"{"repository": "acme/lib", "repository_owner": "acme"}"#,
    );
    let (ok, json) = run(&["--claims", &claims, "--issuer", &provider.issuer()]);
    assert!(ok, "{json}");
    assert_eq!(
        (json["verified"].clone(), json["account"].clone()),
        (false.into(), "gha:acme/lib".into())
    );
}
