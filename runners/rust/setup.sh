#!/usr/bin/env bash
# The Rust runner's toolchain (run by tests/setup.sh): cargo and rustc >= 1.88 are in the
# base image. Nothing else to install: the generated gRPC code is committed (no protoc),
# and an algorithm's build step fetches its crates from crates.io itself.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
  echo "runners/rust/setup.sh: cargo/rustc are not installed (the base image has Rust 1.95)" >&2
  exit 1
fi
version=$(rustc --version | awk '{print $2}')
if ! printf '1.88.0\n%s\n' "$version" | sort -V -C; then
  echo "runners/rust/setup.sh: rustc $version is older than 1.88 (tonic 0.14 needs 1.88)" >&2
  exit 1
fi
