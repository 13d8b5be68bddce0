#!/usr/bin/env bash
# Decisions replayed per second by `portcullis policy replay` with the shipped acl (50 rules,
# the last ones matching most requests): a week of a busy registry's decision log is
# millions of lines. Makes a log of DECISIONS lines (default 1 000 000) over 2 000 accounts
# and 5 000 repositories, then replays it twice: against the set that wrote it (nothing
# changes) and against a candidate that narrows one namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
bin=$(build_portcullis)
decisions=${DECISIONS:-1000000}
work=$(mktemp -d)
trap 'stop_servers; rm -rf "$work"' EXIT

python3 - "$work" "$decisions" <<'EOF'
import json, random, sys
work, count = sys.argv[1], int(sys.argv[2])
rules = [{"match": {"account": f"nobody{i}"}, "actions": ["pull"]} for i in range(47)]
rules += [
    {"match": {"group": "admins"}, "actions": ["*"]},
    {"match": {"account": "/.+/", "name": "${account}/**"}, "actions": ["pull", "push"]},
    {"match": {"account": "/.+/", "name": "shared/**"}, "actions": ["pull"]},
]
json.dump({"rules": rules}, open(f"{work}/acl.json", "w"))
narrowed = [{"match": {"name": "shared/r0*"}, "actions": []}] + rules
json.dump({"rules": narrowed}, open(f"{work}/candidate.json", "w"))
random.seed(7)
with open(f"{work}/decisions.jsonl", "w") as out:
    for n in range(count):
        account = f"user{random.randrange(2000)}"
        repo = random.choice([f"{account}/app{random.randrange(3)}",
                              f"shared/r{random.randrange(5000):04d}"])
        asked = ["pull", "push"] if random.random() < 0.3 else ["pull"]
        granted = asked if repo.startswith(account) else ["pull"]
        out.write(json.dumps({
            "id": f"{n:024x}", "time": "2026-12-04T12:00:00.000Z", "source": "gateway",
            "account": account, "authenticated": True, "groups": [], "account_source": "htpasswd",
            "claims": [], "client_ip": "10.0.0.1", "scope": f"repository:{repo}:{','.join(asked)}",
            "class": None, "service": "registry.local",
            "operation": {"method": "GET", "kind": "manifest", "tag": "latest", "digest": None,
                          "mount_from": None},
            "granted": granted, "answers": [], "remembered": False, "latency_us": 5}) + "\n")
EOF

acl=$(pwd)/target/wasm32-unknown-unknown/release/acl.wasm
for settings in acl candidate; do
  cat > "$work/$settings.toml" <<EOF
[token]
issuer = "portcullis"
service = "registry.local"
key = "k.pem"
certificate = "c.pem"
[[policy]]
name = "acl"
module = "$acl"
settings_file = "$settings.json"
EOF
done

for settings in acl candidate; do
  start=$(date +%s.%N)
  "$bin" policy replay --allow-widening --log "$work/decisions.jsonl" --config "$work/$settings.toml" >"$work/report"
  end=$(date +%s.%N)
  head -1 "$work/report"
  python3 -c "d=$decisions; s=$end-$start; print(f'{d} decisions in {s:.2f} s: {d/s:,.0f} decisions/s')"
done
