"""Child processes that never outlive their parent."""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
from typing import Any

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


# Credentials of the control plane's own user never reach an algorithm's process.
SECRET_ENV = ("ALGOMESH_API_KEY", "CONSUL_HTTP_TOKEN")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env[PARENT_ENV] = str(os.getpid())
    if extra:
        env.update(extra)
    return env


class Child:
    """A subprocess started without fork(), awaited without blocking the event loop.

    uvloop (libuv) spawns with fork(), which runs gRPC's atfork handlers in a process
    full of gRPC threads and can crash the child before it execs. CPython's subprocess
    uses vfork() when there is no preexec_fn, which runs no atfork handlers; exit is
    awaited through a pidfd on Linux (polling elsewhere).
    """

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid

    @classmethod
    def start(cls, cmd: list[str], *, env: dict[str, str], cwd: str | None = None,
              stdout: Any = None, stderr: Any = None, new_session: bool = False,
              stdin: bytes | None = None) -> "Child":
        """``stdin``: bytes the child reads from its stdin (a pipe, closed after them; at
        most a pipe's buffer, so writing never blocks), e.g. its credentials."""
        popen = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                 stdout=stdout, stderr=stderr, start_new_session=new_session, close_fds=True)
        if stdin is not None:
            try:
                popen.stdin.write(stdin)
                popen.stdin.close()
            except BrokenPipeError:  # it died at once; its exit code says why
                pass
        return cls(popen)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        rc = self.popen.poll()
        if rc is not None:
            return rc
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            while (rc := self.popen.poll()) is None:
                await asyncio.sleep(0.05)
            return rc
        exited = loop.create_future()
        loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
        try:
            if self.popen.poll() is None:
                await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return self.popen.wait()

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
