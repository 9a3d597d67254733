"""A mesh's socket folder and the sweep of folders whose control plane died (socketdir.py):
real folders, real locks, a real process holding one and then killed."""
import os
import signal
import subprocess
import sys
import time

from algomesh.sidecar.socketdir import LOCK, TAKING, TAKING_AGE, SocketDir, sweep

HOLD = """
import sys, time
from algomesh.sidecar.socketdir import SocketDir
d = SocketDir(sys.argv[1])
(d.path / "x.runner.sock").write_bytes(b"")
print(d.path, flush=True)
time.sleep(600)
"""


def test_a_folder_goes_when_its_process_dies_and_not_before(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        held = tmp_path / os.path.basename(holder.stdout.readline().strip())
        assert (held / LOCK).is_file() and (held / "x.runner.sock").exists()
        assert sweep(str(tmp_path)) == [] and held.is_dir()  # its process is running
        holder.send_signal(signal.SIGKILL)  # no chance to remove it
        holder.wait(10)
        assert held.is_dir()
        assert sweep(str(tmp_path)) == [held]
        assert not held.exists()
    finally:
        holder.kill()
        holder.wait()


def test_this_processes_own_folder_is_held_until_closed(tmp_path):
    mine = SocketDir(str(tmp_path))
    assert mine.path.parent == tmp_path and mine.path.name.startswith("algomesh-")
    assert os.stat(mine.path).st_mode & 0o777 == 0o700
    assert sweep(str(tmp_path)) == [] and mine.path.is_dir()  # a second lock on it fails, here too
    mine.close()
    assert not mine.path.exists()
    assert sweep(str(tmp_path)) == []


def test_folders_from_before_the_lock_go_only_when_old_and_empty(tmp_path):
    old_empty, young_empty, old_full = (tmp_path / f"algomesh-{n}" for n in ("a", "b", "c"))
    for d in (old_empty, young_empty, old_full):
        d.mkdir()
    (old_full / "i.runner.sock").write_bytes(b"")
    day_ago = time.time() - 2 * 24 * 3600
    for d in (old_empty, old_full):
        os.utime(d, (day_ago, day_ago))
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.utime(other, (day_ago, day_ago))
    (tmp_path / "algomesh-file").write_bytes(b"not a folder")
    (tmp_path / "algomesh-link").symlink_to(other)
    assert sweep(str(tmp_path)) == [old_empty]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "algomesh-b", "algomesh-c", "algomesh-file", "algomesh-link", "elsewhere"]


DIE_TAKING = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], ".lock.new"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_folder_whose_mesh_died_while_taking_its_lock_goes_once_old(tmp_path):
    """SocketDir locks ``.lock.new`` and then renames it to ``.lock``: a control plane
    killed between the two leaves only ``.lock.new``. Such a folder goes when that lock
    can be taken and the folder is older than TAKING_AGE; a young one is a mesh taking
    its lock now, and a held one a mesh that is (however slowly) still there."""
    dying, held, young = (tmp_path / f"algomesh-{n}" for n in ("dying", "held", "young"))
    for d in (dying, held, young):
        d.mkdir(mode=0o700)
    holders = [subprocess.Popen([sys.executable, "-c", DIE_TAKING, str(d)], stdout=subprocess.PIPE, text=True)
               for d in (dying, held)]
    try:
        assert [h.stdout.readline().strip() for h in holders] == ["locked", "locked"]
        (young / TAKING).write_bytes(b"")  # unlocked, but made a moment ago
        old = time.time() - 2 * TAKING_AGE
        for d in (dying, held):
            os.utime(d, (old, old))
        assert sweep(str(tmp_path)) == []  # both locks are held; the young one is too young
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait(10)
        assert sweep(str(tmp_path)) == [dying]
        assert not dying.exists() and held.is_dir() and young.is_dir()
        os.utime(young, (old, old))
        assert sweep(str(tmp_path)) == [young]
    finally:
        for h in holders:
            h.kill()
            h.wait()
