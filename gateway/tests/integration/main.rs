//! The gateway's integration tests, in one binary: the policy host against the real `.wasm`
//! files that `cargo policies` builds, hot swap, the command line, and gateway mode in process.

mod cli;
mod gateway_mode;
mod hot_swap;
mod policy_host;
mod util;
