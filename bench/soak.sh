#!/usr/bin/env bash
# Soak: load through the gateway for minutes while its files are swapped every second
# (the acl settings, the htpasswd, the signing key), then check that no request failed and
# that memory stayed flat. Not part of the test suite (it takes minutes by design).
# usage: bench/soak.sh            env: SOAK_SECONDS (300), CONNS (16)
# Load: wrk with Basic credentials on a manifest (16 connections), and a loop that fetches a
# fresh Bearer token and uses it, as docker does. Exits non-zero on any failed request or
# if the resident memory of the last minute exceeds the first minute's by more than 20 %.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${SOAK_DIR:-/tmp/portcullis-soak}
duration=${SOAK_SECONDS:-300}
conns=${CONNS:-16}

# shellcheck source=bench/common.sh
. bench/common.sh
require_tools docker-registry wrk htpasswd curl python3 -- docker-registry wrk apache2-utils curl python3
bin=$(build_portcullis)

rm -rf "$work"; mkdir -p "$work/data" "$work/policies"
start_registry "$work"; reg=$registry_port
gw=$(free_port); admin=$(free_port)
htpasswd -Bbn -C 10 alice secret > "$work/htpasswd.base"
cp "$work/htpasswd.base" "$work/htpasswd"

"$bin" keygen --out "$work/keys" >/dev/null
cp target/wasm32-unknown-unknown/release/acl.wasm "$work/policies/"
# Two settings that treat alice alike and differ for everyone else: every swap is a real
# reload, and no swap may change alice's answer.
printf '{"rules": [{"match": {"account": "alice", "name": "soak/*"}, "actions": ["pull", "push"]}, {"match": {"account": "bob"}, "actions": ["pull"]}]}' > "$work/acl.a.json"
printf '{"rules": [{"match": {"account": "carol"}, "actions": ["*"]}, {"match": {"account": "alice"}, "actions": ["pull", "push"]}]}' > "$work/acl.b.json"
cp "$work/acl.a.json" "$work/acl.json"
cat > "$work/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:$gw"
admin_listen = "127.0.0.1:$admin"
[token]
issuer = "portcullis"
service = "soak"
key = "keys/token.key"
certificate = "keys/token.crt"
[identity]
htpasswd = "htpasswd"
[upstream]
url = "http://127.0.0.1:$reg"
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings_file = "acl.json"
TOML
RUST_LOG=warn "$bin" serve --config "$work/portcullis.toml" > "$work/portcullis.log" 2>&1 & pids+=($!); gateway_pid=$!
wait_port "$gw"

# One small image, pushed through the gateway.
basic="Basic $(printf alice:secret | base64)"
upload() { # repo file -> digest
  local digest location
  digest=sha256:$(sha256sum "$2" | cut -d' ' -f1)
  location=$(curl -sSf -X POST -H "Authorization: $basic" -D - -o /dev/null "http://127.0.0.1:$gw/v2/$1/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  curl -sSf -X PUT -H "Authorization: $basic" -H 'Content-Type: application/octet-stream' --data-binary "@$2" "$location&digest=$digest" -o /dev/null
  echo "$digest"
}
head -c 1024 /dev/urandom > "$work/config.bin"; head -c 65536 /dev/urandom > "$work/layer.bin"
config=$(upload soak/app "$work/config.bin"); layer=$(upload soak/app "$work/layer.bin")
manifest_type=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":65536}]}' \
  "$manifest_type" "$config" "$layer" > "$work/manifest.json"
curl -sSf -X PUT -H "Authorization: $basic" -H "Content-Type: $manifest_type" --data-binary "@$work/manifest.json" \
  "http://127.0.0.1:$gw/v2/soak/app/manifests/latest" -o /dev/null

rss() { awk '/VmRSS/ {print $2}' "/proc/$gateway_pid/status"; } # KiB
: > "$work/rss.txt"
start=$(date +%s)
# Every second: one of the three swaps, in turn.
(
  i=0
  while [ $(($(date +%s) - start)) -lt "$duration" ]; do
    case $((i % 3)) in
      0) if [ $((i % 2)) -eq 0 ]; then src=acl.b.json; else src=acl.a.json; fi
         cp "$work/$src" "$work/acl.json.tmp" && mv "$work/acl.json.tmp" "$work/acl.json" ;;
      1) { cat "$work/htpasswd.base"; htpasswd -Bbn -C 4 "churn$i" pw; } > "$work/htpasswd.tmp"
         mv "$work/htpasswd.tmp" "$work/htpasswd" ;;
      2) "$bin" keygen --out "$work/keys" >/dev/null ;;
    esac
    echo "$(($(date +%s) - start)) $(rss)" >> "$work/rss.txt"
    i=$((i + 1)); sleep 1
  done
) & pids+=($!); swapper=$!
# Bearer clients: a fresh token, then three requests with it, as long as the soak lasts.
(
  ok=0; failed=0
  while [ $(($(date +%s) - start)) -lt "$duration" ]; do
    token=$(curl -sS -H "Authorization: $basic" "http://127.0.0.1:$gw/token?service=soak&scope=repository:soak/app:pull" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin).get("token",""))' 2>/dev/null || true)
    for _ in 1 2 3; do
      code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" -H "Accept: $manifest_type" \
        "http://127.0.0.1:$gw/v2/soak/app/manifests/latest" || true)
      if [ "$code" = 200 ]; then ok=$((ok + 1)); else failed=$((failed + 1)); echo "bearer: $code" >> "$work/failures.txt"; fi
    done
  done
  echo "$ok $failed" > "$work/bearer.txt"
) & pids+=($!); bearer=$!

wrk -t1 -c"$conns" -d"${duration}s" --latency -H "Accept: $manifest_type" -H "Authorization: $basic" \
  "http://127.0.0.1:$gw/v2/soak/app/manifests/latest" > "$work/wrk.txt"
wait "$swapper" "$bearer"

requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt"); non2xx=${non2xx:-0}
socket_errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.txt"); socket_errors=${socket_errors:-0}
read -r bearer_ok bearer_failed < "$work/bearer.txt"
swaps=$(wc -l < "$work/rss.txt")
first=$(awk '$1 < 60 {if ($2 > m) m = $2} END {print m + 0}' "$work/rss.txt")
last=$(awk -v d="$duration" '$1 >= d - 60 {if ($2 > m) m = $2} END {print m + 0}' "$work/rss.txt")
reloads=$(curl -s "http://127.0.0.1:$admin/metrics" | grep '^portcullis_reloads_total' || true)

echo "## Soak, $(date -u +%Y-%m-%d), $(nproc) cores, ${duration} s"
echo
echo "- wrk, Basic, $conns connections: $requests requests, $non2xx non-2xx, $socket_errors socket errors"
echo "- Bearer loop (fresh token, 3 requests): $bearer_ok answered 200, $bearer_failed failed"
echo "- swaps (acl settings, htpasswd, signing key in turn, one a second): $swaps"
echo "- resident memory: first minute max $((first / 1024)) MiB, last minute max $((last / 1024)) MiB"
echo "- reloads counted by the gateway:"
while IFS= read -r line; do echo "    $line"; done <<< "$reloads"
if [ "$non2xx" != 0 ] || [ "$socket_errors" != 0 ] || [ "$bearer_failed" != 0 ] \
   || [ "$last" -gt $((first * 12 / 10)) ]; then
  echo "SOAK FAILED (details in $work)" >&2
  exit 1
fi
