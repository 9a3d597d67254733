#!/bin/sh
# The build step of a Java algorithm (its algomesh.toml: build = 'sh "$ALGOMESH_RUNNERS/java/build.sh"'):
# 1. installs this runner library and the algorithms' parent POM into the Maven repository
#    under $ALGOMESH_BUILD_CACHE/java/m2 (once per change of the runner's sources);
# 2. packages the algorithm in the current folder, whose pom.xml writes the runnable jar to
#    the manifest's entrypoint (docs/runners.md, "Java");
# 3. records the classes the runner loads to serve a first call in a class-data archive next
#    to the jar (ENTRYPOINT.jsa), from a training run that never calls load() or apply();
#    the sidecar starts java with it (sidecar/runtimes.py), which makes a cold start 2-3x
#    faster. Recorded with the jar's path relative to this folder, so it survives the move
#    from the staging folder to the published one.
set -eu
runners=${ALGOMESH_RUNNERS:?ALGOMESH_RUNNERS is not set (the mesh sets it for build steps)}
cache=${ALGOMESH_BUILD_CACHE:?ALGOMESH_BUILD_CACHE is not set (the mesh sets it for build steps)}/java
here=$runners/java
mkdir -p "$cache"
# Maven's own JVM starts faster with the quick compiler only.
export MAVEN_OPTS="${MAVEN_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto}"
mvn() { command mvn -B -q --no-transfer-progress -Dmaven.repo.local="$cache/m2" "$@"; }

# What the installed library was built from: its sources, its POMs and the protos.
stamp=$( (cd "$here" && find . -path ./runner/target -prune -o -type f \( -name '*.java' -o -name pom.xml \) -print \
            | LC_ALL=C sort | xargs sha256sum;
          cd "$here/../../proto" 2>/dev/null && find . -name '*.proto' | LC_ALL=C sort | xargs sha256sum) \
         | sha256sum | cut -d' ' -f1)
# One install at a time (publishes may build concurrently), and none while an algorithm
# builds against the installed library: exclusive to install, then shared to build.
exec 9>"$cache/.install.lock"
flock 9
if [ "$(cat "$cache/runner.stamp" 2>/dev/null)" != "$stamp" ]; then
  mvn -Dalgomesh.build.dir="$cache/runner" -Dalgomesh.proto.dir="$here/../../proto" -f "$here/pom.xml" install
  echo "$stamp" > "$cache/runner.stamp"
fi
flock -s 9

mvn package

entrypoint=$(sed -n 's/^entrypoint[[:space:]]*=[[:space:]]*["'"'"']\([^"'"'"']*\)["'"'"'].*/\1/p' algomesh.toml | head -n 1)
if [ -z "$entrypoint" ] || [ ! -f "$entrypoint" ]; then
  echo "build.sh: the pom.xml did not write the manifest's entrypoint (${entrypoint:-none}): set <algomesh.entrypoint>" >&2
  exit 1
fi
rm -f "$entrypoint.jsa"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# The same flags as the sidecar's command (an archive is only used by a JVM started like it).
if ! env -u ALGOMESH_PARENT_PID ALGOMESH_CDS_TRAINING=1 ALGOMESH_RUNNER_SOCKET="$dir/train.sock" \
     java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ArchiveClassesAtExit="$entrypoint.jsa" \
          -Xlog:cds=off -Xlog:cds+dynamic=off -jar "$entrypoint" >"$dir/train.log" 2>&1; then
  cat "$dir/train.log" >&2
  echo "build.sh: the training run of $entrypoint failed (does its main() call Runner.serve?)" >&2
  exit 1
fi
if [ ! -s "$entrypoint.jsa" ]; then
  cat "$dir/train.log" >&2
  echo "build.sh: warning: no class-data archive was written; instances will start slower" >&2
fi
