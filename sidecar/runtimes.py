"""How to start a runner for each runtime: runtime name -> command line.

A runner serves algomesh.v1.Runner on a Unix socket. Every runner, in every language,
is told what to serve by the same environment variables (docs/runners.md):

    ALGOMESH_RUNNER_SOCKET   the Unix socket path to serve algomesh.v1.Runner on
    ALGOMESH_PATH            the algorithm's folder (also the working directory)
    ALGOMESH_ENTRYPOINT      the manifest's entrypoint, relative to ALGOMESH_PATH
    ALGOMESH_CONCURRENCY     how many applies may run at once
    ALGOMESH_ADDRESS         unix://… the sidecar's outbound socket, for pipes

Interpreted languages have the runner library own the process and load the entrypoint
(Python, Node.js); compiled ones build a program whose main() hands load/apply to the
runner library (Go, Rust, C++, Java — the manifest's ``build`` step makes it at publish
time); ``exec`` wraps any executable that speaks JSON lines on stdin/stdout.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from algomesh._errors import error

from .procs import Child, child_env

ENV_SOCKET = "ALGOMESH_RUNNER_SOCKET"
ENV_PATH = "ALGOMESH_PATH"
ENV_ENTRYPOINT = "ALGOMESH_ENTRYPOINT"
ENV_CONCURRENCY = "ALGOMESH_CONCURRENCY"
ENV_RUNNERS = "ALGOMESH_RUNNERS"


@dataclass(frozen=True)
class RunnerSpec:
    socket: str          # unix socket path the runner must serve on
    path: str            # the algorithm's folder
    entrypoint: str      # from the manifest
    concurrency: int     # calls it should run at once

    def env(self) -> dict[str, str]:
        return {ENV_SOCKET: self.socket, ENV_PATH: self.path, ENV_ENTRYPOINT: self.entrypoint,
                ENV_CONCURRENCY: str(self.concurrency)}


def runners_root() -> Path:
    """The folder holding runners/<language>/ (the libraries that builds and the Node.js
    runner use): $ALGOMESH_RUNNERS, else the checkout this package was installed from."""
    if os.environ.get(ENV_RUNNERS):
        return Path(os.environ[ENV_RUNNERS])
    return Path(__file__).resolve().parent.parent / "runners"


def _python(spec: RunnerSpec) -> list[str]:
    return [sys.executable, "-X", "faulthandler", "-m", "algomesh.runners.python",
            "--socket", spec.socket, "--path", spec.path,
            "--entrypoint", spec.entrypoint, "--concurrency", str(spec.concurrency)]


def _node(spec: RunnerSpec) -> list[str]:
    return ["node", str(runners_root() / "node" / "main.js")]


def _program(spec: RunnerSpec) -> list[str]:
    """Go, Rust, C++: the entrypoint is the executable the build step produced."""
    return [str(Path(spec.path) / spec.entrypoint)]


def _java(spec: RunnerSpec) -> list[str]:
    jar = Path(spec.path) / spec.entrypoint
    # The class-data archive the build made next to the jar (runners/java/build.sh): a 2-3x
    # faster start. A stale or foreign one is ignored by the JVM under -Xshare:auto.
    cds = jar.with_name(jar.name + ".jsa")
    return ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
            *([f"-XX:SharedArchiveFile={cds}"] if cds.is_file() else []), "-jar", str(jar)]


def _exec(spec: RunnerSpec) -> list[str]:
    return [sys.executable, "-m", "algomesh.runners.exec"]


COMMANDS: dict[str, Callable[[RunnerSpec], list[str]]] = {
    "python": _python,
    "node": _node,
    "go": _program,
    "rust": _program,
    "cpp": _program,
    "java": _java,
    "exec": _exec,
}


def runner_command(runtime: str, spec: RunnerSpec) -> list[str]:
    if runtime not in COMMANDS:
        raise error("LAUNCH_FAILED", f"no runner for runtime {runtime!r} on this mesh (have: {', '.join(COMMANDS)})")
    return COMMANDS[runtime](spec)


def start_runner(runtime: str, spec: RunnerSpec, env: dict[str, str]) -> Child:
    """Start a runner process (on a fresh socket path), without waiting for it."""
    Path(spec.socket).unlink(missing_ok=True)
    return Child.start(runner_command(runtime, spec), cwd=spec.path, env=child_env({**env, **spec.env()}))
