#!/usr/bin/env bash
# Takes the console's screenshots in docs/console/: every page at a phone's width (390 px)
# and a desktop's (1280 px), through the same end-to-end test that checks their layout and
# keyboard reach. Needs what scripts/test.sh installs (the registry, Chromium, Node).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown >/dev/null
cargo policies
cargo build -p portcullis
[ -d tests/oidc/node_modules ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
rm -rf docs/console
PORTCULLIS_SCREENSHOTS="$PWD/docs/console" cargo test -p portcullis-e2e --test e2e \
  every_page_reads_on_a_phone_and_a_desktop_and_works_by_keyboard
if command -v optipng >/dev/null; then optipng -quiet -o2 docs/console/*.png; fi
ls -l docs/console
