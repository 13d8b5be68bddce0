#!/usr/bin/env bash
# Runs every test on a machine that has only rustup: adds what is missing, builds the
# policies to wasm, then runs the whole workspace's tests (unit, integration, doc).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown

cargo fmt --all -- --check
cargo policies
cargo test --workspace --all-targets
cargo test --workspace --doc
