"""Deadline: no call outlives its deadline, whatever it is waiting for (a cold start, a
runner, another sidecar). Downstream gRPC calls carry the remaining time, so the
deadline shrinks along the pipeline."""
from __future__ import annotations

import asyncio
import time

from algomesh._errors import error

from .stack import Call, Handler, Reply


def deadline(inner: Handler) -> Handler:
    async def handle(call: Call) -> Reply:
        remaining = call.deadline - time.monotonic()
        if remaining <= 0:
            raise error("DEADLINE_EXCEEDED", "the call's deadline had passed before it started")
        try:
            async with asyncio.timeout(remaining):
                return await inner(call)
        except TimeoutError:
            what = call.target or "the algorithm"
            raise error("DEADLINE_EXCEEDED", f"{what} did not answer within {remaining:.3g}s") from None

    return handle


def remaining(call: Call) -> float:
    """Seconds left for a downstream call (never negative)."""
    return max(0.0, call.deadline - time.monotonic())
