#!/usr/bin/env bash
# The polyglot pipeline from a fresh clone: Node.js cleans -> Go tokenizes -> Rust
# normalises -> Python scores -> Java labels -> bash fingerprints -> C++ formats, each stage
# piping to the next from inside the algorithm.
#
#   bash examples/polyglot/demo.sh [TEXT ...]
#
# Sets up Python (.venv, tests/setup.sh) and the six other toolchains (runners/*/setup.sh:
# apt-get for what is missing, npm ci, go mod download), starts `algomesh up` on embedded
# defaults in a temporary data directory, publishes the seven stages (the compiled ones
# build now; the first build on a machine takes minutes, later ones seconds), runs
# examples/polyglot/run.py against it, and stops the mesh. PORT=7700 picks the port
# (default: any free one).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/setup.sh
for language in node go rust java cpp exec; do
  bash "runners/$language/setup.sh"
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/algomesh-polyglot-XXXXXX")
log=$scratch/up.log
python -m algomesh.cli up --port "${PORT:-0}" --data-dir "$scratch/data" >"$log" 2>&1 &
up=$!
stop() {
  if kill -0 "$up" 2>/dev/null; then
    kill -TERM "$up"
    wait "$up" || true
    echo "Mesh stopped."
  fi
  rm -rf "$scratch"
}
trap stop EXIT

echo "Starting the mesh (algomesh up --data-dir $scratch/data):"
for _ in $(seq 600); do
  if grep -q "Ctrl-C to stop" "$log"; then break; fi
  if ! kill -0 "$up" 2>/dev/null; then
    cat "$log" >&2
    echo "algomesh up exited before it was ready" >&2
    exit 1
  fi
  sleep 0.1
done
if ! grep -q "Ctrl-C to stop" "$log"; then
  cat "$log" >&2
  echo "algomesh up was not ready after 60 s" >&2
  exit 1
fi
address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
ALGOMESH_API_KEY=$(sed -n 's/.*admin key \(amk_[^ ]*\).*/\1/p' "$log" | head -n 1)
export ALGOMESH_API_KEY
sed -e 's/\(admin key amk_.\{16\}\)[^ ]*/\1…/' "$log" | sed 's/^/  /'   # the key is in use; no need to show it all
echo

python examples/polyglot/run.py --address "$address" "$@"
