#!/usr/bin/env bash
# Set everything up (a virtualenv in .venv with algomesh and its server extra) and run
# the quickstart demo on embedded defaults: `algomesh up`, publish, pipe a few tweets.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/setup.sh
python examples/quickstart/demo.py "$@"
