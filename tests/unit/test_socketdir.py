"""A mesh's socket folder and the sweep of folders whose control plane died (socketdir.py):
real folders, real locks, a real process holding one and then killed."""
import os
import signal
import subprocess
import sys
import time

from algomesh.sidecar.socketdir import LOCK, SocketDir, sweep

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
