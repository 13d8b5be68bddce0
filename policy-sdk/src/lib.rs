//! Write Portcullis authorization policies in Rust and compile them to WebAssembly.
//!
//! A policy decides which of the actions asked on a registry resource (`pull`, `push`,
//! `delete`, ...) one account gets. It is a type that implements [`Policy`]: built once
//! from its settings (JSON from the gateway's config, parsed into your own serde type),
//! then asked to [`authorize`](Policy::authorize) many requests. [`export_policy!`] turns
//! it into a component the gateway loads.
//!
//! ```
//! use portcullis_policy::{export_policy, Decision, Policy, Request, Scope};
//! use serde::Deserialize;
//!
//! /// Everyone may pull; only the listed accounts may push.
//! struct Pushers { accounts: Vec<String> }
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings { pushers: Vec<String> }
//!
//! impl Policy for Pushers {
//!     type Settings = Settings;
//!
//!     fn configure(settings: Settings) -> Result<Self, String> {
//!         if settings.pushers.is_empty() {
//!             return Err("`pushers` must name at least one account".into());
//!         }
//!         Ok(Pushers { accounts: settings.pushers })
//!     }
//!
//!     fn authorize(&self, request: &Request) -> Decision {
//!         if self.accounts.contains(&request.account.name) {
//!             request.grant(["pull", "push"])
//!         } else {
//!             request.grant(["pull"])
//!         }
//!     }
//! }
//!
//! export_policy!(Pushers);
//!
//! // The logic is plain Rust: test it natively with the request builders.
//! let policy = Pushers::configure(Settings { pushers: vec!["ci".into()] }).unwrap();
//! let push = Scope::repository("apps/web", ["pull", "push"]);
//! assert_eq!(policy.authorize(&Request::new(push.clone()).account("ci")).granted, ["pull", "push"]);
//! assert_eq!(policy.authorize(&Request::new(push).account("dev")).granted, ["pull"]);
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` (the workspace's
//! `cargo policies` alias), the linker set to the toolchain's `wasm-component-ld`, and point a
//! `[[policy]]` entry of the gateway's config at the `.wasm` file. The component imports
//! nothing: a policy cannot read files, clocks or the network.
//!
//! A panic, an endless loop or running out of memory inside a policy never grants anything:
//! the gateway denies the request and reports the fault with the policy's name.

#![deny(missing_docs)]

// The generated bindings name this crate by path, from inside it and from policy crates alike.
extern crate self as portcullis_policy;

pub mod glob;
mod request;

pub use request::{
    Account, Decision, Facts, Kind, Needs, Operation, Reference, Request, Scope, Signatures, TagNow,
};

/// The policy world this SDK builds against, as its WIT package names it: the gateway
/// loads modules of this world and of every earlier one it still knows.
///
/// ```
/// assert!(portcullis_policy::WORLD.starts_with("portcullis:policy@"));
/// ```
pub const WORLD: &str = "portcullis:policy@0.3.0";

// The README's example is compiled and run with the documentation's.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeExample;

/// The bindings generated from `wit/policy.wit`, used by [`export_policy!`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "wit",
        default_bindings_module: "portcullis_policy::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        runtime_path: "portcullis_policy::__private::wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
        bitflags_path: "portcullis_policy::__private::wit_bindgen::rt::bitflags",
    });
}

/// An authorization policy.
///
/// The gateway creates the policy once per instance with [`configure`](Policy::configure)
/// and then calls [`authorize`](Policy::authorize) for every access request, possibly many
/// thousands of times on the same value: precompute in `configure` what you can.
pub trait Policy: Sized + 'static {
    /// The settings the policy takes, deserialized from the JSON in the gateway's config.
    /// `#[serde(deny_unknown_fields)]` is recommended: a misspelt key then fails the load
    /// instead of being silently ignored. Policies without settings use [`NoSettings`].
    type Settings: serde::de::DeserializeOwned;

    /// Builds the policy from its settings. An error fails the load: the gateway reports the
    /// message and keeps serving the previous version of the policy.
    fn configure(settings: Self::Settings) -> Result<Self, String>;

    /// Decides one request: which of `request.scope.actions` are granted. Build the answer
    /// with [`Request::grant`] or [`Decision::deny`]; granting an action that was not asked
    /// for is treated as a fault by the gateway and denies everything.
    fn authorize(&self, request: &Request) -> Decision;

    /// The facts this policy decides with, asked once after [`configure`](Policy::configure):
    /// the gateway gathers only what some policy needs (in gateway mode, for the operations
    /// a fact concerns) and fills in [`Request::time`] only when one needs [`Needs::TIME`].
    /// None by default.
    fn needs(&self) -> Needs {
        Needs::empty()
    }
}

/// The settings of a policy that takes none: accepts only `{}`, so a stray setting is an
/// error rather than silently ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

/// Exports a [`Policy`] implementation as the component's `configure` and `authorize`.
///
/// Call it once, at the top level of the policy crate (a `cdylib`).
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            ::std::thread_local! {
                static CONFIGURED: ::std::cell::RefCell<::std::option::Option<$policy>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            struct Export;

            impl $crate::bindings::Guest for Export {
                fn configure(
                    settings: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    let policy = $crate::__private::configure::<$policy>(&settings)?;
                    CONFIGURED
                        .with(|slot| *slot.borrow_mut() = ::std::option::Option::Some(policy));
                    ::std::result::Result::Ok(())
                }

                fn needs() -> $crate::Needs {
                    CONFIGURED.with(|slot| match &*slot.borrow() {
                        ::std::option::Option::Some(policy) => $crate::Policy::needs(policy),
                        ::std::option::Option::None => $crate::Needs::empty(),
                    })
                }

                fn authorize(request: $crate::Request) -> $crate::Decision {
                    CONFIGURED.with(|slot| match &*slot.borrow() {
                        ::std::option::Option::Some(policy) => {
                            $crate::Policy::authorize(policy, &request)
                        }
                        ::std::option::Option::None => {
                            $crate::Decision::deny("the policy was not configured")
                        }
                    })
                }
            }

    $crate::bindings::__export_policy_world!(Export with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// Parses the settings JSON and builds the policy, with messages that say where the
    /// settings are wrong.
    pub fn configure<P: crate::Policy>(settings: &str) -> Result<P, String> {
        let settings =
            serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))?;
        P::configure(settings)
    }
}

#[cfg(test)]
mod tests {
    /// `WORLD` is what the WIT this crate carries declares.
    #[test]
    fn the_world_constant_is_the_wits_package() {
        let wit = include_str!("../wit/policy.wit");
        assert!(
            wit.lines()
                .any(|l| l == format!("package {};", super::WORLD)),
            "wit/policy.wit declares another package than {}",
            super::WORLD
        );
    }
}
