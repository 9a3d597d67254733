#!/usr/bin/env bash
# The tweet sentiment pipeline from a fresh clone: ingest -> clean -> lemmatize (simplemma)
# -> sentiment (VADER), then the same tweets with the sentiment stage swapped for
# TextBlob's pattern lexicon (one name/version changed: --sentiment 'tweets/sentiment/2.*').
#
#   bash examples/tweets/demo.sh [FILE]      # default: examples/tweets/tweets.jsonl
#
# Sets up Python (.venv, tests/setup.sh; vaderSentiment and simplemma come with it, their
# lexicons inside the wheels: nothing is downloaded at run time), starts `algomesh up` on
# embedded defaults in a temporary data directory, runs examples/tweets/run.py against it
# twice, and stops the mesh. PORT=7700 picks the port (default: any free one).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/setup.sh

MESH_NAME=tweets source examples/mesh.sh
echo

python examples/tweets/run.py --address "$address" "$@"
echo
echo "=== The same tweets, sentiment stage swapped: --sentiment 'tweets/sentiment/2.*' ==="
python examples/tweets/run.py --address "$address" --no-publish --sentiment 'tweets/sentiment/2.*' "$@"
