//! The gateway's integration tests, in one binary: the policy host against the real `.wasm`
//! files that `cargo policies` builds, hot swap, and the command line.

mod cli;
mod hot_swap;
mod policy_host;
mod util;
