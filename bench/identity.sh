#!/usr/bin/env bash
# Identity sources side by side (issue 14): tokens per second when the same user logs in
# with Basic credentials on every request, from the htpasswd (bcrypt cost 10, remembered),
# from a directory (slapd, remembered for cache_seconds) and with an OIDC workload token as
# the password (verified once, then remembered until it expires). All warm: the figures show
# what a repeat login costs beside signing a token. Not part of the test suite.
# usage: bench/identity.sh          env: SECONDS_EACH (10)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${IDENTITY_DIR:-/tmp/portcullis-identity}
seconds=${SECONDS_EACH:-10}

# shellcheck source=bench/common.sh
. bench/common.sh
require_tools wrk htpasswd curl slapd ldapadd node npm -- wrk apache2-utils curl slapd ldap-utils nodejs npm
bin=$(build_portcullis)
[ -d tests/oidc/node_modules ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

rm -rf "$work"; mkdir -p "$work/db" "$work/policies"
ldap=$(free_port); oidc=$(free_port); gw=$(free_port)

cat > "$work/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $work/slapd.pid
database mdb
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw admin-pw
directory $work/db
CONF
slapd -d 0 -h "ldap://127.0.0.1:$ldap/" -f "$work/slapd.conf" > "$work/slapd.log" 2>&1 & pids+=($!)
wait_port "$ldap"
ldapadd -x -H "ldap://127.0.0.1:$ldap" -D cn=admin,dc=example,dc=org -w admin-pw > /dev/null <<LDIF
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: uid=alice,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: A
userPassword: alice-pw
LDIF

node tests/oidc/provider.mjs "$oidc" "$work/provider.pem" > "$work/provider.log" 2>&1 & pids+=($!)
wait_port "$oidc"
jwt=$(curl -sf -u ci:ci-secret -d "grant_type=client_credentials&repository=acme/app&repository_owner=acme&audience=bench" \
  "http://127.0.0.1:$oidc/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

"$bin" keygen --out "$work/keys" >/dev/null
htpasswd -Bbn -C 10 bob bob-pw > "$work/htpasswd"
printf 'admin-pw\n' > "$work/ldap-password"
cp target/wasm32-unknown-unknown/release/acl.wasm "$work/policies/"
{ config_head "$gw"; cat <<TOML; } > "$work/portcullis.toml"
[identity]
htpasswd = "htpasswd"
[identity.ldap]
url = "ldap://127.0.0.1:$ldap"
insecure_plaintext = true
bind_dn = "cn=admin,dc=example,dc=org"
bind_password_file = "ldap-password"
user_base = "dc=example,dc=org"
member_of_attribute = ""
[[identity.oidc]]
issuer = "http://127.0.0.1:$oidc"
audience = "bench"
username = "gha:{repository}"
insecure_http = true
[[policy]]
name = "acl"
module = "policies/acl.wasm"
settings = { rules = [{ match = {}, actions = ["pull"] }] }
TOML
RUST_LOG=error "$bin" serve --config "$work/portcullis.toml" > "$work/portcullis.log" 2>&1 & pids+=($!)
wait_port "$gw"

url="http://127.0.0.1:$gw/token?service=bench&scope=repository:apps/web:pull"
rate() { # credentials -> tokens/s, after one warm-up login
  local auth; auth="Authorization: Basic $(printf '%s' "$1" | base64 -w0)"
  curl -sf -H "$auth" "$url" -o /dev/null
  wrk -t1 -c4 -d"${seconds}s" -H "$auth" "$url" | awk '/Requests\/sec/ {print $2}'
}
echo "# $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "| source (warm) | tokens/s |"
echo "|---|---|"
echo "| htpasswd, bcrypt cost 10, remembered | $(rate bob:bob-pw) |"
echo "| LDAP (slapd), remembered | $(rate alice:alice-pw) |"
echo "| OIDC token as the password, remembered | $(rate "ci:$jwt") |"
