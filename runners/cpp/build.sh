#!/bin/sh
# The build step of a C++ algorithm (its algomesh.toml: build = 'sh "$ALGOMESH_RUNNERS/cpp/build.sh"'):
# 1. builds and installs this runner library under $ALGOMESH_BUILD_CACHE/cpp/runner (once
#    per change of its sources, the protos or the compiler);
# 2. configures and builds the algorithm's CMake project in the current folder, whose
#    algomesh_algorithm(...) target is written at the manifest's entrypoint
#    (docs/runners.md, "C++"). Its build tree is a scratch folder, removed afterwards.
set -eu
runners=${ALGOMESH_RUNNERS:?ALGOMESH_RUNNERS is not set (the mesh sets it for build steps)}
cache=${ALGOMESH_BUILD_CACHE:?ALGOMESH_BUILD_CACHE is not set (the mesh sets it for build steps)}/cpp
here=$runners/cpp
proto=$runners/../proto
jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p "$cache"

# What the installed library was built from: its sources, the protos, the compiler, gRPC.
stamp=$( (cd "$here" && find . -path ./build -prune -o -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.proto' \
            -o -name 'CMakeLists.txt' -o -name '*.cmake.in' \) -print | LC_ALL=C sort | xargs sha256sum;
          cd "$proto" && find . -name '*.proto' | LC_ALL=C sort | xargs sha256sum;
          c++ --version | head -n 1; pkg-config --modversion grpc++ protobuf 2>/dev/null || true) \
         | sha256sum | cut -d' ' -f1)
# One install at a time (publishes may build concurrently), and none while an algorithm
# builds against the installed library: exclusive to install, then shared to build.
exec 9>"$cache/.install.lock"
flock 9
if [ "$(cat "$cache/runner.stamp" 2>/dev/null)" != "$stamp" ]; then
  # a fresh build tree: one configured from another checkout's sources is refused by CMake
  rm -rf "$cache/runner" "$cache/runner.stamp" "$cache/runner-build"
  cmake -S "$here" -B "$cache/runner-build" -DCMAKE_BUILD_TYPE=Release \
        -DALGOMESH_PROTO_DIR="$proto" -DCMAKE_INSTALL_PREFIX="$cache/runner" >/dev/null
  cmake --build "$cache/runner-build" -j "$jobs"
  cmake --install "$cache/runner-build" >/dev/null
  echo "$stamp" > "$cache/runner.stamp"
fi
flock -s 9

entrypoint=$(sed -n 's/^entrypoint[[:space:]]*=[[:space:]]*["'"'"']\([^"'"'"']*\)["'"'"'].*/\1/p' algomesh.toml | head -n 1)
if [ -z "$entrypoint" ]; then
  echo "build.sh: algomesh.toml names no entrypoint" >&2
  exit 1
fi
mkdir -p "$cache/tmp"
tree=$(mktemp -d "$cache/tmp/build.XXXXXX")
trap 'rm -rf "$tree"' EXIT
cmake -S . -B "$tree" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$cache/runner" \
      -DALGOMESH_ENTRYPOINT="$entrypoint" >/dev/null
cmake --build "$tree" -j "$jobs"
if [ ! -x "$entrypoint" ]; then
  echo "build.sh: the build did not write the entrypoint $entrypoint (use algomesh_algorithm(...) in CMakeLists.txt)" >&2
  exit 1
fi
