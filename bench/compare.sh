#!/usr/bin/env bash
# Portcullis side by side with what registry operators run today, on loopback, in one run:
# registry:2 (Debian's docker-registry) with no auth (the ceiling), registry:2 with its own
# htpasswd auth, the seeds' nginx auth_basic recipe in front of registry:2, Portcullis in
# gateway mode (Basic and Bearer) and Portcullis as token server for registry:2 (`auth:
# token`, Bearer). A bare TCP relay (socat) shows what any byte-copying proxy can reach.
# Every user is bcrypt cost 10. It measures
#   1. manifest GETs at 1, 16 and 256 connections (wrk): rate, p50, p99;
#   2. 256 MiB blob pull and push (curl), median of 5 and 3, setups taking turns;
#   3. token issuance with a warm credential cache against the raw ES256 / RS256 signing rate
#      of `openssl speed` on the same cores;
#   4. one decision through each shipped policy, reused and fresh instance (criterion);
#   5. peak RSS of each server under the 256-connection load (VmHWM, reset before each run);
# and prints markdown (appended to docs/benchmarks.md with --record).
# usage: bench/compare.sh [--record | --hold]
#   env: SECONDS_PER_RUN (10), BIG_MB (256), CONNECTIONS ("1 16 256"), CRITERION (1; 0 skips 4)
# --hold starts everything, prints the endpoints and waits (for profiling by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${BENCH_DIR:-/tmp/portcullis-bench}
secs=${SECONDS_PER_RUN:-10}
big_mb=${BIG_MB:-256}
read -r -a connections <<<"${CONNECTIONS:-1 16 256}"
mode=${1:-}

# shellcheck source=bench/common.sh
. bench/common.sh
require_tools docker-registry wrk nginx htpasswd curl socat openssl python3 -- \
  docker-registry wrk nginx apache2-utils curl socat openssl python3
bin=$(build_portcullis)
stop_nginx() {
  if [ -f "$work/nginx/nginx.pid" ]; then kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; fi
}
trap 'stop_servers; stop_nginx' EXIT

rm -rf "$work"; mkdir -p "$work/data" "$work/nginx" "$work/policies"
reg=$(free_port); reg_htpasswd=$(free_port); reg_token=$(free_port)
gw=$(free_port); ts=$(free_port); ts_rsa=$(free_port); ngx=$(free_port); relay=$(free_port)
htpasswd -Bbn -C 10 alice secret > "$work/htpasswd"

# Three registries on one storage: no auth, htpasswd, and tokens from Portcullis.
registry() { # name port auth-yaml
  cat > "$work/$1.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/data}}
http: {addr: 127.0.0.1:$2, secret: bench}
$3
YML
  docker-registry serve "$work/$1.yml" > "$work/$1.log" 2>&1 & pids+=($!)
}
registry open "$reg" ""
pid_open=$!
registry htpasswd "$reg_htpasswd" "auth: {htpasswd: {realm: bench, path: $work/htpasswd}}"
pid_htpasswd=$!
"$bin" keygen --out "$work/keys" >/dev/null
"$bin" keygen --rsa --out "$work/keys-rsa" >/dev/null
registry token "$reg_token" "auth: {token: {realm: http://127.0.0.1:$ts/token, service: bench, issuer: portcullis, rootcertbundle: $work/keys/token.crt}}"
pid_token_registry=$!

cp target/wasm32-unknown-unknown/release/acl.wasm "$work/policies/"
portcullis() { # name port keys-dir upstream-section
  cat > "$work/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
[token]
issuer = "portcullis"
service = "bench"
key = "$3/token.key"
certificate = "$3/token.crt"
[identity]
htpasswd = "htpasswd"
$4
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings = { rules = [{ match = { account = "alice", name = "bench/**" }, actions = ["pull", "push"] }] }
TOML
  RUST_LOG=warn "$bin" serve --config "$work/$1.toml" > "$work/$1.log" 2>&1 & pids+=($!)
}
portcullis gateway "$gw" keys "[upstream]
url = \"http://127.0.0.1:$reg\""
pid_gateway=$!
portcullis token-server "$ts" keys ""
pid_token_server=$!
portcullis token-server-rsa "$ts_rsa" keys-rsa ""
pid_token_server_rsa=$!

cat > "$work/nginx/nginx.conf" <<NG
worker_processes 1; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  upstream reg { server 127.0.0.1:$reg; keepalive 32; }
  server { listen 127.0.0.1:$ngx; client_max_body_size 0; chunked_transfer_encoding on;
    location /v2/ { auth_basic "bench"; auth_basic_user_file $work/htpasswd;
      proxy_pass http://reg; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$http_host; proxy_buffering off; proxy_request_buffering off;
      proxy_read_timeout 900; } } }
NG
nginx -c "$work/nginx/nginx.conf"
# No HTTP, no auth: what any proxy that copies bytes can reach at best.
socat -b 1048576 "TCP-LISTEN:$relay,fork,reuseaddr" "TCP:127.0.0.1:$reg" & pids+=($!)
for port in "$reg" "$reg_htpasswd" "$reg_token" "$gw" "$ts" "$ts_rsa" "$ngx" "$relay"; do wait_port "$port"; done
nginx_pids="$(cat "$work/nginx/nginx.pid") $(pgrep -P "$(cat "$work/nginx/nginx.pid")" | tr '\n' ' ')"

# One image straight into the registry: a 1 KiB config and a BIG_MB random layer.
upload() { # base-url repo file [auth] -> digest
  local digest location
  digest=sha256:$(sha256sum "$3" | cut -d' ' -f1)
  location=$(curl -sSf -X POST ${4:+-H "Authorization: $4"} -D - -o /dev/null "$1/v2/$2/blobs/uploads/" \
    | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $location in http*) ;; *) location="$1$location" ;; esac
  curl -sSf -X PUT ${4:+-H "Authorization: $4"} -H 'Content-Type: application/octet-stream' \
    --data-binary "@$3" -o /dev/null -w '%{speed_upload}\n' "$location&digest=$digest" > "$work/speed"
  echo "$digest"
}
head -c 1024 /dev/urandom > "$work/config.bin"
head -c $((big_mb << 20)) /dev/urandom > "$work/layer.bin"
config=$(upload "http://127.0.0.1:$reg" bench/app "$work/config.bin")
layer=$(upload "http://127.0.0.1:$reg" bench/app "$work/layer.bin")
manifest_type=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
  "$manifest_type" "$config" "$layer" $((big_mb << 20)) > "$work/manifest.json"
curl -sSf -X PUT -H "Content-Type: $manifest_type" --data-binary "@$work/manifest.json" \
  "http://127.0.0.1:$reg/v2/bench/app/manifests/latest" -o /dev/null

basic="Basic $(printf alice:secret | base64)"
token() { # port scope-actions -> Bearer header value
  curl -sSf -H "Authorization: $basic" "http://127.0.0.1:$1/token?service=bench&scope=repository:bench/$3:$2" \
    | python3 -c 'import json,sys; print("Bearer " + json.load(sys.stdin)["token"])'
}
# Tokens live 300 s by default, longer than any one measurement that uses them.
bearer_gw=$(token "$gw" pull app)
bearer_ts=$(token "$ts" pull app)

# name|port|auth for reads; the token-server setup's token is re-fetched before each use.
setups=("registry:2, no auth (ceiling)|$reg|"
        "registry:2, its own htpasswd|$reg_htpasswd|$basic"
        "nginx auth_basic recipe|$ngx|$basic"
        "Portcullis gateway, Basic|$gw|$basic"
        "Portcullis gateway, Bearer|$gw|$bearer_gw"
        "Portcullis token server + registry:2, Bearer|$reg_token|$bearer_ts"
        "bare TCP relay (socat), no auth|$relay|")
# The processes whose memory counts for each setup.
servers=("$pid_open" "$pid_htpasswd" "$nginx_pids" "$pid_gateway" "$pid_gateway" "$pid_token_registry $pid_token_server" "")

if [ "$mode" = --hold ]; then
  for s in "${setups[@]}"; do IFS='|' read -r name port _ <<<"$s"; echo "$name: http://127.0.0.1:$port"; done
  echo "GET /v2/bench/app/manifests/latest -H 'Accept: $manifest_type' -H 'Authorization: $basic'; Ctrl-C stops"
  wait "$pid_gateway"
fi

results=$work/results.tsv
: > "$results"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$results"; }
reset_peak() { for pid in $1; do echo 5 > "/proc/$pid/clear_refs"; done; }
peak_kib() { local sum=0; for pid in $1; do sum=$((sum + $(awk '/VmHWM/ {print $2}' "/proc/$pid/status"))); done; echo "$sum"; }
cpu_ticks() { local t=0; for pid in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$t"; }
# Waits (at most 60 s) until the servers have worked off what the last run queued: nginx
# and the htpasswd registry keep running bcrypts for seconds after wrk has stopped.
settle() {
  local before after
  # shellcheck disable=SC2086 # the lists are pids
  for _ in $(seq 120); do
    before=$(cpu_ticks $all_servers); sleep 0.5; after=$(cpu_ticks $all_servers)
    [ $((after - before)) -le 2 ] && return
  done
}
all_servers="$pid_open $pid_htpasswd $nginx_pids $pid_gateway $pid_token_registry $pid_token_server $pid_token_server_rsa"

# 1 and 5: manifest GETs; connections outer, so the setups are measured side by side.
for c in "${connections[@]}"; do
  threads=$(( c >= 16 ? 2 : 1 ))
  for i in "${!setups[@]}"; do
    IFS='|' read -r name port auth <<<"${setups[$i]}"
    [ "$i" -eq 5 ] && auth=$(token "$ts" pull app)
    settle
    [ "$c" -eq 256 ] && [ -n "${servers[$i]}" ] && reset_peak "${servers[$i]}"
    out=$(wrk -t"$threads" -c"$c" -d"${secs}s" --timeout 30s --latency -H "Accept: $manifest_type" \
      ${auth:+-H "Authorization: $auth"} "http://127.0.0.1:$port/v2/bench/app/manifests/latest")
    errors=$(wrk_errors "$out")
    record manifests "$name" "rate@$c" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    record manifests "$name" "p50@$c" "$(ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    record manifests "$name" "p99@$c" "$(ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
    record manifests "$name" "errors@$c" "$errors"
    if [ "$c" -eq 256 ] && [ -n "${servers[$i]}" ]; then
      record memory "$name" peak_kib "$(peak_kib "${servers[$i]}")"
    fi
  done
done

# 2: blobs, pulled five times and pushed three times per setup (median), in rounds that
# visit every setup in turn: the host's load drifts over a minute, and consecutive transfers
# of one setup would carry that drift into its ratio. Pushes go to fresh repositories; all
# pulls come first, as a push leaves the kernel writing 256 MiB back to disk for seconds.
settle
for round in 1 2 3 4 5; do
  for i in "${!setups[@]}"; do
    IFS='|' read -r name port auth <<<"${setups[$i]}"
    case $i in # fresh tokens: the manifest runs may have outlived the first ones
      4) auth=$(token "$gw" pull app) ;;
      5) auth=$(token "$ts" pull app) ;;
    esac
    curl -sSf ${auth:+-H "Authorization: $auth"} -o /dev/null -w "$i %{speed_download}\n" \
      "http://127.0.0.1:$port/v2/bench/app/blobs/$layer"
  done
done > "$work/pulls"
for round in 1 2 3; do
  for i in "${!setups[@]}"; do
    IFS='|' read -r name port auth <<<"${setups[$i]}"
    sync
    repo=push-$i-$round
    case $i in
      4) auth=$(token "$gw" pull,push "$repo") ;;
      5) auth=$(token "$ts" pull,push "$repo") ;;
    esac
    upload "http://127.0.0.1:$port" "bench/$repo" "$work/layer.bin" "$auth" >/dev/null
    echo "$i $(cat "$work/speed")"
  done
done > "$work/pushes"
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for i in "${!setups[@]}"; do
  IFS='|' read -r name _ _ <<<"${setups[$i]}"
  record blobs "$name" pull "$(awk -v i="$i" '$1 == i {print $2}' "$work/pulls" | median)"
  record blobs "$name" push "$(awk -v i="$i" '$1 == i {print $2}' "$work/pushes" | median)"
done

# 3: token issuance (warm credential cache) against raw signing on the same cores, and the
# rate of the cheapest request the same server answers (GET /healthz), the HTTP floor. The
# server's own CPU per request is recorded too: wrk shares the cores, and its share grows
# as the server gets faster.
token_cell() { # name server-pid url [Authorization]
  local before out requests
  before=$(cpu_ticks "$2")
  out=$(wrk -t2 -c16 -d"${secs}s" ${4:+-H "Authorization: $4"} "$3")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  record tokens "$1" issued "$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  record tokens "$1" errors "$(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0)"
  record tokens "$1" server_us "$(awk -v t="$(( $(cpu_ticks "$2") - before ))" -v n="$requests" \
    -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')"
}
settle
token_cell floor "$pid_token_server" "http://127.0.0.1:$ts/healthz"
for algorithm in ES256 RS256; do
  port=$([ $algorithm = ES256 ] && echo "$ts" || echo "$ts_rsa")
  pid=$([ $algorithm = ES256 ] && echo "$pid_token_server" || echo "$pid_token_server_rsa")
  token "$port" pull app >/dev/null
  token_cell "$algorithm" "$pid" \
    "http://127.0.0.1:$port/token?service=bench&scope=repository:bench/app:pull" "$basic"
done
cores=$(nproc)
record tokens ES256 raw "$(openssl speed -seconds 3 -multi "$cores" ecdsap256 2>/dev/null | awk '/nistp256\)/ {v = $(NF-1)} END {print v}')"
record tokens RS256 raw "$(openssl speed -seconds 3 -multi "$cores" rsa2048 2>/dev/null | awk '/^rsa 2048/ {v = $(NF-1)} END {print v}')"

# 4: decisions (criterion), after the servers are done with the cores.
if [ "${CRITERION:-1}" != 0 ]; then
  stop_servers
  stop_nginx
  cargo bench -q -p portcullis --bench decision -- --noplot > "$work/criterion.txt" 2>/dev/null
fi

machine="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)"
versions="$(docker-registry --version 2>/dev/null | head -1); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(openssl version)"
report=$(python3 bench/report.py "$results" "$work/criterion.txt" "$machine" "$versions" "$secs" "$big_mb")
echo "$report"
if [ "$mode" = --record ]; then printf '\n%s\n' "$report" >> docs/benchmarks.md; fi
