#!/usr/bin/env bash
# Catalog floods (issue 12, item 4): how many fresh decisions a logged-in user gets per
# second alone, and while anonymous callers list a registry of 25 000 repositories in a
# loop (each listing filtered by the policies). Not part of the test suite.
# usage: bench/catalog.sh            env: BASELINE=<another portcullis binary> to compare,
#                                         SECONDS_EACH (10), LISTERS (4)
# Prints, per binary: tokens/s alone, tokens/s under the listings, their ratio, and the
# listings answered in the window.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${CATALOG_DIR:-/tmp/portcullis-catalog}
seconds=${SECONDS_EACH:-10}
listers=${LISTERS:-4}

# shellcheck source=bench/common.sh
. bench/common.sh
require_tools docker-registry wrk htpasswd curl python3 -- docker-registry wrk apache2-utils curl python3
bin=$(build_portcullis)

rm -rf "$work"; mkdir -p "$work/policies"
make_repositories "$work" load 25000
start_registry "$work"; reg=$registry_port

"$bin" keygen --out "$work/keys" >/dev/null
htpasswd -Bbn -C 10 alice secret > "$work/htpasswd"
cp target/wasm32-unknown-unknown/release/acl.wasm "$work/policies/"
printf '{"rules": [{"match": {"account": "alice", "name": "alice/**"}, "actions": ["pull", "push"]}, {"match": {"account": "", "name": "public/*"}, "actions": ["pull"]}]}' > "$work/acl.json"
# Every request asks a scope never asked before: a fresh decision each, never remembered.
cat > "$work/fresh.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/token?service=bench&scope=repository:alice/app" .. n .. ":pull")
end
LUA

measure() { # binary label
  local gw conf pid alone under listed
  gw=$(free_port); conf="$work/portcullis-$2.toml"
  { config_head "$gw"; cat <<TOML; } > "$conf"
[identity]
htpasswd = "htpasswd"
anonymous = true
[upstream]
url = "http://127.0.0.1:$reg"
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings_file = "acl.json"
TOML
  RUST_LOG=error "$1" serve --config "$conf" > "$work/$2.log" 2>&1 & pid=$!; pids+=("$pid")
  wait_port "$gw"
  local auth; auth="Authorization: Basic $(printf alice:secret | base64)"
  curl -sf -H "$auth" "http://127.0.0.1:$gw/token?service=bench" -o /dev/null # warm the login
  alone=$(wrk -t1 -c4 -d"${seconds}s" -H "$auth" -s "$work/fresh.lua" "http://127.0.0.1:$gw" | awk '/Requests\/sec/ {print $2}')
  wrk -t1 -c"$listers" -d"$((seconds + 4))s" --timeout 120s "http://127.0.0.1:$gw/v2/_catalog?n=100" > "$work/$2-listings.txt" &
  local flood=$!
  sleep 2
  under=$(wrk -t1 -c4 -d"${seconds}s" -H "$auth" -s "$work/fresh.lua" "http://127.0.0.1:$gw" | awk '/Requests\/sec/ {print $2}')
  wait "$flood"
  # Listings answered in full, and those refused with a 503 while others held the lane.
  listed=$(awk '/requests in/ {n=$1} /Non-2xx/ {r=$NF} END {printf "%d answered, %d refused (503)", n-r, r}' "$work/$2-listings.txt")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '%-10s tokens/s alone %8s   under %s listers %8s   ratio %s   listings: %s\n' \
    "$2" "$alone" "$listers" "$under" "$(python3 -c "print(f'{$under/$alone:.2f}')")" "$listed"
}

echo "# $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if [ -n "${BASELINE:-}" ]; then measure "$BASELINE" baseline; fi
measure "$bin" current
