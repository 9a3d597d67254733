#!/usr/bin/env bash
# examples/clients/setup.sh [node|go|rust|cpp|grpcurl|reflect|all]...  (default: all)
#
# Builds the example clients of docs/clients.md, installing a missing toolchain the way the
# runners do (Debian packages through tests/apt-install.sh). Idempotent and fast when nothing
# changed: builds go to $ALGOMESH_BUILD_CACHE/clients (default ~/.cache/algomesh/build/clients)
# and the languages' own caches (npm's, Go's module and build caches, Cargo's registry).
# Fails (non-zero) when a toolchain or a build fails; nothing is skipped. What it builds:
#
#   node     examples/clients/node/node_modules (npm ci)  -> node examples/clients/node/client.js
#   go       $cache/go/algomesh-client
#   rust     $cache/rust-target/release/algomesh-client
#   cpp      $cache/cpp-build/algomesh-client
#   grpcurl  $cache/bin/grpcurl (go install, from the Go module proxy) for reflection/grpcurl.sh
#   reflect  nothing to build: checks that reflection/reflect.py's Python packages import
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${ALGOMESH_BUILD_CACHE:-$HOME/.cache/algomesh/build}/clients
jobs=$(nproc 2>/dev/null || echo 2)
GRPCURL_VERSION=v1.9.4
apt_install() { bash "$root/tests/apt-install.sh" "$@"; }
mkdir -p "$cache"

# One build of a language at a time (test sessions and shells may run this together).
lock() {
  exec 9>"$cache/.$1.lock"
  flock 9
}

build_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install npm nodejs npm
  fi
  node -e 'process.exit(parseInt(process.versions.node, 10) >= 18 ? 0 : 1)' || {
    echo "the Node.js client needs Node.js 18 or newer (found $(node --version))" >&2; return 1; }
  cd "$here/node"
  local stamp=node_modules/.algomesh-installed want
  want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    npm ci --no-audit --no-fund --loglevel=error --prefer-offline
    echo "$want" > "$stamp"
  fi
  node client.js --help 2>/dev/null || [ $? -eq 2 ]  # loads the protos: exits 2 with the usage
}

build_go() {
  command -v go >/dev/null 2>&1 || { echo "the Go client needs go (the base image has it)" >&2; return 1; }
  cd "$here/go"
  # -mod=readonly: go.mod and go.sum are committed and must be complete.
  GOFLAGS='-mod=readonly -buildvcs=false' go build -o "$cache/go/algomesh-client" .
}

build_rust() {
  command -v cargo >/dev/null 2>&1 || { echo "the Rust client needs cargo (the base image has it)" >&2; return 1; }
  apt_install protoc protobuf-compiler  # build.rs generates the stubs with protoc
  cd "$here/rust"
  CARGO_TARGET_DIR="$cache/rust-target" cargo build --release --locked --quiet
}

build_cpp() {
  bash "$root/runners/cpp/setup.sh"  # g++, CMake, libgrpc++-dev, protobuf-compiler-grpc, nlohmann-json
  local tree="$cache/cpp-build" src="$here/cpp"
  # Every checkout using this cache shares the tree, and CMake refuses one configured from
  # another source folder (a second clone, a moved or deleted one): that tree starts afresh.
  if [ -f "$tree/CMakeCache.txt" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$tree/CMakeCache.txt"; then
    rm -rf "$tree"
  fi
  if [ ! -f "$tree/CMakeCache.txt" ]; then
    cmake -S "$src" -B "$tree" -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build "$tree" -j "$jobs" >/dev/null
}

build_grpcurl() {
  command -v go >/dev/null 2>&1 || { echo "grpcurl is built with go (the base image has it)" >&2; return 1; }
  apt_install jq jq  # grpcurl.sh reads grpcurl's JSON with jq
  local bin="$cache/bin/grpcurl"
  if [ ! -x "$bin" ] || ! go version -m "$bin" 2>/dev/null | grep -q "mod[[:space:]]*github.com/fullstorydev/grpcurl[[:space:]]*$GRPCURL_VERSION"; then
    GOBIN="$cache/bin" GOFLAGS=-buildvcs=false go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  fi
}

build_reflect() {
  python3 -c 'import grpc, grpc_reflection, google.protobuf' || {
    echo "reflect.py needs grpcio, grpcio-reflection and protobuf (pip install grpcio grpcio-reflection protobuf)" >&2
    return 1; }
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(all)
if [ "${targets[0]}" = all ]; then targets=(node go rust cpp grpcurl reflect); fi
for t in "${targets[@]}"; do
  case $t in
    node|go|rust|cpp|grpcurl|reflect) ;;
    *) echo "setup.sh: unknown client $t (node, go, rust, cpp, grpcurl, reflect, all)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  (lock "$t"; "build_$t")
  echo "examples/clients: $t ready ($(($(date +%s) - start)) s)" >&2
done
