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
# `playwright install`): install it when missing. The demo needs no browser.
if [ "$(basename "${BASH_SOURCE[1]:-}")" != "demo.sh" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "tests/setup.sh: installing Debian's chromium (for tests/e2e/test_dashboard.py)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
  if ! { "${SUDO[@]}" apt-get update && "${SUDO[@]}" apt-get install -y chromium; } >&2 \
      || ! command -v chromium >/dev/null 2>&1; then
    echo "tests/setup.sh: could not install chromium (apt-get install chromium, as root); the dashboard's" \
         "browser test needs it" >&2
    exit 1
  fi
fi
