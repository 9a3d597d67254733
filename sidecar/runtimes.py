"""How to start a runner for each runtime: runtime name -> command line.

A runner serves algomesh.v1.Runner on the Unix socket it is given. Languages other
than Python arrive with the polyglot runners (runners/<language>/).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from algomesh._errors import error


@dataclass(frozen=True)
class RunnerSpec:
    socket: str          # unix socket path the runner must serve on
    path: str            # the algorithm's folder
    entrypoint: str      # from the manifest
    concurrency: int     # calls it should run at once


def _python(spec: RunnerSpec) -> list[str]:
    return [sys.executable, "-X", "faulthandler", "-m", "algomesh.runners.python",
            "--socket", spec.socket, "--path", spec.path,
            "--entrypoint", spec.entrypoint, "--concurrency", str(spec.concurrency)]


COMMANDS: dict[str, Callable[[RunnerSpec], list[str]]] = {
    "python": _python,
}


def runner_command(runtime: str, spec: RunnerSpec) -> list[str]:
    if runtime not in COMMANDS:
        raise error("LAUNCH_FAILED", f"no runner for runtime {runtime!r} on this mesh (have: {', '.join(COMMANDS)})")
    return COMMANDS[runtime](spec)
