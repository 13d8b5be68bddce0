//! The gateway's integration tests, in one binary: the policy host against the real `.wasm`
//! files that `cargo policies` builds (and the Python and JavaScript ones of
//! scripts/polyglot.sh), hot swap, the command line, gateway mode in process,
//! token lifetimes and revocation, hostile clients, password guessing and a failing
//! registry.

mod cli;
mod gateway_mode;
mod guessing;
mod hostile_clients;
mod hot_swap;
mod policy_host;
mod polyglot;
mod served;
mod tokens;
mod upstream_faults;
mod util;
