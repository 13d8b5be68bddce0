#!/usr/bin/env bash
# What the facts policies decide with cost a request, side by side in one run: Portcullis
# gateways in front of one registry:2, all with the same acl, one plain, one adding
# `immutable-tags` (a HEAD of the tag per manifest push, and the push read whole before the
# decision), one adding `signed-images` (the `.sig` manifest read per pull; each new one
# verified once, then remembered).
#   1. manifest pushes per second (wrk, PUT of distinct tags), plain vs immutable-tags;
#   2. signed manifest pulls: COUNT distinct signed images pulled once each (cold: every
#      signature verified) and again (warm), one connection, against the plain gateway.
# The images are signed here as cosign does (openssl: ECDSA P-256 over the payload); that
# skopeo signs and verifies the same format is what tests/e2e/signatures.rs shows.
# usage: bench/facts.sh [--record]   env: SECONDS_PER_RUN (10), COUNT (300)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
require_tools docker-registry wrk curl python3 openssl -- docker-registry wrk curl python3 openssl
bin=$(build_portcullis)
secs=${SECONDS_PER_RUN:-10}
count=${COUNT:-300}
work=$(mktemp -d)
trap 'stop_servers; rm -rf "$work"' EXIT

start_registry "$work"
"$bin" keygen --out "$work/keys" >/dev/null
"$bin" passwd "$work/htpasswd" alice --cost 10 <<<secret >/dev/null
mkdir -p "$work/policies"
for p in acl immutable_tags signed_images; do cp "target/wasm32-unknown-unknown/release/$p.wasm" "$work/policies/"; done
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ci.key" 2>/dev/null
openssl ec -in "$work/ci.key" -pubout -out "$work/ci.pub" 2>/dev/null

gateway() { # name port more-config
  { config_head "$2"
    cat <<TOML
[identity]
htpasswd = "htpasswd"
[upstream]
url = "http://127.0.0.1:$registry_port"
[signatures]
keys = { ci = "ci.pub" }
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings = { rules = [{ match = { account = "alice" }, actions = ["pull", "push"] }] }
$3
TOML
  } > "$work/$1.toml"
  (cd "$work" && RUST_LOG=warn exec "$bin" serve --config "$1.toml" > "$1.log" 2>&1) & pids+=($!)
  wait_port "$2"
}
plain=$(free_port); immutable=$(free_port); signed=$(free_port)
gateway plain "$plain" ""
gateway immutable "$immutable" '[[policy]]
name = "immutable-tags"
module = "policies/immutable_tags.wasm"
settings = { rules = [{ repositories = "bench/**", tags = ["v*"] }] }'
gateway signed "$signed" '[[policy]]
name = "signed-images"
module = "policies/signed_images.wasm"
settings = { rules = [{ repositories = "bench/**", keys = ["ci"] }] }'

reg="http://127.0.0.1:$registry_port"
upload() { # repo file -> digest
  local digest location
  digest=sha256:$(sha256sum "$2" | cut -d' ' -f1)
  location=$(curl -sSf -X POST -D - -o /dev/null "$reg/v2/$1/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $location in http*) ;; *) location="$reg$location" ;; esac
  curl -sSf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$2" -o /dev/null "$location&digest=$digest"
  echo "$digest"
}
put_manifest() { # repo reference file
  curl -sSf -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
    --data-binary "@$3" -o /dev/null "$reg/v2/$1/manifests/$2"
}
basic="Basic $(printf alice:secret | base64)"

# 1: pushes. One config and layer; each PUT writes the same manifest under a new tag
# (thread-numbered, so no two writers share a tag).
head -c 1024 /dev/urandom > "$work/config.bin"; head -c 4096 /dev/urandom > "$work/layer.bin"
config=$(upload bench/app "$work/config.bin"); layer=$(upload bench/app "$work/layer.bin")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
  "$config" "$layer" > "$work/manifest.json"
cat > "$work/push.lua" <<LUA
local threads = 0
function setup(thread) threads = threads + 1; thread:set("id", threads) end
local n = 0
local body = io.open("$work/manifest.json"):read("*a")
function request()
  n = n + 1
  return wrk.format("PUT", "/v2/bench/app/manifests/v" .. id .. "-" .. n,
    {["Authorization"] = "$basic", ["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"}, body)
end
LUA
results=$work/results.tsv
: > "$results"
for c in 1 16; do
  threads=$(( c >= 16 ? 2 : 1 ))
  for setup in plain immutable; do
    port=$([ $setup = plain ] && echo "$plain" || echo "$immutable")
    out=$(wrk -t"$threads" -c"$c" -d"${secs}s" --latency -s "$work/push.lua" "http://127.0.0.1:$port")
    printf 'push\t%s\t%s\t%s\t%s\n' "$c" "$setup" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
      "$(wrk_errors "$out")" >> "$results"
  done
done

# 2: COUNT images, each with its own layer and a cosign signature by ci (payload blob, its
# DER ECDSA signature in the layer's annotation, under sha256-<hex>.sig).
for i in $(seq "$count"); do
  printf 'image %s' "$i" > "$work/l.bin"
  l=$(upload bench/signed "$work/l.bin"); c=$(upload bench/signed "$work/config.bin")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
    "$c" "$l" "$(stat -c %s "$work/l.bin")" > "$work/m.json"
  put_manifest bench/signed "t$i" "$work/m.json"
  digest=sha256:$(sha256sum "$work/m.json" | cut -d' ' -f1)
  printf '{"critical":{"identity":{"docker-reference":"127.0.0.1/bench/signed"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' \
    "$digest" > "$work/payload.json"
  payload=$(upload bench/signed "$work/payload.json")
  signature=$(openssl dgst -sha256 -sign "$work/ci.key" "$work/payload.json" | base64 -w0)
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"%s","size":%d,"annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}' \
    "$c" "$payload" "$(stat -c %s "$work/payload.json")" "$signature" > "$work/s.json"
  put_manifest bench/signed "sha256-${digest#sha256:}.sig" "$work/s.json"
done
urls() { for i in $(seq "$count"); do printf 'url = "http://127.0.0.1:%s/v2/bench/signed/manifests/t%s"\noutput = "/dev/null"\n' "$1" "$i"; done; }
pull_all() { # port -> seconds for COUNT pulls on one connection
  local start end
  urls "$1" > "$work/urls"
  start=$(date +%s.%N)
  curl -sSf --fail-early -K "$work/urls" -H "Authorization: $basic" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json'
  end=$(date +%s.%N)
  python3 -c "print(($end - $start) / $count * 1000)"
}
{
  printf 'pull\t1\tplain\t%s\n' "$(pull_all "$plain")"
  printf 'pull\t1\tsigned, cold\t%s\n' "$(pull_all "$signed")"
  printf 'pull\t1\tsigned, warm\t%s\n' "$(pull_all "$signed")"
} >> "$results"
# Every pull was granted: a refusal would have failed curl (-f).

machine="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores"
python3 - "$results" "$machine" "$secs" "$count" > "$work/report.md" <<'EOF'
import sys, datetime
path, machine, secs, count = sys.argv[1:]
rows = [line.split("\t") for line in open(path).read().splitlines()]
print(f"### What facts cost, {datetime.date.today()} ({machine})")
print()
print(f"bench/facts.sh: Portcullis gateways in front of one registry:2, Basic auth (warm cache).")
print()
print(f"Manifest pushes ({secs} s of wrk, a new tag each):")
print()
print("| connections | gateway | pushes/s | errors |")
print("|---|---|---|---|")
for r in rows:
    if r[0] == "push":
        name = "acl" if r[2] == "plain" else "acl + immutable-tags"
        print(f"| {r[1]} | {name} | {float(r[3]):.0f} | {r[4]} |")
print()
print(f"Signed manifest pulls by tag, {count} distinct images, one connection (ms per pull):")
print()
print("| gateway | ms per pull |")
print("|---|---|")
for r in rows:
    if r[0] == "pull":
        name = {"plain": "acl only", "signed, cold": "acl + signed-images, cold (each signature verified)",
                "signed, warm": "acl + signed-images, warm (remembered)"}[r[2]]
        print(f"| {name} | {float(r[3]):.2f} |")
EOF
cat "$work/report.md"
if [ "${1:-}" = --record ]; then printf '\n%s\n' "$(cat "$work/report.md")" >> docs/benchmarks.md; fi
