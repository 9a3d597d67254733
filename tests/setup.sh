# Sourced by examples/demo.sh and tests/run.sh: a Python >= 3.11 virtualenv in .venv with
# algomesh installed editable, activated. Idempotent; pip only runs when pyproject changes.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "algomesh needs Python 3.11 or newer (found: $("$PY" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.algomesh-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e '.[test]'
  touch "$stamp"
fi
