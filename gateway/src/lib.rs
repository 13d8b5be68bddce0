//! Portcullis: an authorization gateway for OCI/Docker registries whose decisions are made by
//! hot-swappable WebAssembly policies.

// One call needs unsafe: loading compiled policy code kept on disk (policy/compiled.rs).
#![deny(unsafe_code)]

pub mod artifacts;
pub mod client;
pub mod config;
pub mod console;
pub mod decision_log;
pub mod glob;
pub mod identity;
pub mod metrics;
pub mod oci;
pub mod policy;
#[cfg(test)]
mod properties;
pub mod proxy;
pub mod scope;
pub mod seal;
pub mod server;
pub mod shadow;
pub mod signatures;
pub mod tls;
pub mod token;
pub mod watch;
