"""One path under test (``Probe``) and what is measured on it.

A probe makes calls (``check``, ``sequential``, ``flood``) and names the server processes
the path crosses (``procs``: label -> pid, looked up afresh each time, since a Ray
cluster starts and stops workers) and the client's process. ``measured_flood`` wraps a
flood with the per-process figures: CPU seconds (utime + stime deltas) and the peak RSS
during it (``VmHWM`` after resetting it).
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
from dataclasses import dataclass, field
from typing import Callable

from bench import _load, _procs


@dataclass
class Figures:
    latencies_us: list[float] = field(default_factory=list)
    done: int = 0
    elapsed: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)     # per process, over every flood
    client_cpu_s: float = 0.0
    rss_idle: dict[str, int] = field(default_factory=dict)    # bytes, at rest after warm-up
    rss_load: dict[str, int] = field(default_factory=dict)    # bytes, peak during the floods
    first_call_s: float = 0.0


class Probe:
    kind = ""

    def __init__(self, key: str, label: str, *, procs: Callable[[], dict[str, int]], client_pid: int,
                 processes: int | None = None, stages: int = 1, meta: dict | None = None) -> None:
        self.key, self.label = key, label
        self.procs, self.client_pid = procs, client_pid
        self.processes = processes  # declared: server processes a call crosses (None: not compared)
        self.stages = stages
        self.meta = meta or {}
        self.fig = Figures()
        self.warm_latencies_us: list[float] = []

    async def check(self, timeout: float) -> None:
        raise NotImplementedError

    async def sequential(self, calls: int) -> list[float]:
        raise NotImplementedError

    async def flood(self, concurrency: int, seconds: float) -> tuple[int, float]:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    def result(self, concurrency: int) -> dict:
        f = self.fig
        q = statistics.quantiles(f.latencies_us, n=100, method="inclusive")
        per_req = (lambda s: s / f.done * 1e6) if f.done else (lambda s: float("nan"))
        cpu = {k: per_req(v) for k, v in f.cpu_s.items()}
        return {
            "label": self.label, "kind": self.kind, "processes": self.processes, "stages": self.stages,
            **self.meta,
            "calls": len(f.latencies_us), "p50_us": q[49], "p99_us": q[98],
            "mean_us": statistics.fmean(f.latencies_us), "min_us": min(f.latencies_us),
            "first_call_s": f.first_call_s,
            "concurrency": concurrency, "throughput_calls": f.done, "throughput_seconds": f.elapsed,
            "calls_per_s": f.done / f.elapsed if f.elapsed else float("nan"),
            "cpu_us_per_call": cpu,
            "cpu_us_per_call_servers": sum(cpu.values()),
            "cpu_us_per_call_client": per_req(f.client_cpu_s),
            "rss_idle_mib": {k: v / _procs.MiB for k, v in f.rss_idle.items()},
            "rss_load_mib": {k: v / _procs.MiB for k, v in f.rss_load.items()},
        }


class LocalProbe(Probe):
    """Called from the benchmark's own process with a caller of bench/_callers.py."""

    def __init__(self, key: str, label: str, caller, kind: str, **kw) -> None:
        super().__init__(key, label, client_pid=os.getpid(), **kw)
        self.caller, self.kind = caller, kind

    async def check(self, timeout: float) -> None:
        await self.caller.check(timeout)

    async def sequential(self, calls: int) -> list[float]:
        return await _load.sequential(self.caller.one, calls)

    async def flood(self, concurrency: int, seconds: float) -> tuple[int, float]:
        return await _load.flood(self.caller.one, concurrency, seconds)

    async def close(self) -> None:
        await self.caller.close()


class AgentProbe(Probe):
    """Calls made inside an agent process (a Ray driver: a DeploymentHandle needs one),
    which answers the commands of bench/_ray.py; the agent is the client process."""

    kind = "ray"

    def __init__(self, key: str, label: str, agent, **kw) -> None:
        super().__init__(key, label, client_pid=agent.pid, **kw)
        self.agent = agent
        self._lock = asyncio.Lock()

    async def _ask(self, cmd: dict, timeout: float) -> dict:
        async with self._lock:
            self.agent.send(json.dumps(cmd))
            out = json.loads(await asyncio.to_thread(self.agent.expect, "result", timeout))
        if "error" in out:
            raise RuntimeError(f"{self.label}: {out['error']}")
        return out

    async def check(self, timeout: float) -> None:
        out = await self._ask({"cmd": "check", "timeout": timeout}, timeout + 10)
        if not out["ok"]:
            raise RuntimeError(f"{self.label} did not answer the payload: {out['got']}")

    async def sequential(self, calls: int) -> list[float]:
        return (await self._ask({"cmd": "seq", "n": calls}, 60 + calls * 0.5))["latencies_us"]

    async def flood(self, concurrency: int, seconds: float) -> tuple[int, float]:
        out = await self._ask({"cmd": "flood", "c": concurrency, "s": seconds}, 120 + seconds * 4)
        return out["done"], out["elapsed"]


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for label, pid in pids.items():
        try:
            out[label] = _procs.cpu_seconds(pid)
        except OSError:
            pass
    return out


async def measured_flood(p: Probe, concurrency: int, seconds: float) -> None:
    """One flood, adding its calls, time, per-process CPU and peak RSS to ``p.fig``."""
    pids = p.procs()
    for pid in pids.values():
        try:
            _procs.reset_peak(pid)
        except OSError:
            pass
    before, client_before = _cpu(pids), _procs.cpu_seconds(p.client_pid)
    done, elapsed = await p.flood(concurrency, seconds)
    after, client_after = _cpu(pids), _procs.cpu_seconds(p.client_pid)
    f = p.fig
    f.done, f.elapsed = f.done + done, f.elapsed + elapsed
    f.client_cpu_s += client_after - client_before
    for label in (k for k in before if k in after):  # in the path's order
        f.cpu_s[label] = f.cpu_s.get(label, 0.0) + after[label] - before[label]
    for label, pid in pids.items():
        try:
            f.rss_load[label] = max(f.rss_load.get(label, 0), _procs.peak_rss(pid))
        except OSError:
            pass


def idle_rss(p: Probe) -> None:
    for label, pid in p.procs().items():
        try:
            p.fig.rss_idle[label] = _procs.rss(pid)
        except OSError:
            pass
