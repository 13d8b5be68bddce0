#!/usr/bin/env bash
# The console's repository list (issue 15): how long /ui/repositories takes to render for a
# registry of 10 000 repositories, in gateway mode, for a person who may pull all of them
# (the first page needs 51 decisions) and one who may pull 100 spread through them (the
# first page needs all 10 000). Three cases: right after start (the registry's listing and
# every decision to make; the listing starts with the sign-in page), the first view after
# a sign-in that took 2 s as a person's does (the listing made meanwhile, every decision
# still to make), and warm (the listing reused, the decisions remembered).
# Not part of the test suite.
# usage: bench/console.sh            env: RUNS (20), COLD_RUNS (5)
# Times are curl's, from the request to the last byte of the page.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${CONSOLE_DIR:-/tmp/portcullis-console}
runs=${RUNS:-20}
cold_runs=${COLD_RUNS:-5}

# shellcheck source=bench/common.sh
. bench/common.sh
require_tools docker-registry htpasswd curl python3 -- docker-registry apache2-utils curl python3
bin=$(build_portcullis)

rm -rf "$work"; mkdir -p "$work/policies"
make_repositories "$work" team 10000
start_registry "$work"; reg=$registry_port

"$bin" keygen --out "$work/keys" >/dev/null
"$bin" keygen --out "$work/keys" --session >/dev/null
{ htpasswd -Bbn -C 10 alice secret; htpasswd -Bbn -C 10 bob secret; } > "$work/htpasswd"
: > "$work/revoked"
cp target/wasm32-unknown-unknown/release/acl.wasm "$work/policies/"
printf '{"rules": [{"match": {"account": "alice", "name": "team/*"}, "actions": ["pull"]}, {"match": {"account": "bob", "name": "team/r???00"}, "actions": ["pull"]}]}' > "$work/acl.json"
gw=$(free_port)
{ config_head "$gw"; cat <<TOML; } > "$work/portcullis.toml"
[identity]
htpasswd = "htpasswd"
[upstream]
url = "http://127.0.0.1:$reg"
[console]
enabled = true
session_key = "keys/session.key"
revoked_tokens = "revoked"
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings_file = "acl.json"
TOML

start_gateway() {
  RUST_LOG=error "$bin" serve --config "$work/portcullis.toml" > "$work/gateway.log" 2>&1 & gateway=$!
  pids+=("$gateway")
  wait_port "$gw"
}
stop_gateway() { kill "$gateway"; wait "$gateway" 2>/dev/null || true; }

# Signs in through the form; the cookie jar is $work/<user>.jar.
sign_in() { # user [seconds spent typing]
  local jar="$work/$1.jar" csrf
  csrf=$(curl -sf -c "$jar" "http://127.0.0.1:$gw/ui/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p')
  sleep "${2:-0}"
  curl -sf -b "$jar" -c "$jar" -o /dev/null -d "csrf=$csrf&user=$1&password=secret" "http://127.0.0.1:$gw/ui/login"
}
page() { # user -> seconds for /ui/repositories
  curl -sf -b "$work/$1.jar" -o "$work/$1.html" -w '%{time_total}' "http://127.0.0.1:$gw/ui/repositories"
}

echo "# $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
median() { python3 -c "import sys; v=sorted(map(float, sys.argv[1:])); print(f'median {v[len(v)//2]:.3f} s, max {v[-1]:.3f} s')" "$@"; }
for user in alice bob; do
  cold=(); typed=()
  for _ in $(seq "$cold_runs"); do
    start_gateway; sign_in "$user"
    cold+=("$(page "$user")")
    stop_gateway
    start_gateway; sign_in "$user" 2
    typed+=("$(page "$user")")
    stop_gateway
  done
  start_gateway; sign_in "$user"; page "$user" >/dev/null
  shown=$(grep -o 'href="/ui/repository?name=' "$work/$user.html" | wc -l)
  warm=()
  for _ in $(seq "$runs"); do warm+=("$(page "$user")"); done
  stop_gateway
  printf '%s (first page shows %s of 10000)\n  right after start:      %s\n  after a 2 s sign-in:    %s\n  warm:                   %s\n' \
    "$user" "$shown" "$(median "${cold[@]}")" "$(median "${typed[@]}")" "$(median "${warm[@]}")"
done
