#!/usr/bin/env bash
# Runs an example setup without Docker: registry:2 (Debian's docker-registry, when installed)
# with Portcullis as its token server (default), or behind Portcullis in gateway mode
# (`scripts/run.sh gateway`), also with the people of an LDAP directory
# (`scripts/run.sh gateway-ldap`, after pointing its config at the directory). Creates what
# is missing on first start: the wasm target, the policies, a signing key, the console's
# session key and an `admin` user with a random password.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-token-server}
case "$mode" in
  token-server | gateway | gateway-ldap) dir=examples/$mode ;;
  *) echo "usage: scripts/run.sh [token-server|gateway|gateway-ldap]" >&2; exit 2 ;;
esac

rustup target add wasm32-unknown-unknown >/dev/null
cargo policies
cargo build --release -p portcullis
bin=target/release/portcullis

[ -f "$dir/keys/token.key" ] || "$bin" keygen --out "$dir/keys"
[ -f "$dir/keys/session.key" ] || "$bin" keygen --session --out "$dir/keys"
if [ ! -s "$dir/auth/htpasswd" ]; then
  password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
  echo "$password" | "$bin" passwd "$dir/auth/htpasswd" admin
  echo "created user admin, password: $password (add users: $bin passwd $dir/auth/htpasswd NAME)"
fi
if [ "$mode" = gateway-ldap ] && [ ! -s "$dir/ldap-password" ]; then
  echo "$dir/ldap-password is missing: write the service account's password into it, and point" >&2
  echo "[identity.ldap] in $dir/portcullis.toml at your directory (url, ca)" >&2
  exit 1
fi
"$bin" check --config "$dir/portcullis.toml"

if command -v docker-registry >/dev/null; then
  docker-registry serve "$dir/registry.yml" > "$dir/registry.log" 2>&1 &
  registry=$!
  trap 'kill $registry 2>/dev/null' EXIT
  echo "registry:2 started from $dir/registry.yml (log: $dir/registry.log)"
else
  echo "docker-registry is not installed: start registry:2 yourself with $dir/registry.yml"
fi
case "$mode" in
  gateway) echo "clients use the gateway: skopeo login --tls-verify=false -u admin 127.0.0.1:5000"
    echo "the console: http://127.0.0.1:5000/ui/" ;;
  gateway-ldap) echo "clients use the gateway: skopeo login --tls-verify=false -u <directory user> 127.0.0.1:5000" ;;
  *) echo "the console: http://127.0.0.1:5001/ui/" ;;
esac
"$bin" serve --config "$dir/portcullis.toml"
