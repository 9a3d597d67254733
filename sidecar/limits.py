"""Limits: refuse what is too big or too much before it costs anything downstream.

``payload_limit``: a body over the limit is PAYLOAD_TOO_LARGE (RESOURCE_EXHAUSTED) before
it reaches a runner or another sidecar (default 10 MiB, like Algorithmia's unary limit;
larger inputs travel by data:// reference or as a stream). A stream has no body to
measure up front: its chunks are counted as they pass, and the chunk that takes it over
``max_stream`` bytes (default 64 GiB, ``algomesh up --max-stream-mb``) ends it with
PAYLOAD_TOO_LARGE on every hop instead of going on.

``load_shed``: at most ``limit`` calls in flight through this handler; one more is refused
at once with OVERLOADED instead of waiting in an unbounded queue.
"""
from __future__ import annotations

from typing import AsyncIterator

from algomesh._errors import error

from .stack import Call, Handler, Layer, Reply

DEFAULT_MAX_PAYLOAD = 10 * 1024 * 1024
DEFAULT_MAX_STREAM = 64 * 1024 ** 3
DEFAULT_MAX_IN_FLIGHT = 64


async def _within(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise error("PAYLOAD_TOO_LARGE", f"the stream passed {max_bytes} bytes, the limit for a streamed "
                        "call (send a data:// reference)", size=f">{max_bytes}", limit=str(max_bytes))
        yield chunk


def payload_limit(max_bytes: int = DEFAULT_MAX_PAYLOAD, max_stream: int | None = None) -> Layer:
    max_stream = DEFAULT_MAX_STREAM if max_stream is None else max_stream

    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            if call.stream is not None:
                call.stream.source = _within(call.stream.source, max_stream)
                return await inner(call)
            if len(call.body) > max_bytes:
                raise error("PAYLOAD_TOO_LARGE", f"the request is {len(call.body)} bytes; the limit is "
                            f"{max_bytes} (send a data:// reference or stream it)",
                            size=str(len(call.body)), limit=str(max_bytes))
            return await inner(call)
        return handle
    return layer


def load_shed(limit: int = DEFAULT_MAX_IN_FLIGHT, *, what: str = "this instance") -> Layer:
    def layer(inner: Handler) -> Handler:
        in_flight = 0

        async def handle(call: Call) -> Reply:
            nonlocal in_flight
            if in_flight >= limit:
                raise error("OVERLOADED", f"{what} has {in_flight} calls in flight, its limit; retry later",
                            limit=str(limit))
            in_flight += 1
            try:
                return await inner(call)
            finally:
                in_flight -= 1
        return handle
    return layer
