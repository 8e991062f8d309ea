#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine (as root): installs what the tests need
# when it is missing, then installs npm packages, builds, type-checks and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v ctr >/dev/null 2>&1 || missing+=(containerd)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
# The upstream registry of the pull-storm test (test/integration/pull-storm.test.ts), which skips
# without it.
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
# The heap trimmer's glibc addon (src/native/malloc-trim.c), compiled by npm run build.
command -v cc >/dev/null 2>&1 || missing+=(gcc)
[ -f /usr/include/malloc.h ] || missing+=(libc6-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: the tests need: ${missing[*]} (install them as root: apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # No recommends: prometheus would pull in node-exporter, and nothing here needs the others.
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The package starts a registry service on :5000 where systemd runs; the tests start registries
  # of their own on free ports and need none.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi
if ! command -v kubectl >/dev/null 2>&1; then
  # Debian 12 only packages kubectl 1.20, whose kustomize cannot render components.
  echo "warning: kubectl not found: the manifest and image tests will be skipped (install kubectl >= 1.27)" >&2
fi
if [ "$(id -u)" != 0 ]; then
  echo "warning: not root: integration tests that start containerd will be skipped" >&2
fi

npm ci --no-audit --no-fund
npm run build
npm test
