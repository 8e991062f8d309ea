#!/usr/bin/env bash
# The README's main command: a three-node spegel-ts cluster on this machine (as root), each node
# with its own containerd, pulling an image that only node 1 holds while its registry is unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the demo starts private containerd instances and must run as root" >&2
  exit 1
fi
if ! command -v containerd >/dev/null 2>&1 || ! command -v ctr >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q containerd
fi
[ -x node_modules/.bin/node ] || npm ci --no-audit --no-fund
npm run build --silent
exec node_modules/.bin/node dist/demo/demo.js
