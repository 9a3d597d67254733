"""Child processes of a benchmark, and what /proc says about any process.

Every server a benchmark starts is a ``Child``: a subprocess in its own session (a Ctrl-C
reaches only the benchmark, which then stops the children in order), whose stdout lines
are read by a thread so it never blocks, and which Linux SIGTERMs if the benchmark dies
(even by SIGKILL), so nothing outlives a run. ``stop_all`` stops them: SIGTERM, a grace,
then SIGKILL.

The /proc readers are what the benchmark reports per process: CPU time (utime + stime of
``/proc/PID/stat``, every thread's, in seconds), resident memory (``VmRSS``) and its peak
(``VmHWM``, which ``reset_peak`` sets back to the current RSS so a peak covers one phase).
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable

MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Run first in every child: Linux SIGTERMs it if this process dies (even by SIGKILL),
# then it execs the real command (the setting survives exec).
GUARD = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != {parent}:
    sys.exit("parent gone")
program = {program!r} or sys.executable
os.execv(program, [program, *sys.argv[1:]])
"""


class Child:
    """A subprocess of ``sys.executable`` (or of ``python``, another interpreter; or of
    ``program``, a native executable) whose stdout lines are read by a thread. ``args``
    follow the interpreter (a script, ``-m``) or the program."""

    def __init__(self, name: str, args: list[str], *, stderr=None, stdout=None, env: dict | None = None,
                 python: str | None = None, cwd: str | None = None, program: str = "") -> None:
        """``stdout``: a file for its output instead (then ``expect`` has nothing to read)."""
        self.name = name
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.popen = subprocess.Popen(  # the guard runs in an interpreter, then execs the program
            [python or sys.executable, "-c", GUARD.format(parent=os.getpid(), program=program), *args],
            stdin=subprocess.PIPE, stdout=stdout or subprocess.PIPE, stderr=stderr, text=True,
            start_new_session=True, env=env, cwd=cwd)
        if stdout is None:
            threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _drain(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the first stdout line starting with ``prefix``."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name}: no {prefix!r} line within {timeout:.0f}s") from None
            if line is None:
                raise RuntimeError(f"{self.name} exited with code {self.popen.wait()} before {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, line: str) -> None:
        """One line to the child's stdin (an agent's command)."""
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()


def stop_all(children: Iterable[Child], grace: float = 15.0, who: str = "bench") -> None:
    """SIGTERM every child, wait up to ``grace`` seconds in all, SIGKILL the rest."""
    children = list(children)
    for c in children:
        if c.popen.poll() is None:
            c.popen.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for c in children:
        try:
            c.popen.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{who}: {c.name} did not stop in {grace:.0f}s; killing it", file=sys.stderr)
            try:
                os.killpg(c.popen.pid, signal.SIGKILL)  # its session: what it started too
            except OSError:
                c.popen.kill()
            c.popen.wait()


# ------------------------------------------------------------------------ /proc


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # fields from the state on (the name may hold spaces)


def parent(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread the process has had (``/proc/PID/stat``)."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss(pid: int) -> int:
    """Resident memory now, in bytes."""
    return _status(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """The highest resident memory since the process started or ``reset_peak``."""
    return _status(pid, "VmHWM")


def reset_peak(pid: int) -> None:
    """Sets VmHWM back to the current RSS (Linux >= 4.0), so the next peak covers one phase."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, parents before their children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = parent(int(entry))
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in sorted(children.get(todo.pop(0), [])):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def last_error(log_path) -> str:
    """The last exception a Python child logged (``SomeError: ...``) in its log, or ""."""
    try:
        lines = Path(log_path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line.strip() for line in lines if line[:1].isalpha() and ("Error:" in line or "Exception:" in line)
             and not line.startswith(("Traceback", "The above"))]
    return found[-1] if found else ""


def log_tail(log_path, lines: int = 30) -> str:
    """The last ``lines`` lines of a child's log ("" if it has none)."""
    try:
        return "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
