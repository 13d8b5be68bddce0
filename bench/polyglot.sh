#!/usr/bin/env bash
# What a policy costs by language (issue 22): the namespace-owner policy in Rust, Python
# (componentize-py) and JavaScript (componentize-qjs), each
# - its size, and the smallest `memory_mb` it decides in;
# - the time `policy eval` takes to load it and decide once: cold (compiled now) and warm
#   (compiled code from the cache), and its peak RSS warm;
# - one decision on a reused instance and on a fresh one (the criterion bench `decision`);
# then the gateway's start-to-ready (exec to its "listening" line) with every shipped Rust
# policy, and with the Python and JavaScript twins added, cold (empty [cache] dir) and warm.
# usage: bench/polyglot.sh   (RUNS, default 5: starts per case)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh
require_tools hyperfine -- hyperfine
portcullis=$(build_portcullis)
bash scripts/polyglot.sh >/dev/null
runs=${RUNS:-5}
work=$(mktemp -d)
trap 'stop_servers; rm -rf "$work"' EXIT
modules=(rust:target/wasm32-unknown-unknown/release/namespace_owner.wasm
  python:target/polyglot/namespace_owner_py.wasm
  javascript:target/polyglot/namespace_owner_js.wasm)
eval_args=(--account alice --scope "repository:alice/app:pull,push")

echo "## per language ($(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
for entry in "${modules[@]}"; do
  language=${entry%%:*} module=${entry#*:}
  size=$(stat -c %s "$module")
  memory=1
  until XDG_CACHE_HOME="$work/warm" "$portcullis" policy eval "$module" "${eval_args[@]}" \
    --memory-mb "$memory" >/dev/null 2>&1; do memory=$((memory + 1)); done
  rss=$( { /usr/bin/time -f %M env XDG_CACHE_HOME="$work/warm" "$portcullis" policy eval \
    "$module" "${eval_args[@]}" >/dev/null; } 2>&1 | tail -1)
  echo "$language: $((size / 1024)) KiB, smallest memory_mb $memory, policy eval peak RSS warm $((rss / 1024)) MiB"
  hyperfine -N --style none --runs "$runs" --export-markdown "$work/$language.md" \
    --prepare "rm -rf $work/cold" \
    -n "$language cold" "env XDG_CACHE_HOME=$work/cold $portcullis policy eval $module ${eval_args[*]}" \
    -n "$language warm" "env XDG_CACHE_HOME=$work/warm $portcullis policy eval $module ${eval_args[*]}" \
    >/dev/null
  tail -n 2 "$work/$language.md"
done

cargo bench -q -p portcullis --bench decision -- "namespace-owner" 2>/dev/null \
  | grep -E "^namespace-owner|time:" | paste - - | awk '{print "decision:", $0}'

# Start-to-ready: a config with every shipped Rust policy, then the twins added.
mkdir -p "$work/gw" && cd "$work/gw"
"$portcullis" keygen --out keys >/dev/null
mkdir -p policies
for crate in acl namespace_owner read_only protected_tags immutable_tags signed_images; do
  cp "$OLDPWD/target/wasm32-unknown-unknown/release/$crate.wasm" policies/
done
cp "$OLDPWD"/target/polyglot/*.wasm policies/
start_config() { # PORT WITH_TWINS
  config_head "$1"
  cat <<TOML
[cache]
dir = "cache"
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings = { rules = [{ match = { account = "/.+/" }, actions = ["pull"] }] }
[[policy]]
name = "namespace-owner"
module = "policies/namespace_owner.wasm"
[[policy]]
name = "read-only"
module = "policies/read_only.wasm"
[[policy]]
name = "protected-tags"
module = "policies/protected_tags.wasm"
settings = { tags = ["v*"], groups = ["release"] }
[[policy]]
name = "immutable-tags"
module = "policies/immutable_tags.wasm"
settings = { rules = [{ repositories = "**", tags = ["v*"] }] }
[[policy]]
name = "signed-images"
module = "policies/signed_images.wasm"
settings = { rules = [{ repositories = "prod/**", keys = ["release"] }] }
TOML
  if [ "$2" = twins ]; then
    printf '[[policy]]\nname = "python"\nmodule = "policies/namespace_owner_py.wasm"\n'
    printf '[[policy]]\nname = "javascript"\nmodule = "policies/namespace_owner_js.wasm"\n'
  fi
}
# Milliseconds from exec to the "listening" line.
start_once() { # CONFIG
  local started now line
  started=$(date +%s%N)
  coproc SERVE { exec "$portcullis" serve --config "$1" 2>serve.log; }
  local pid=$SERVE_PID
  read -r line <&"${SERVE[0]}" || true
  now=$(date +%s%N)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [[ $line == *listening* ]] || { echo "no listening line:" >&2; cat serve.log >&2; exit 1; }
  echo $(((now - started) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for set in rust twins; do
  start_config "$(free_port)" "$set" >"$set.toml"
  cold=$(for _ in $(seq "$runs"); do rm -rf cache; start_once "$set.toml"; done | median)
  warm=$(for _ in $(seq "$runs"); do start_once "$set.toml"; done | median)
  echo "start-to-ready, $set policies: cold ${cold} ms, warm ${warm} ms (median of $runs)"
done
