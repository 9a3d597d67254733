#!/usr/bin/env bash
# Set everything up and run the whole test suite (what CI runs: .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/setup.sh
python -m pytest "$@"
