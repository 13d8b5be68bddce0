#!/usr/bin/env bash
# Runs every test on a machine that has only rustup: adds what is missing, builds the
# policies to wasm, then runs the whole workspace's tests (unit, integration, doc).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown

if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "rustfmt is not installed: skipping the format check (rustup component add rustfmt)"
fi
cargo policies
cargo test --workspace --all-targets
cargo test --workspace --doc
