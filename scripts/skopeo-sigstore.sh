#!/usr/bin/env bash
# A skopeo that signs and verifies cosign's key-based signatures, for the signature tests:
# Debian 12's skopeo is built with sigstore disabled (a Debian patch), Debian 13's (1.18) is
# not. Downloads Debian 13's skopeo and the few libraries it needs newer than Debian 12's
# (glibc 2.38 and its loader, gpgme and friends) from the mirror this machine's apt already
# uses, unpacks them into DEST (nothing is installed system-wide) and writes DEST/skopeo, a
# wrapper that runs it with that loader and those libraries.
# usage: scripts/skopeo-sigstore.sh DEST
set -euo pipefail
dest=$(realpath -m "${1:?usage: scripts/skopeo-sigstore.sh DEST}")
[ -x "$dest/skopeo" ] && "$dest/skopeo" --version >/dev/null 2>&1 && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}' || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
mkdir -p "$work/sources" "$work/lists/partial" "$work/cache/archives/partial" "$dest"
cat > "$work/sources/trixie.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# A private apt state: the machine's own sources and package database stay untouched.
apt=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/sources"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
  -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
apt-get "${apt[@]}" -qq update
(cd "$work" && apt-get "${apt[@]}" -qq download skopeo libc6 libgpgme11t64 libassuan9 libgpg-error0 libsqlite3-0)
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest/root"; done
lib="$dest/root/usr/lib/x86_64-linux-gnu"
cat > "$dest/skopeo" <<WRAPPER
#!/bin/sh
# Debian 13's skopeo with Debian 13's loader and libraries (scripts/skopeo-sigstore.sh).
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$dest/root/usr/bin/skopeo" "\$@"
WRAPPER
chmod +x "$dest/skopeo"
"$dest/skopeo" --version
