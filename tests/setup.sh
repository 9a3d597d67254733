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
# The dashboard's browser test drives Debian's chromium through Playwright (never
# `playwright install`). The demo needs no browser and no other language's toolchain.
if [ "$(basename "${BASH_SOURCE[1]:-}")" != "demo.sh" ]; then
  bash tests/apt-install.sh chromium chromium
  # Each runner installs what it needs to build and run (runners/<language>/setup.sh).
  for setup in runners/*/setup.sh; do
    if [ -f "$setup" ]; then bash "$setup"; fi
  done
fi
