"""The two ways every path is loaded, shared by the benchmark and its agents (bench/_ray.py
runs them inside a Ray driver): sequential calls, timed one by one, and ``concurrency``
callers calling back to back for a while."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

One = Callable[[], Awaitable[object]]


async def sequential(one: One, calls: int) -> list[float]:
    """``calls`` calls one after another; each one's latency in microseconds."""
    out = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        await one()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


async def flood(one: One, concurrency: int, seconds: float) -> tuple[int, float]:
    """``concurrency`` callers, each calling back to back until ``seconds`` have passed:
    (calls answered, seconds it took, the last calls' included)."""
    done = 0

    async def caller(end: float) -> None:
        nonlocal done
        while time.perf_counter() < end:
            await one()
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(t0 + seconds) for _ in range(concurrency)))
    return done, time.perf_counter() - t0
