#!/usr/bin/env bash
# Fuzzes every parser of untrusted input with cargo-fuzz (libFuzzer, nightly), each target
# for SECONDS (default 120), and prints the executions and findings per target. Not part
# of scripts/test.sh: the same surfaces are property-tested there on stable.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-120}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(scope route authorization token htpasswd groups acl_settings registry_document)
fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked

# Safe Rust gains little from AddressSanitizer and pays for it in speed; coverage
# instrumentation is what finds inputs.
cargo +nightly fuzz build --sanitizer none --fuzz-dir fuzz

summary=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    work="fuzz/work/$target"
    mkdir -p "$corpus" "$work"
    log="fuzz/work/$target.log"
    # New inputs go to the work directory; the committed seeds stay small.
    status=0
    cargo +nightly fuzz run --sanitizer none --fuzz-dir fuzz "$target" "$work" "$corpus" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    if [ "$status" -eq 0 ]; then verdict="no finding"; else verdict="FINDING (exit $status, see $log)"; fi
    summary+=("$target: $execs executions in ${seconds} s, coverage $coverage edges, $verdict")
done
printf '%s\n' "${summary[@]}"
