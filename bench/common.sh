#!/usr/bin/env bash
# Shared by the bench scripts (sourced, run from the repository root): install missing
# tools from Debian's packages, build the release binary and the policies, start and stop
# background servers on free loopback ports.

# usage: require_tools TOOL... -- PACKAGE...
require_tools() {
  local need=() tools=() packages=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do tools+=("$1"); shift; done
  shift
  packages=("$@")
  for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || need+=("$tool"); done
  if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || { echo "missing: ${need[*]}; install ${packages[*]}" >&2; exit 1; }
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
}

# Builds what the benchmarks run; prints the binary's path.
build_portcullis() {
  rustup target add wasm32-unknown-unknown >/dev/null
  cargo policies -q
  cargo build -q --release -p portcullis
  echo "$(pwd)/target/release/portcullis"
}

# Background servers: append their pids to `pids`; they are stopped on exit.
pids=()
stop_servers() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_servers EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "nothing listens on $1" >&2
  exit 1
}

# COUNT empty repositories NAMESPACE/r00000... as pushes leave them in the registry's
# storage under DIR/data: a big catalog in seconds.
make_repositories() { # DIR NAMESPACE COUNT
  local repositories="$1/data/docker/registry/v2/repositories/$2"
  mkdir -p "$repositories"
  (cd "$repositories" && seq -f 'r%05g/_layers' 0 $(($3 - 1)) | xargs mkdir -p)
}

# The first sections of a bench's Portcullis config: listening on PORT, signing with the
# keys `keygen --out keys` writes beside the config.
config_head() { # PORT
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
[token]
issuer = "portcullis"
service = "bench"
key = "keys/token.key"
certificate = "keys/token.crt"
TOML
}

# Starts Debian's docker-registry with no auth on a free port, storing under DIR/data;
# sets `registry_port`.
start_registry() { # DIR
  registry_port=$(free_port)
  cat > "$1/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $1/data}}
http: {addr: 127.0.0.1:$registry_port, secret: bench}
YML
  docker-registry serve "$1/registry.yml" > "$1/registry.log" 2>&1 & pids+=($!)
  wait_port "$registry_port"
}

# A wrk latency ("812.00us", "1.20ms", "2.01s") in milliseconds.
ms() { awk '{v = $1; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else if (v ~ /s$/) v = v * 1000; printf "%.2f", v}' <<<"$1"; }
# The failed requests in wrk's output: non-2xx answers and socket errors.
wrk_errors() { awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$1"; }
