#!/usr/bin/env bash
# What a shadow set ([[shadow]]) costs a request: two Portcullis gateways in front of one
# registry:2, the same serving acl and decision log, one of them with a shadow acl that
# narrows a namespace. Manifest GETs (wrk) at 1 and 16 connections, the two gateways taking
# turns for ROUNDS rounds; the median of each one's p50 and rate, and how many shadow
# decisions were skipped or counted. Prints markdown (appended to docs/benchmarks.md with
# --record).
# usage: bench/shadow.sh [--record]   env: SECONDS_PER_RUN (10), ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
require_tools docker-registry wrk curl python3 -- docker-registry wrk curl python3
bin=$(build_portcullis)
secs=${SECONDS_PER_RUN:-10}
rounds=${ROUNDS:-3}
work=$(mktemp -d)
trap 'stop_servers; rm -rf "$work"' EXIT

start_registry "$work"
"$bin" keygen --out "$work/keys" >/dev/null
mkdir -p "$work/policies"
cp target/wasm32-unknown-unknown/release/acl.wasm "$work/policies/"
"$bin" passwd "$work/htpasswd" alice --cost 10 <<<secret >/dev/null
rules='{"rules": [{"match": {"account": "alice", "name": "bench/**"}, "actions": ["pull", "push"]}]}'
echo "$rules" > "$work/acl.json"
echo '{"rules": [{"match": {"name": "bench/secret*"}, "actions": []}, {"match": {"account": "alice", "name": "bench/**"}, "actions": ["pull"]}]}' > "$work/acl-next.json"

gateway() { # name port admin-port shadow-section
  { config_head "$2" | sed "s/^listen = .*/&\nadmin_listen = \"127.0.0.1:$3\"/"
    cat <<TOML
[identity]
htpasswd = "htpasswd"
[upstream]
url = "http://127.0.0.1:$registry_port"
[log]
decisions = "$1.jsonl"
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings_file = "acl.json"
$4
TOML
  } > "$work/$1.toml"
  (cd "$work" && RUST_LOG=warn exec "$bin" serve --config "$1.toml" > "$1.log" 2>&1) & pids+=($!)
  wait_port "$2"
}
plain=$(free_port); shadowed=$(free_port); admin=$(free_port)
gateway plain "$plain" "$(free_port)" ""
gateway shadowed "$shadowed" "$admin" "[[shadow]]
name = \"acl\"
module = \"policies/acl.wasm\"
settings_file = \"acl-next.json\""

# One small image straight into the registry.
manifest_type=application/vnd.oci.image.manifest.v1+json
upload() { # file -> digest
  local digest location
  digest=sha256:$(sha256sum "$1" | cut -d' ' -f1)
  location=$(curl -sSf -X POST -D - -o /dev/null "http://127.0.0.1:$registry_port/v2/bench/app/blobs/uploads/" \
    | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $location in http*) ;; *) location="http://127.0.0.1:$registry_port$location" ;; esac
  curl -sSf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$1" -o /dev/null "$location&digest=$digest"
  echo "$digest"
}
head -c 1024 /dev/urandom > "$work/config.bin"
head -c 4096 /dev/urandom > "$work/layer.bin"
config=$(upload "$work/config.bin"); layer=$(upload "$work/layer.bin")
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
  "$manifest_type" "$config" "$layer" > "$work/manifest.json"
curl -sSf -X PUT -H "Content-Type: $manifest_type" --data-binary "@$work/manifest.json" \
  "http://127.0.0.1:$registry_port/v2/bench/app/manifests/latest" -o /dev/null
basic="Basic $(printf alice:secret | base64)"

results=$work/results.tsv
: > "$results"
for c in 1 16; do
  threads=$(( c >= 16 ? 2 : 1 ))
  for round in $(seq "$rounds"); do
    for setup in plain shadowed; do
      port=$([ $setup = plain ] && echo "$plain" || echo "$shadowed")
      out=$(wrk -t"$threads" -c"$c" -d"${secs}s" --latency -H "Accept: $manifest_type" \
        -H "Authorization: $basic" "http://127.0.0.1:$port/v2/bench/app/manifests/latest")
      printf '%s\t%s\t%s\t%s\t%s\n' "$c" "$setup" "$(ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")" \
        "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(wrk_errors "$out")" >> "$results"
      echo "round $round, $c connections, $setup: $(awk '$1 == "50%" {print $2}' <<<"$out")" >&2
    done
  done
done
counts=$(curl -sSf "http://127.0.0.1:$admin/metrics" | awk -F'[{}" ]+' '/^portcullis_shadow_decisions_total/ {printf "%s %s, ", $3, $4}')
machine="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores"
python3 - "$results" "$machine" "$secs" "$rounds" "${counts%, }" > "$work/report.md" <<'EOF'
import statistics, sys, datetime
path, machine, secs, rounds, counts = sys.argv[1:]
rows = [line.split("\t") for line in open(path).read().splitlines()]
print(f"### Shadow set overhead, {datetime.date.today()} ({machine})")
print()
print(f"Manifest GETs through Portcullis in gateway mode (Basic, warm caches), with and without a")
print(f"shadow acl beside the serving one; median of {rounds} rounds of {secs} s, the two gateways")
print(f"taking turns (bench/shadow.sh). Shadow decisions counted: {counts}.")
print()
print("| connections | gateway | p50 ms | requests/s | errors |")
print("|---|---|---|---|---|")
for c in sorted({r[0] for r in rows}, key=int):
    p50 = {}
    for setup in ("plain", "shadowed"):
        mine = [r for r in rows if r[0] == c and r[1] == setup]
        p50[setup] = statistics.median(float(r[2]) for r in mine)
        rate = statistics.median(float(r[3]) for r in mine)
        errors = sum(int(r[4]) for r in mine)
        name = "no shadow" if setup == "plain" else "with [[shadow]]"
        print(f"| {c} | {name} | {p50[setup]:.3f} | {rate:.0f} | {errors} |")
    change = (p50["shadowed"] / p50["plain"] - 1) * 100
    print(f"| {c} | p50 change | {change:+.1f}% | | |")
EOF
cat "$work/report.md"
if [ "${1:-}" = --record ]; then printf '\n%s\n' "$(cat "$work/report.md")" >> docs/benchmarks.md; fi
