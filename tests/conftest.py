"""Fixtures that start the real thing: `algomesh up` as a process, talked to over gRPC."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import grpc
import pytest

import algomesh

ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS = Path(__file__).resolve().parent / "algorithms"
EXAMPLES = ROOT / "examples"


def write_algorithm(folder: Path, name: str, version: str, code: str, *, entrypoint: str = "main.py",
                    extra_toml: str = "") -> Path:
    """An algorithm folder made on the spot: algomesh.toml plus one module."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "algomesh.toml").write_text(
        f'name = "{name}"\nversion = "{version}"\nruntime = "python"\nentrypoint = "{entrypoint}"\n'
        + textwrap.dedent(extra_toml))
    (folder / entrypoint).write_text(textwrap.dedent(code))
    return folder


def stored_trace(client, trace_id: str, spans: int, timeout: float = 20.0, names: Iterable[str] = ()):
    """The trace once the control plane holds ``spans`` spans of it, ``names`` among them:
    every process sends its own spans, in batches every half second, so they arrive one
    process at a time (and a trace may also hold the starts of instances it caused)."""
    want = set(names)
    deadline = time.monotonic() + timeout
    while True:
        try:
            trace = client.trace(trace_id)
            if (len(trace.spans) >= spans and want <= {s.name for s in trace.spans}) or time.monotonic() > deadline:
                return trace
        except algomesh.NotFoundError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def give_up_mid_stream(client, target: str, first: bytes, probe: bytes, answer: bytes) -> None:
    """A caller that gives up on an endless stream through ``target`` once its first
    chunk (every byte ``first``) came back; every stage it went through is free again at
    once, not at a deadline: ``probe`` through ``target`` is answered ``answer`` within 5 s."""
    def forever():
        while True:
            yield b"x" * (1 << 20)

    streamed = client.algo(target).stream(forever())
    it = streamed.chunks()
    assert set(next(it)) == set(first)
    streamed.cancel()
    with pytest.raises(algomesh.AlgomeshError):
        for _ in it:
            pass
    t0 = time.monotonic()
    assert client.algo(target).stream(probe).read() == answer
    assert time.monotonic() - t0 < 5


class LoopThread:
    """An event loop in a thread of its own, as a sidecar runs one while a shared
    algorithm's blocking apply runs in a worker thread; ``run`` a coroutine on it from here."""

    def __enter__(self) -> "LoopThread":
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


@dataclass
class Mesh:
    process: subprocess.Popen
    address: str
    data_dir: Path
    banner: str
    lines: list[str] | None = None  # everything `algomesh up` printed so far
    api_key: str | None = None      # the admin key `algomesh up` printed on its first start

    @property
    def output(self) -> str:
        return "".join(self.lines or [])

    def client(self, api_key: str | None = None) -> algomesh.Client:
        """A client with ``api_key``, by default the admin key."""
        return algomesh.client(api_key or self.api_key, self.address)

    def mesh_channel(self, address: str, identity: str = "ops/tests@0") -> grpc.Channel:
        """A channel to a sidecar (or the mesh port) carrying a mesh certificate that names
        ``identity``, issued by this mesh's CA (``algomesh cert``, an admin's tool)."""
        with self.client() as c:
            pems = c.issue_certificate(identity)
        creds = grpc.ssl_channel_credentials(pems.ca.encode(), pems.key.encode(), pems.cert.encode())
        return grpc.secure_channel(address, creds, options=(("grpc.ssl_target_name_override", "mesh.algomesh"),))

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying the admin key, for raw stubs."""
        return (("authorization", f"Simple {self.api_key}"),) if self.api_key else ()

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60,
            api_key: str | None = None) -> subprocess.CompletedProcess:
        """The CLI with ``api_key`` (default: the admin key) in $ALGOMESH_API_KEY."""
        env = dict(os.environ)
        env.pop("ALGOMESH_API_KEY", None)
        if api_key or self.api_key:
            env["ALGOMESH_API_KEY"] = api_key or self.api_key
        return subprocess.run(
            [sys.executable, "-m", "algomesh.cli", "--address", self.address, *args],
            input=input, capture_output=True, timeout=timeout, env=env)

    def publish(self, path: Path) -> None:
        with self.client() as c:
            c.publish(path)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()


_ADMIN_KEYS: dict[Path, str] = {}  # data dir -> the admin key its first start printed


def start_mesh(data_dir: Path, *extra: str, own_group: bool = False) -> Mesh:
    """``own_group``: lead a process group of its own, like a command run from a shell.
    The admin key printed on a data dir's first start is remembered for its restarts."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "algomesh.cli", "up", "--data-dir", str(data_dir), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0 if own_group else None)
    lines: list[str] = []
    address = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on (\S+)", line)
        if m:
            address = m.group(1)
        m = re.search(r"admin key (amk_\S+)", line)
        if m:
            _ADMIN_KEYS[Path(data_dir)] = m.group(1)
        if address and "Ctrl-C to stop" in line:  # the banner's last line
            # drain the rest of the output in the background so the pipe never fills
            threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
            return Mesh(proc, address, data_dir, "".join(lines), lines, _ADMIN_KEYS.get(Path(data_dir)))
    proc.kill()
    raise RuntimeError("algomesh up did not start:\n" + "".join(lines))


def stop_mesh(m: Mesh) -> None:
    """Stop a mesh and check that none of its processes is left behind."""
    pids = descendants(m.process.pid)
    m.stop()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes left behind after shutdown: {left}"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_mesh(tmp_path_factory.mktemp("mesh"))
    yield m
    stop_mesh(m)


@pytest.fixture(scope="module")
def client(mesh):
    with mesh.client() as c:
        yield c
