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

scratch=$(mktemp -d "${TMPDIR:-/tmp}/algomesh-tweets-XXXXXX")
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

python examples/tweets/run.py --address "$address" "$@"
echo
echo "=== The same tweets, sentiment stage swapped: --sentiment 'tweets/sentiment/2.*' ==="
python examples/tweets/run.py --address "$address" --no-publish --sentiment 'tweets/sentiment/2.*' "$@"
