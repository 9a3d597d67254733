"""Where one path's CPU goes: ``python -m bench.cpu [PATH]``.

Starts one algomesh path of ``bench/paths.py`` (default ``mesh3_async_shared_direct``) as
``python -m bench`` does, warms it, then calls it with ``--concurrency`` calls in flight
for ``--rounds`` rounds of ``--seconds`` each and prints, per round, the throughput, how
busy the machine was, and the CPU time each process spent per call (the client, this
process, included); then each process's median over the rounds.

CPU per call per process is the figure to compare two versions of the code with: on the
shared 2-core machine it repeats within a few percent between runs minutes apart, where
throughput moves by ±10 % (docs/performance.md). Change one thing, run this before and
after, compare the medians.

    python -m bench.cpu                                        # the fastest path, 3 rounds of 5 s
    python -m bench.cpu mesh3 --rounds 5
    python -m bench.cpu --env OTEL_TRACES_SAMPLER=always_off   # what tracing costs
    python -m bench.cpu --py-spy /tmp/spy                      # also a py-spy profile per process

``--env K=V`` is set for ``algomesh up`` and so for every sidecar it starts. ``--py-spy
DIR`` records every server process with py-spy (``pip install py-spy``) during the last
round, into ``DIR/<process>.txt`` (collapsed stacks: one line per stack and its sample
count; ``--native`` adds the C frames). Recording costs the recorded processes CPU: read
its round for where time goes, the other rounds for how much.

(Named ``cpu``, not ``profile``: a ``bench/profile.py`` would shadow the standard
library's ``profile``, which ``cProfile`` imports, in the scripts that run from bench/.)
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import _load, _procs
from bench._callers import SdkCaller
from bench._mesh import MeshServer
from bench.coldstart import stop_all
from bench.paths import MESH_PATHS, MeshPath


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


def _spy(py_spy: str, label: str, pid: int, seconds: float, out: Path, native: bool) -> subprocess.Popen:
    name = "".join(c if c.isalnum() else "_" for c in label).strip("_")
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                             "--rate", "200", "--format", "raw", "--output", str(out / f"{name}.txt"),
                             *(["--native"] if native else ["--nonblocking"])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def measure(path: MeshPath, server: MeshServer, a: argparse.Namespace) -> dict[str, list[float]]:
    caller = SdkCaller(server.key, server.address, path.target, dict(path.client_options))
    await caller.check(120.0)  # the cold start, and a check that the path answers its payload
    await _load.sequential(caller.one, a.warmup)
    await _load.flood(caller.one, a.concurrency, 1.0)
    procs = {**server.processes(direct=bool(path.client_options.get("direct"))), "client": os.getpid()}
    per_call: dict[str, list[float]] = {label: [] for label in procs}
    for r in range(a.rounds):
        spies = []
        if a.py_spy and r == a.rounds - 1:
            out = Path(a.py_spy)
            out.mkdir(parents=True, exist_ok=True)
            spies = [_spy(a.spy_binary, label, pid, a.seconds, out, a.native)
                     for label, pid in procs.items() if label != "client"]
        cpu0 = {label: _procs.cpu_seconds(pid) for label, pid in procs.items()}
        busy0, total0 = _machine_ticks()
        calls, took = await _load.flood(caller.one, a.concurrency, a.seconds)
        busy1, total1 = _machine_ticks()
        cpu = {label: (_procs.cpu_seconds(pid) - cpu0[label]) / calls * 1e6 for label, pid in procs.items()}
        for s in spies:
            s.wait()
        for label, us in cpu.items():
            per_call[label].append(us)
        spied = " (py-spy recording)" if spies else ""
        print(f"round {r + 1}/{a.rounds}{spied}: {calls / took:.0f} calls/s, machine "
              f"{100 * (busy1 - busy0) / max(1, total1 - total0):.0f}% busy, {sum(cpu.values()):.0f} us CPU per call "
              f"in all: " + ", ".join(f"{label} {us:.0f}" for label, us in cpu.items()), flush=True)
    await caller.client.close()
    return per_call


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", default="mesh3_async_shared_direct",
                   choices=[m.key for m in MESH_PATHS], help="a path of bench/paths.py")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per round (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight (default 32)")
    p.add_argument("--warmup", type=int, default=300, help="sequential warm-up calls (default 300)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment for algomesh up")
    p.add_argument("--py-spy", metavar="DIR", help="record each server process with py-spy in the last round")
    p.add_argument("--native", action="store_true", help="with --py-spy: C frames too")
    a = p.parse_args(argv)
    if a.rounds < 1 or a.seconds <= 0:
        p.error("--rounds must be at least 1 and --seconds positive")
    for kv in a.env:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            p.error(f"--env takes K=V, not {kv!r}")
        os.environ[key] = value
    if a.py_spy:
        a.spy_binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(a.spy_binary).exists():
            p.error("--py-spy needs py-spy (pip install py-spy)")

    path = next(m for m in MESH_PATHS if m.key == a.path)
    work = Path(tempfile.mkdtemp(prefix="algomesh-profile-"))
    server = MeshServer("profile", path.mesh, work)
    try:
        server.start()
        print(f"{path.label}: {a.rounds} rounds of {a.seconds:g}s with {a.concurrency} calls in flight", flush=True)
        import uvloop
        per_call = uvloop.run(measure(path, server, a))
    finally:
        stop_all([server.up])
        shutil.rmtree(work, ignore_errors=True)
    print("median CPU per call over the rounds (us):")
    for label, values in per_call.items():
        print(f"  {label:<34} {statistics.median(values):7.0f}")
    print(f"  {'all':<34} {sum(statistics.median(v) for v in per_call.values()):7.0f}")
    if a.py_spy:
        print(f"py-spy profiles: {a.py_spy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
