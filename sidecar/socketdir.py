"""The folder of a mesh's Unix sockets, and the sweep of folders whose mesh died.

``algomesh up`` keeps its runners' and sidecars' sockets in a short folder under the
temp dir (``/tmp/algomesh-XXXXXXXX``: a socket path may hold only about 107 bytes) and
removes it when it stops. A control plane killed hard (SIGKILL, the OOM killer, a lost
machine) cannot, so each folder holds a lock file that its control plane keeps locked
(``flock``) while it runs: the kernel drops the lock the moment the process dies, whatever
killed it. The next ``algomesh up`` on the machine removes every folder of this user whose
lock it can take. A lock cannot outlive its process nor be taken over by a new process
that got the old one's pid, as a pid file could. The lock is taken under a temporary name
(``.lock.new``) and then renamed; a folder whose control plane died between the two goes
once it is a minute old and that lock can be taken.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

PREFIX = "algomesh-"
LOCK = ".lock"
TAKING = LOCK + ".new"
LEGACY_AGE = 24 * 3600.0  # seconds: an empty folder with no lock file (made before the lock) goes after this
TAKING_AGE = 60.0  # seconds: a folder whose lock was never named (its mesh died while taking it) goes after this


class SocketDir:
    """A new socket folder, held until ``close()`` (which removes it)."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        # Locked under another name, then named: a sweep never sees the lock file unlocked.
        taking = self.path / TAKING
        self._lock = os.open(taking, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file nobody else has open
        os.rename(taking, self.path / LOCK)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)


def sweep(parent: str | None = None) -> list[Path]:
    """Remove the socket folders under ``parent`` (the temp dir) whose control plane is
    gone; returns them. Another user's folders, and a running mesh's, are left alone."""
    removed = []
    uid = os.getuid()
    for folder in Path(parent or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            st = folder.lstat()  # a symbolic link is not a folder here
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                continue
            if _abandoned(folder, time.time() - st.st_mtime):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:  # gone meanwhile, or not ours to read: not ours to remove either
            continue
    return removed


def _abandoned(folder: Path, age: float) -> bool:
    """Whether ``folder`` (last changed ``age`` seconds ago) belongs to a dead mesh."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        if not (folder / TAKING).exists():
            # No lock file: a folder from before the lock, or one whose mesh is between
            # mkdtemp and taking its lock. Only an old, empty one goes.
            return age > LEGACY_AGE and not any(folder.iterdir())
        # Its mesh died between creating the lock file and naming it, or is taking it now
        # (it made the file a moment ago: the folder's mtime says so).
        if age <= TAKING_AGE:
            return False
        try:
            fd = os.open(folder / TAKING, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False  # named meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its control plane holds it: running
    finally:
        os.close(fd)  # closing drops a lock taken here
    return True
