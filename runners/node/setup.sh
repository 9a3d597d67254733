#!/usr/bin/env bash
# runners/node/setup.sh (run by tests/setup.sh): Node.js, and node_modules exactly as
# package-lock.json says (npm ci) when they are missing or stale. Idempotent and fast
# when nothing changed; fails (non-zero) when Node.js or the packages cannot be installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  bash "$here/../../tests/apt-install.sh" npm nodejs npm
fi
if ! node -e 'process.exit(parseInt(process.versions.node, 10) >= 18 ? 0 : 1)'; then
  echo "the Node.js runner needs Node.js 18 or newer (found $(node --version))" >&2
  exit 1
fi
stamp=node_modules/.algomesh-installed
want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
# The runner's modules load (protos included).
node -e "require('./lib/wire'); require('./index.js')"
