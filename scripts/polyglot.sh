#!/usr/bin/env bash
# Builds the example policies in other languages into target/polyglot/, with toolchains from
# PyPI and npm (pinned, installed under target/ and the policy's own node_modules): the
# Python twin of namespace-owner with componentize-py, the JavaScript twin with
# componentize-qjs (QuickJS). Both are built against the policy world in policy-sdk/wit and
# without WASI, which the host does not provide (a policy imports nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/polyglot
mkdir -p "$out"
# True when $1 is missing or older than any of the other files.
stale() {
  local built=$1; shift
  for input in "$@"; do [ "$built" -nt "$input" ] || return 0; done
  return 1
}

py=policies/namespace-owner-py
if [ ! -x "$out/python/bin/componentize-py" ]; then
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --target "$out/python" \
    -r "$py/requirements.txt"
fi
if stale "$out/namespace_owner_py.wasm" "$py/app.py" policy-sdk/wit/policy.wit; then
  PYTHONPATH="$out/python" "$out/python/bin/componentize-py" -d policy-sdk/wit -w policy \
    componentize --stub-wasi -p "$py" app -o "$out/namespace_owner_py.wasm" >/dev/null
fi

js=policies/namespace-owner-js
[ -d "$js/node_modules" ] || npm ci --prefix "$js" --no-audit --no-fund --loglevel=error
if stale "$out/namespace_owner_js.wasm" "$js/policy.js" policy-sdk/wit/policy.wit; then
  npm run --prefix "$js" --silent build >/dev/null
fi
ls -l "$out"/*.wasm
