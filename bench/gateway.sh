#!/usr/bin/env bash
# Gateway mode beside the registry it fronts, in one run on loopback: manifest GETs and blob
# pulls straight to registry:2 (Debian's docker-registry, no auth: the ceiling), through a
# bare TCP relay (the best any byte-copying proxy can do), through Portcullis with Basic and
# with Bearer credentials, and through the seeds' nginx auth_basic recipe; every user is
# bcrypt cost 10. Prints a markdown table (and appends it to
# docs/benchmarks.md with --record).
# usage: bench/gateway.sh [--record|--hold]
#   env: ROUNDS (3), SECONDS_PER_RUN (10), BIG_MB (256), CONNS (16)
# --hold starts everything, prints the endpoints and waits (for profiling by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=${BENCH_DIR:-/tmp/portcullis-bench}
secs=${SECONDS_PER_RUN:-10}
big_mb=${BIG_MB:-256}
conns=${CONNS:-16}
rounds=${ROUNDS:-3}

need=()
for tool in docker-registry wrk nginx htpasswd curl socat; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "missing: ${need[*]}; install docker-registry wrk nginx apache2-utils curl socat" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq docker-registry wrk nginx apache2-utils curl socat >/dev/null
fi
rustup target add wasm32-unknown-unknown >/dev/null
cargo policies -q
cargo build -q --release -p portcullis
bin=$root/target/release/portcullis

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/nginx/nginx.pid" ]; then kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }

rm -rf "$work"; mkdir -p "$work/data" "$work/nginx" "$work/policies"
reg=$(free_port); gw=$(free_port); ngx=$(free_port); relay=$(free_port)
htpasswd -Bbn -C 10 alice secret > "$work/htpasswd"

cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/data}}
http: {addr: 127.0.0.1:$reg, secret: bench}
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 & pids+=($!); registry_pid=$!

"$bin" keygen --out "$work/keys" >/dev/null
cp target/wasm32-unknown-unknown/release/acl.wasm "$work/policies/"
cat > "$work/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:$gw"
[token]
issuer = "portcullis"
service = "bench"
key = "keys/token.key"
certificate = "keys/token.crt"
[identity]
htpasswd = "htpasswd"
[upstream]
url = "http://127.0.0.1:$reg"
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings = { rules = [{ match = { account = "alice", name = "bench/*" }, actions = ["pull", "push"] }] }
TOML
RUST_LOG=warn "$bin" serve --config "$work/portcullis.toml" > "$work/portcullis.log" 2>&1 & pids+=($!); gateway_pid=$!

cat > "$work/nginx/nginx.conf" <<NG
worker_processes 1; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  upstream reg { server 127.0.0.1:$reg; keepalive 32; }
  server { listen 127.0.0.1:$ngx; client_max_body_size 0; chunked_transfer_encoding on;
    location /v2/ { auth_basic "bench"; auth_basic_user_file $work/htpasswd;
      proxy_pass http://reg; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$http_host; proxy_buffering off; proxy_request_buffering off; } } }
NG
nginx -c "$work/nginx/nginx.conf"
# A plain TCP relay: no HTTP, no auth; what any proxy that copies bytes can reach at best.
socat -b 1048576 "TCP-LISTEN:$relay,fork,reuseaddr" "TCP:127.0.0.1:$reg" & pids+=($!)
wait_port "$reg"; wait_port "$gw"; wait_port "$ngx"; wait_port "$relay"

# One image straight into the registry: a 1 KiB config and a BIG_MB random layer.
upload() { # repo file -> digest
  local digest location
  digest=sha256:$(sha256sum "$2" | cut -d' ' -f1)
  location=$(curl -sSf -X POST -D - -o /dev/null "http://127.0.0.1:$reg/v2/$1/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  curl -sSf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$2" "$location&digest=$digest" -o /dev/null
  echo "$digest"
}
head -c 1024 /dev/urandom > "$work/config.bin"
head -c $((big_mb << 20)) /dev/urandom > "$work/layer.bin"
config=$(upload bench/app "$work/config.bin")
layer=$(upload bench/app "$work/layer.bin")
manifest_type=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
  "$manifest_type" "$config" "$layer" $((big_mb << 20)) > "$work/manifest.json"
curl -sSf -X PUT -H "Content-Type: $manifest_type" --data-binary "@$work/manifest.json" \
  "http://127.0.0.1:$reg/v2/bench/app/manifests/latest" -o /dev/null

basic="Basic $(printf alice:secret | base64)"
token=$(curl -sSf -H "Authorization: $basic" "http://127.0.0.1:$gw/token?service=bench&scope=repository:bench/app:pull" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
bearer="Bearer $token"

# name port auth
setups=("registry:2, no auth (ceiling)|$reg|"
        "socat TCP relay, 1 MiB buffers, no auth|$relay|"
        "Portcullis gateway, Basic|$gw|$basic"
        "Portcullis gateway, Bearer|$gw|$bearer"
        "nginx auth_basic recipe|$ngx|$basic")

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user+system clock ticks
manifests() { # port auth -> "rate p50 p99 registry-cpu-us/req gateway-cpu-us/req"
  local out r0 g0 r1 g1 requests hz
  hz=$(getconf CLK_TCK)
  r0=$(cpu "$registry_pid"); g0=$(cpu "$gateway_pid")
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -H "Accept: $manifest_type" ${2:+-H "Authorization: $2"} \
    "http://127.0.0.1:$1/v2/bench/app/manifests/latest")
  r1=$(cpu "$registry_pid"); g1=$(cpu "$gateway_pid")
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}')" \
    "$(awk -v t=$((r1 - r0)) -v n="$requests" -v hz="$hz" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}')" \
    "$(awk -v t=$((g1 - g0)) -v n="$requests" -v hz="$hz" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}')"
}
blob() { # port auth -> median MB/s of 3 pulls
  for _ in 1 2 3; do
    curl -sSf ${2:+-H "Authorization: $2"} -o /dev/null -w '%{speed_download}\n' \
      "http://127.0.0.1:$1/v2/bench/app/blobs/$layer"
  done | sort -n | sed -n 2p | awk '{printf "%.0f", $1 / 1e6}'
}
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $basic" "http://127.0.0.1:$gw/v2/bench/app/manifests/latest" -H "Accept: $manifest_type")
[ "$status" = 200 ] || { echo "the gateway answers $status; see $work/portcullis.log" >&2; exit 1; }

if [ "${1:-}" = --hold ]; then
  echo "registry http://127.0.0.1:$reg (pid $registry_pid), gateway http://127.0.0.1:$gw (pid $gateway_pid), nginx http://127.0.0.1:$ngx"
  echo "GET /v2/bench/app/manifests/latest with -H 'Accept: $manifest_type' -H 'Authorization: $basic'"
  echo "$bearer" > "$work/bearer"; echo "Bearer header in $work/bearer; Ctrl-C stops"
  wait "$gateway_pid"
fi

# Rounds interleave the setups, so that drift on a shared machine hits them all alike; each
# figure is the median over the rounds, each ratio the median of the per-round ratios.
ms() { awk '{v = $1; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else if (v ~ /s$/) v = v * 1000; printf "%.1f", v}' <<<"$1"; }
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for round in $(seq "$rounds"); do
  for i in "${!setups[@]}"; do
    IFS='|' read -r name port auth <<<"${setups[$i]}"
    read -r rate p50 p99 reg_us gw_us <<<"$(manifests "$port" "$auth")"
    [ "$port" = "$gw" ] || gw_us=0
    echo "$rate $(ms "$p50") $(ms "$p99") $reg_us $gw_us $(blob "$port" "$auth")" >> "$work/round.$round.$i"
  done
done
column() { # setup column -> median over rounds
  for round in $(seq "$rounds"); do awk -v c="$2" '{print $c}' "$work/round.$round.$1"; done | median
}
ratio() { # setup column -> median over rounds of setup/ceiling
  for round in $(seq "$rounds"); do
    paste "$work/round.$round.$1" "$work/round.$round.0" | awk -v c="$2" '{printf "%.4f\n", $c / $(c + 6)}'
  done | median
}
int() { awk '{printf "%.0f", $1}'; }
times() { awk '{printf "%.2fx", $1}'; }
table="| setup | manifest GETs/s | p50 ms | p99 ms | ratio | CPU µs/GET registry + gateway | ${big_mb} MiB blob pull MB/s | ratio |
|---|---|---|---|---|---|---|---|"
for i in "${!setups[@]}"; do
  name=${setups[$i]%%|*}
  table+="
| $name | $(column "$i" 1 | int) | $(column "$i" 2) | $(column "$i" 3) | $(ratio "$i" 1 | times) | $(column "$i" 4 | int) + $(column "$i" 5 | int) | $(column "$i" 6 | int) | $(ratio "$i" 6 | times) |"
done

machine="$(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), $(date -u +%Y-%m-%d)"
report="### Gateway mode beside the registry ($machine)

$rounds rounds; in each, every setup gets wrk -t1 -c$conns -d${secs}s of manifest GETs (a
tagged OCI manifest) and 3 curl pulls of the blob (their median).
All servers, wrk and curl share the same cores. CPU per GET: user+system time of each process
over the run divided by the requests (nginx's own CPU is not counted).

$table"
echo "$report"
if [ "${1:-}" = --record ]; then printf '\n%s\n' "$report" >> docs/benchmarks.md; fi
