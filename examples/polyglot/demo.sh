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

MESH_NAME=polyglot source examples/mesh.sh
echo

python examples/polyglot/run.py --address "$address" "$@"
