//! The config contract of design.md: every key, the defaults, and errors that point at the fix.

use super::*;

const DESIGN_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:5001"
public_url = "https://registry.example.com"
trusted_proxies = ["10.0.0.0/8"]

[token]
issuer = "portcullis"
service = "registry.local"
key = "keys/token.key"
certificate = "keys/token.crt"
ttl_seconds = 300
refresh_ttl_seconds = 2592000

[identity]
htpasswd = "auth/htpasswd"
groups = "auth/groups"
anonymous = true

[upstream]
url = "http://127.0.0.1:5000"

[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings_file = "acl.json"

[[policy]]
name = "maintenance"
module = "policies/read_only.wasm"
timeout_ms = 20
memory_mb = 8
"#;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/etc/portcullis")).map_err(|e| match e {
        Problem::Parse(m) | Problem::Invalid(m) => m,
    })
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("should not parse:\n{text}"),
        Err(e) => e,
    }
}

const MINIMAL: &str = r#"
[token]
issuer = "i"
service = "s"
key = "k.pem"
certificate = "c.pem"

[[policy]]
name = "p"
module = "p.wasm"
"#;

#[test]
fn the_design_example_parses_with_paths_relative_to_the_config() {
    let config = parse(DESIGN_EXAMPLE).expect("parses");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:5001");
    assert_eq!(config.server.trusted_proxies[0].to_string(), "10.0.0.0/8");
    assert_eq!(
        config.token.key,
        Path::new("/etc/portcullis/keys/token.key")
    );
    assert_eq!(
        config.identity.groups.as_deref(),
        Some(Path::new("/etc/portcullis/auth/groups"))
    );
    assert!(config.identity.anonymous);
    assert_eq!(
        config.upstream.as_ref().map(|u| u.url.as_str()),
        Some("http://127.0.0.1:5000")
    );
    let with_ca = parse(&format!(
        "{MINIMAL}[upstream]\nurl = \"https://r:5000/\"\nca = \"ca.pem\"\n"
    ))
    .expect("parses");
    assert_eq!(
        with_ca.upstream.and_then(|u| u.ca),
        Some(PathBuf::from("/etc/portcullis/ca.pem"))
    );
    let specs = config.policy_specs();
    assert_eq!(
        specs[0].module,
        ModuleSource::File("/etc/portcullis/policies/acl.wasm".into())
    );
    assert_eq!(
        specs[0].settings,
        SettingsSource::File("/etc/portcullis/acl.json".into())
    );
    assert_eq!(specs[0].limits, Limits::default());
    assert_eq!(specs[1].settings, SettingsSource::Empty);
    assert_eq!(specs[1].limits.timeout, Duration::from_millis(20));
    assert_eq!(specs[1].limits.memory_bytes, 8 << 20);
}

#[test]
fn defaults_are_safe() {
    let config = parse(MINIMAL).expect("parses");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:5001");
    assert!(!config.identity.anonymous, "anonymous access is opt-in");
    assert!(
        config.upstream.is_none(),
        "token-server mode unless [upstream] is set"
    );
    assert_eq!(
        (config.token.ttl_seconds, config.token.refresh_ttl_seconds),
        (300, 2_592_000)
    );
    assert_eq!(
        config.token.embed,
        crate::token::Embed::X5c,
        "what registry 2.x needs"
    );
}

#[test]
fn the_log_section() {
    let config = parse(MINIMAL).expect("parses");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.decisions, None);
    let config = parse(&format!(
        "{MINIMAL}[log]\nformat = \"json\"\ndecisions = \"stdout\"\n"
    ))
    .expect("parses");
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.decisions, Some(PathBuf::from("stdout")));
    let config = parse(&format!("{MINIMAL}[log]\ndecisions = \"d.jsonl\"\n")).expect("parses");
    assert_eq!(
        config.log.decisions,
        Some(PathBuf::from("/etc/portcullis/d.jsonl"))
    );
    let e = error(&format!("{MINIMAL}[log]\nformat = \"xml\"\n"));
    assert!(e.contains("unknown variant `xml`"), "{e}");
}

#[test]
fn absolute_paths_stay_absolute() {
    let config = parse(&MINIMAL.replace("k.pem", "/keys/k.pem")).expect("parses");
    assert_eq!(config.token.key, Path::new("/keys/k.pem"));
}

#[test]
fn inline_settings_reach_the_policy_as_json() {
    let text = format!(
        "{MINIMAL}settings = {{ rules = [{{ match = {{ account = \"admin\" }}, actions = [\"*\"] }}] }}\n"
    );
    let specs = parse(&text).expect("parses").policy_specs();
    assert_eq!(
        specs[0].settings,
        SettingsSource::Inline(
            r#"{"rules":[{"actions":["*"],"match":{"account":"admin"}}]}"#.into()
        )
    );
}

#[test]
fn unknown_keys_name_the_key_and_the_line() {
    let e = error(&MINIMAL.replace("issuer = \"i\"", "issuer = \"i\"\nissuers = \"x\""));
    assert!(e.contains("unknown field `issuers`"), "{e}");
    assert!(e.contains("line 4"), "{e}");
    let e = error(&format!("{MINIMAL}[identity]\nanonymus = true\n"));
    assert!(e.contains("unknown field `anonymus`"), "{e}");
    let e = error(&format!("{MINIMAL}[extra]\n"));
    assert!(e.contains("unknown field `extra`"), "{e}");
}

#[test]
fn mistyped_and_missing_values_are_errors() {
    let e = error(&MINIMAL.replace("[token]", "[server]\nlisten = \"nowhere\"\n[token]"));
    assert!(e.contains("listen") || e.contains("line 3"), "{e}");
    let e = error(&MINIMAL.replace("service = \"s\"\n", ""));
    assert!(e.contains("missing field `service`"), "{e}");
    let e = error(&format!(
        "{MINIMAL}[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n"
    ));
    assert!(e.contains("line"), "{e}");
}

#[test]
fn values_that_do_not_fit_together_say_how_to_fix_them() {
    let cases = [
        (
            MINIMAL.replace("[[policy]]\nname = \"p\"\nmodule = \"p.wasm\"\n", ""),
            "no [[policy]] is configured",
        ),
        (
            format!("{MINIMAL}[server]\ntls_cert = \"c\"\n"),
            "set both or neither",
        ),
        (
            MINIMAL.replace(
                "certificate = \"c.pem\"",
                "certificate = \"c.pem\"\nttl_seconds = 30",
            ),
            "too short",
        ),
        // Issue 12, review item 6: lifetimes were unbounded (an `exp` past what a JWT holds).
        (
            MINIMAL.replace(
                "certificate = \"c.pem\"",
                "certificate = \"c.pem\"\nttl_seconds = 18446744073709551615",
            ),
            "ttl_seconds = 18446744073709551615 is too long: at most 86400",
        ),
        (
            MINIMAL.replace(
                "certificate = \"c.pem\"",
                "certificate = \"c.pem\"\nrefresh_ttl_seconds = 40000000",
            ),
            "refresh_ttl_seconds = 40000000 is too long",
        ),
        (
            MINIMAL.replace(
                "certificate = \"c.pem\"",
                "certificate = \"c.pem\"\nprevious_keys = 17",
            ),
            "previous_keys = 17 is too many: at most 16",
        ),
        (
            MINIMAL.replace(
                "certificate = \"c.pem\"",
                "certificate = \"c.pem\"\nembed = \"jwk\"",
            ),
            "unknown variant `jwk`, expected `x5c` or `kid`",
        ),
        (
            format!(
                "{MINIMAL}[[identity.oidc]]\nissuer = \"http://ci.example\"\naudience = \"r\"\nusername = \"gha:{{repository}}\"\n"
            ),
            "is plain http",
        ),
        (
            format!(
                "{MINIMAL}[[identity.oidc]]\nissuer = \"https://ci.example\"\naudience = \"\"\nusername = \"x\"\n"
            ),
            "audience must not be empty",
        ),
        (
            format!(
                "{MINIMAL}[[identity.oidc]]\nissuer = \"https://ci.example\"\naudience = \"r\"\nusername = \"gha:{{repository\"\n"
            ),
            "unclosed `{`",
        ),
        (
            format!(
                "{MINIMAL}[[identity.oidc]]\nissuer = \"https://ci.example\"\naudience = \"r\"\nusername = \"x\"\n[[identity.oidc]]\nissuer = \"https://ci.example\"\naudience = \"r\"\nusername = \"y\"\n"
            ),
            "the issuer is listed twice",
        ),
        (
            format!("{MINIMAL}[[policy]]\nname = \"p\"\nmodule = \"q.wasm\"\n"),
            "used twice",
        ),
        (
            format!("{MINIMAL}settings_file = \"a.json\"\nsettings = {{}}\n"),
            "not both",
        ),
        (
            format!("{MINIMAL}timeout_ms = 0\n"),
            "timeout_ms must be above 0",
        ),
        (
            format!("{MINIMAL}memory_mb = 4096\n"),
            "memory_mb must be between 1 and 1024",
        ),
        (
            MINIMAL.replace("name = \"p\"", "name = \" \""),
            "name must not be empty",
        ),
        (
            format!("[server]\npublic_url = \"registry.example.com\"\n{MINIMAL}"),
            "public_url = \"registry.example.com\": the scheme must be http:// or https://",
        ),
        (
            format!("[server]\npublic_url = \"https://r.example.com/reg\"\n{MINIMAL}"),
            "registries serve /v2/ at the root",
        ),
        (
            format!("{MINIMAL}[upstream]\nurl = \"ftp://10.0.0.1\"\n"),
            "[upstream] url = \"ftp://10.0.0.1\": the scheme must be",
        ),
        (
            format!("{MINIMAL}[upstream]\nurl = \"http://r:5000/v2/?x=1\"\n"),
            "give the origin only",
        ),
        (
            format!("{MINIMAL}[upstream]\nurl = \"http:// bad\"\n"),
            "not a URL",
        ),
    ];
    for (text, expected) in cases {
        let e = error(&text);
        assert!(e.contains(expected), "{expected}: {e}");
    }
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    let e = Config::load(&path).expect_err("missing file");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read config {}", path.display())),
        "{e}"
    );
    std::fs::write(&path, "[token\n").expect("write");
    let e = Config::load(&path).expect_err("bad toml");
    assert!(
        e.to_string().starts_with(&format!(
            "config {}: TOML parse error at line 1",
            path.display()
        )),
        "{e}"
    );
    std::fs::write(&path, MINIMAL).expect("write");
    let config = Config::load(&path).expect("loads");
    assert_eq!(config.token.key, dir.path().join("k.pem"));
}

/// Issue 23: the switches that send passwords and tokens in clear hold only for loopback.
#[test]
fn clear_text_switches_hold_only_on_loopback() {
    let ldap = |url: &str| {
        format!(
            "{MINIMAL}[identity.ldap]\nurl = \"{url}\"\nbind_dn = \"cn=a\"\nbind_password_file = \"p\"\n\
             user_base = \"dc=x\"\ninsecure_plaintext = true\n"
        )
    };
    assert!(parse(&ldap("ldap://127.0.0.1:3389")).is_ok());
    assert!(parse(&ldap("ldap://localhost")).is_ok());
    assert!(parse(&ldap("ldap://[::1]:389")).is_ok());
    let e = error(&ldap("ldap://dc.example.invalid"));
    assert!(e.contains("only for a directory on loopback"), "{e}");
    let oidc = |issuer: &str| {
        format!(
            "{MINIMAL}[[identity.oidc]]\nissuer = \"{issuer}\"\naudience = \"r\"\n\
             username = \"{{sub}}\"\ninsecure_http = true\n"
        )
    };
    assert!(parse(&oidc("http://127.0.0.1:8080")).is_ok());
    let e = error(&oidc("http://issuer.example.invalid"));
    assert!(e.contains("not loopback"), "{e}");
    assert!(is_loopback("http://127.5.0.1/x") && !is_loopback("http://10.0.0.1/"));
}

/// Issue 22: a policy pulled from a registry names its reference, the keys one of which must
/// have signed it, and where the last verified module is kept.
#[test]
fn a_policy_from_a_registry_needs_signers_and_a_cache() {
    const TOKEN: &str =
        "[token]\nissuer = \"i\"\nservice = \"s\"\nkey = \"k.pem\"\ncertificate = \"c.pem\"\n";
    let with =
        |policy: &str, rest: &str| format!("{TOKEN}{rest}\n[[policy]]\nname = \"acl\"\n{policy}\n");
    let keys = "[signatures]\nkeys = { release = \"release.pub\" }\n[cache]\ndir = \"cache\"\n";
    let good = "oci = \"registry.example.invalid/policies/acl:stable\"\nsigned_by = [\"release\"]";
    let config = parse(&with(good, keys)).expect("parses");
    assert_eq!(
        config.cache.dir.as_deref(),
        Some(Path::new("/etc/portcullis/cache"))
    );
    assert_eq!(config.policies[0].poll_seconds, 30);
    let ModuleSource::Pulled(pulled) = &config.policy_specs()[0].module else {
        panic!("not pulled");
    };
    assert_eq!(
        pulled.reference(),
        "registry.example.invalid/policies/acl:stable"
    );
    for (policy, rest, says) in [
        ("", keys, "set module (a .wasm file) or oci"),
        (
            "module = \"acl.wasm\"\noci = \"r.example.invalid/acl:v1\"\nsigned_by = [\"release\"]",
            keys,
            "either module or oci",
        ),
        (
            "oci = \"r.example.invalid/acl:v1\"",
            keys,
            "signed_by must name at least one key",
        ),
        (
            "oci = \"r.example.invalid/acl:v1\"\nsigned_by = [\"ci\"]",
            keys,
            "\"ci\", which is not in [signatures] keys",
        ),
        (
            "oci = \"r.example.invalid/acl\"\nsigned_by = [\"release\"]",
            keys,
            "name a tag",
        ),
        (
            good,
            "[signatures]\nkeys = { release = \"release.pub\" }\n",
            "oci needs [cache] dir",
        ),
        (
            "module = \"acl.wasm\"\nsigned_by = [\"release\"]",
            keys,
            "signed_by is for a module pulled with oci",
        ),
        (
            &format!("{good}\npoll_seconds = 0"),
            keys,
            "poll_seconds must be above 0",
        ),
    ] {
        let e = error(&with(policy, rest));
        assert!(e.contains(says), "{policy}: {e}");
        assert!(e.contains("[[policy]] #1 (`acl`)"), "{e}");
    }
    let login = "[registries.\"r.example.invalid\"]\nusername = \"u\"\npassword_file = \"pw\"\n";
    let config = parse(&with(good, &format!("{keys}{login}"))).expect("parses");
    assert_eq!(
        config.registries["r.example.invalid"].password_file,
        Path::new("/etc/portcullis/pw")
    );
}
