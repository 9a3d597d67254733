#!/usr/bin/env bash
# runners/exec/setup.sh (run by tests/setup.sh). The exec runner itself is Python (the
# algomesh package); what this installs is for the conformance algorithm, a bash script
# (tests/conformance/algorithms/exec/conformance.sh): jq for JSON, coreutils' base64 and
# perl (perl-base is always there on Debian) for bytes. Fails when one cannot be had.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../../tests/apt-install.sh" jq jq
for tool in bash base64 perl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "the exec conformance algorithm needs $tool, which is missing" >&2
    exit 1
  fi
done
