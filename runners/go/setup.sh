#!/usr/bin/env bash
# The Go runner's toolchain (run by tests/setup.sh): Go is in the base image; fetch the
# runner library's modules and compile them once, so an algorithm's build step is fast.
# Idempotent: a second run finds everything in Go's module and build caches.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v go >/dev/null 2>&1; then
  echo "runners/go/setup.sh: go is not installed (the base image has Go 1.26)" >&2
  exit 1
fi
go mod download
go build ./...
