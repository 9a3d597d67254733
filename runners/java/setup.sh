#!/usr/bin/env bash
# The Java runner's toolchain: a JDK (17+) and Maven, from Debian when missing. The libraries
# (grpc-java, Netty, protobuf-java, protoc, Jackson) come from Maven Central at build time,
# into $ALGOMESH_BUILD_CACHE/java/m2 (runners/java/build.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/apt-install.sh javac openjdk-17-jdk-headless
bash tests/apt-install.sh mvn maven
v=$(javac -version 2>&1 | sed -E 's/^javac ([0-9]+).*/\1/')
if [ "${v:-0}" -lt 17 ]; then
  echo "the Java runner needs JDK 17 or newer (found: $(javac -version 2>&1))" >&2
  exit 1
fi
