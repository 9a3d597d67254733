"""Child processes that never outlive their parent."""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "ALGOMESH_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the process that started it dies (even by
    SIGKILL), and exit now if that already happened. A no-op off Linux."""
    expected = os.environ.get(PARENT_ENV)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if expected and str(os.getppid()) != expected:
        sys.exit("algomesh: parent process is gone; exiting")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env[PARENT_ENV] = str(os.getpid())
    if extra:
        env.update(extra)
    return env
