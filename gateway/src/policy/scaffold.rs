//! `portcullis policy new`: a policy crate that builds outside this repository with one
//! command: the SDK by version (or by path, for an unpublished checkout), the wasm target's
//! linker in its own `.cargo/config.toml`, a small policy with settings and native tests.

use std::path::{Path, PathBuf};

/// Why a crate could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a crate's.
    #[error(
        "{0:?} is not a policy name: lowercase letters, digits and `-`, starting with a letter"
    )]
    Name(String),
    /// The directory is there already: nothing is overwritten.
    #[error("{0} exists already: choose another name or --dir")]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// The SDK's version, what a new crate depends on unless given a path.
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes the crate `name` into `dir/name`, depending on the SDK at `sdk` when given (a
/// checkout) or by version; returns the crate's directory.
pub fn new_policy(name: &str, dir: &Path, sdk: Option<&Path>) -> Result<PathBuf, ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64;
    if !valid {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let sdk = match sdk {
        Some(path) => format!("{{ path = {:?} }}", path.display().to_string()),
        None => format!("\"{SDK_VERSION}\""),
    };
    let module = name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        ("src/lib.rs", LIB_RS.to_string()),
        ("settings.json", SETTINGS.to_string()),
        ("fixtures.toml", fixtures(&module)),
        ("README.md", readme(name, &module)),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        let path = root.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ScaffoldError::Write(path.clone(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| ScaffoldError::Write(path.clone(), e))?;
    }
    Ok(root)
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A component for Portcullis (cdylib) and a library for the native tests (rlib).
[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
portcullis-policy = {sdk}
serde = {{ version = "1", features = ["derive"] }}

# Built on its own, even inside another workspace's directory.
[workspace]

[profile.release]
opt-level = "s"
"#
    )
}

/// The target's linker: shipped with the Rust toolchain, it links the core module and wraps
/// it into a component.
const CARGO_CONFIG: &str = r#"[target.wasm32-unknown-unknown]
linker = "wasm-component-ld"

[alias]
# cargo wasm: the component Portcullis loads, in target/wasm32-unknown-unknown/release/.
wasm = "build --release --target wasm32-unknown-unknown"
"#;

const SETTINGS: &str = r#"{"pushers": ["ci"], "protected": ["prod/**"]}
"#;

/// Cases `portcullis policy test fixtures.toml` runs against the built module, as served.
fn fixtures(module: &str) -> String {
    format!(
        r#"# portcullis policy test fixtures.toml: each case through the built module, as served.
[[policy]]
name = "{module}"
module = "target/wasm32-unknown-unknown/release/{module}.wasm"
settings_file = "settings.json"

[[case]]
name = "a pusher pushes"
account = "ci"
scope = "repository:team/app:pull,push"
granted = ["pull", "push"]
reason = "a pusher"

[[case]]
name = "a protected repository is pulled only"
account = "ci"
scope = "repository:prod/app:pull,push"
granted = ["pull"]
denied_by = "{module}"

[[case]]
name = "anonymous requests get nothing"
scope = "repository:team/app:pull"
granted = []
reason = "log in first"
"#
    )
}

fn readme(name: &str, module: &str) -> String {
    format!(
        "# {name}\n\nA Portcullis policy. Once: `rustup target add wasm32-unknown-unknown`.\n\
         Test: `cargo test`. Build: `cargo wasm` (target/wasm32-unknown-unknown/release/{module}.wasm).\n\
         Check the built module against fixtures.toml: `portcullis policy test fixtures.toml`.\n\
         Try it: `portcullis policy eval target/wasm32-unknown-unknown/release/{module}.wasm --settings settings.json --account ci --scope repository:team/app:pull,push`.\n\
         Serve it: a `[[policy]]` block with `module` and `settings_file` (docs/policies.md).\n"
    )
}

const LIB_RS: &str = r##"//! A Portcullis policy: everyone who is logged in may pull; the accounts in `pushers` may
//! also push, except to the `protected` repositories. Edit `authorize` to make it yours.

use portcullis_policy::{Decision, Policy, Request, export_policy};
use serde::Deserialize;

/// The settings, from the `[[policy]]` block's `settings` or `settings_file` (JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Accounts that may push.
    pushers: Vec<String>,
    /// Repositories nobody pushes to: exact names, or a prefix ending in `/**`.
    #[serde(default)]
    protected: Vec<String>,
}

/// The configured policy.
pub struct Pushers {
    settings: Settings,
}

impl Policy for Pushers {
    type Settings = Settings;

    /// Called once when the module loads: a bad setting fails the load, not a request.
    fn configure(settings: Settings) -> Result<Self, String> {
        if settings.pushers.iter().any(String::is_empty) {
            return Err("`pushers` holds an empty name".into());
        }
        Ok(Pushers { settings })
    }

    fn authorize(&self, request: &Request) -> Decision {
        if request.account.is_anonymous() {
            return Decision::deny("log in first");
        }
        let name = &request.scope.name;
        let protected = self.settings.protected.iter().any(|p| match p.strip_suffix("/**") {
            Some(prefix) => name.starts_with(&format!("{prefix}/")),
            None => name == p,
        });
        if self.settings.pushers.contains(&request.account.name) && !protected {
            request.grant(["pull", "push"]).because("a pusher")
        } else {
            request.grant(["pull"]).because("everyone pulls")
        }
    }
}

export_policy!(Pushers);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::Scope;

    fn policy() -> Pushers {
        let settings = r#"{"pushers": ["ci"], "protected": ["prod/**"]}"#;
        portcullis_policy::__private::configure::<Pushers>(settings).expect("the settings load")
    }

    fn asks(account: &str, name: &str) -> Vec<String> {
        let request = Request::new(Scope::repository(name, ["pull", "push"])).account(account);
        policy().authorize(&request).granted
    }

    #[test]
    fn pushers_push_and_everyone_pulls() {
        assert_eq!(asks("ci", "team/app"), ["pull", "push"]);
        assert_eq!(asks("alice", "team/app"), ["pull"]);
    }

    #[test]
    fn protected_repositories_are_pulled_only() {
        assert_eq!(asks("ci", "prod/app"), ["pull"]);
    }

    #[test]
    fn anonymous_requests_get_nothing() {
        let request = Request::new(Scope::repository("team/app", ["pull"]));
        assert!(policy().authorize(&request).granted.is_empty());
    }
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_names_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["", "My-Policy", "1policy", "a b", "a/../b", "a_b"] {
            assert!(
                matches!(
                    new_policy(bad, dir.path(), None),
                    Err(ScaffoldError::Name(_))
                ),
                "{bad:?}"
            );
        }
        let root = new_policy("team-rules", dir.path(), None).expect("written");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains(&format!("portcullis-policy = \"{SDK_VERSION}\"")));
        assert!(matches!(
            new_policy("team-rules", dir.path(), None),
            Err(ScaffoldError::Exists(_))
        ));
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
        assert!(readme.contains("team_rules.wasm"), "{readme}");
    }
}
