#!/usr/bin/env bash
# tests/apt-install.sh COMMAND PACKAGE...: install Debian PACKAGEs unless COMMAND (a file
# or a program on PATH) is already there. Used by tests/setup.sh and runners/*/setup.sh,
# so every toolchain CI needs is installed by the project's own files.
set -euo pipefail
check=$1; shift
have() { [ -e "$check" ] || command -v "$check" >/dev/null 2>&1; }
have && exit 0
echo "apt-get install $* (for $check)" >&2
if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
stamp=/tmp/.algomesh-apt-updated
if [ ! -f "$stamp" ]; then
  "${SUDO[@]}" apt-get update -q >&2 && touch "$stamp"
fi
if ! DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" >&2 || ! have; then
  echo "could not install $* (apt-get install, as root); $check is still missing" >&2
  exit 1
fi
