"""The manifest's ``build`` step, run at publish time in the unpacked folder.

Compiled runners (Go, Rust, C++, Java) declare how to turn the published sources into
the entrypoint, e.g. ``build = "go build -o algorithm ."``. The command runs with
``sh -c`` in the algorithm's folder before the version is recorded, so a version that
does not build is never published: the publisher gets ``BUILD_FAILED`` with the end of
the compiler's output as the error's stack trace.

The build sees ``ALGOMESH_RUNNERS`` (the runner libraries, runners/<language>/) and
``ALGOMESH_BUILD_CACHE`` (a folder kept between builds: Cargo's target dir, Maven's
repository, Go's build cache may live there, so the second build of a language is fast).
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

from algomesh._errors import error
from algomesh.sidecar.procs import child_env
from algomesh.sidecar.runtimes import ENV_RUNNERS, runners_root

log = logging.getLogger("algomesh.build")

ENV_CACHE = "ALGOMESH_BUILD_CACHE"
TIMEOUT = float(os.environ.get("ALGOMESH_BUILD_TIMEOUT", "1200"))
OUTPUT_BYTES = 256 * 1024  # what is kept of a build's output (its end)


def build_cache() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "algomesh" / "build"


def run_build(folder: Path, command: str, *, name: str, version: str, timeout: float = TIMEOUT) -> None:
    if not command.strip():
        return
    cache = build_cache()
    cache.mkdir(parents=True, exist_ok=True)
    env = child_env({ENV_RUNNERS: str(runners_root()), ENV_CACHE: str(cache),
                     "ALGOMESH_ALGORITHM": name, "ALGOMESH_VERSION": version})
    log.info("building %s %s: %s", name, version, command)
    _touch(folder)
    try:
        done = subprocess.run(["sh", "-c", command], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.output or b"")[-OUTPUT_BYTES:].decode("utf-8", "replace")
        raise error("BUILD_FAILED", f"the build step of {name} {version} ran past {timeout:.0f}s: {command}",
                    stacktrace=out, algorithm=name, version=version) from None
    except OSError as exc:
        raise error("BUILD_FAILED", f"the build step of {name} {version} could not run: {exc}",
                    algorithm=name, version=version) from None
    out = done.stdout[-OUTPUT_BYTES:].decode("utf-8", "replace")
    if done.returncode != 0:
        log.warning("build of %s %s failed (exit %d):\n%s", name, version, done.returncode, out)
        raise error("BUILD_FAILED", f"the build step of {name} {version} exited with code {done.returncode}: "
                    f"{command}", stacktrace=out, algorithm=name, version=version)
    log.info("built %s %s", name, version)


def _touch(folder: Path) -> None:
    """Give the unpacked files the time of the build. An archive's files all carry mtime 0
    (it packs to the same bytes every time), and tools that judge freshness by mtime against
    a cache kept between builds (Cargo's shared target dir: its fingerprints of a path package
    do not depend on where the package is) would take the outputs of an earlier build of the
    same package for those of these sources."""
    now = time.time()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            os.utime(os.path.join(root, name), (now, now), follow_symlinks=False)
