#!/bin/sh
# One-time host set-up for `vnode up --bridge`: a thin wrapper over `vnode bridge create`,
# which plans the NetworkManager (and firewalld) commands and runs them.
#   sh install/create-bridge.sh --iface eno1 [--name br0] [--zone ZONE] [--dry-run]
set -eu

# The repository's own environment first (make venv), then whatever vnode is on PATH.
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$here/.venv/bin/vnode" ]; then
    exec "$here/.venv/bin/vnode" bridge create "$@"
fi
if command -v vnode >/dev/null 2>&1; then
    exec vnode bridge create "$@"
fi
echo "create-bridge: vnode is not installed (make venv, or pip install .)" >&2
exit 1
