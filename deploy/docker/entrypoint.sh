#!/bin/sh
# The image's entry point. `init` prepares the state volume on first start: a signing key,
# the console's session key, and an htpasswd with an `admin` user whose random password is
# printed once. Anything else runs `portcullis` with those arguments.
set -eu
state=${PORTCULLIS_STATE:-/var/lib/portcullis}
if [ "${1:-}" = init ]; then
  # Quietly: keygen's hint about the registry's rootcertbundle is no use in gateway mode.
  if [ ! -f "$state/keys/token.key" ]; then
    portcullis keygen --out "$state/keys" >/dev/null
    echo "created the signing key in $state/keys"
  fi
  if [ ! -f "$state/keys/session.key" ]; then
    portcullis keygen --session --out "$state/keys" >/dev/null
    echo "created the console's session key in $state/keys"
  fi
  if [ ! -s "$state/auth/htpasswd" ]; then
    password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "$password" | portcullis passwd "$state/auth/htpasswd" admin >/dev/null
    echo "created user admin, password: $password"
    echo "add users: docker compose run --rm <portcullis or gateway> passwd $state/auth/htpasswd NAME"
  fi
  exit 0
fi
exec portcullis "$@"
