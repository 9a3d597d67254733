"""Streamed calls (``Mesh/CallStream``, ``StreamRunner/ApplyStream``) through the same stacks
as unary calls.

A stream call is a ``Call`` whose ``stream`` is a ``Chunks``: the request's chunks as they
arrive (serialized ``CallChunk`` messages, counted, never decoded here) and ``write``, which
sends one response chunk back to whoever called. Handlers stay ``Call -> Reply``: the
terminal handler (the Router, the runner supervisor) opens a stream-stream call downstream
and ``pump``s both ways until the answer ends, and only then returns its ``Reply`` (the
trailers; the body stays empty, the answer went out through ``write``). So every layer
around it sees the whole stream as one call: the span ends when the stream ends, the
in-flight slot and the call's lineage token are held for all of it, the deadline covers
it, and an error in the middle leaves through the same rescue as any other.

Memory: at most one chunk per direction per hop in our hands. ``pump`` reads the next
request chunk only once the previous one was written downstream, and the next response
chunk only once the previous one was written upstream; a grpc.aio write completes when
the peer's flow-control window takes it, so the slowest reader slows the first writer,
and nothing queues in between.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable

import grpc

from algomesh._errors import STATUS_DETAILS_KEY
from algomesh._stream import write_chunk

APPLY_STREAM_METHOD = "/algomesh.v1.StreamRunner/ApplyStream"


class Chunks:
    """One stream call's two directions, as this process sees them.

    ``received`` / ``sent``: bytes of serialized chunks so far (the spans' request and
    response sizes). The first request chunk is remembered until a second one is read, so
    the Router can send the stream again to another instance when the one it picked turns
    out to be gone before it took more than that (``rewind``)."""

    __slots__ = ("source", "_write", "received", "sent", "pulled", "_first", "_replay", "_broken", "_writing")

    def __init__(self, source: AsyncIterator[bytes], write: Callable[[bytes], Awaitable[None]]) -> None:
        self.source = source            # a layer may wrap it (limits.stream_limit)
        self._write = write
        self.received = self.sent = self.pulled = 0
        self._first: bytes | None = None
        self._replay: bytes | None = None
        self._broken = False  # a read was interrupted: the source cannot be trusted to go on
        self._writing: asyncio.Future | None = None

    def __aiter__(self) -> "Chunks":
        return self

    async def __anext__(self) -> bytes:
        if self._replay is not None:
            chunk, self._replay = self._replay, None
            return chunk
        try:
            chunk = await self.source.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException:  # cancelled mid-read, say: an async generator is closed by it
            self._broken = True
            raise
        self.pulled += 1
        self.received += len(chunk)
        self._first = chunk if self.pulled == 1 else None
        return chunk

    async def write(self, chunk: bytes) -> None:
        # A server's write that its writer stops waiting for (the call failing elsewhere
        # cancels it) stays under way in gRPC's core until the peer takes the chunk, and
        # until then the call can send no status: the abort fails (TOO_MANY_OPERATIONS) and
        # the caller waits for ever. So the write goes on as its own task when the writer
        # is cancelled, and the handler ``settle``s before it answers with a status.
        writing = asyncio.ensure_future(self._write(chunk))
        writing.add_done_callback(_retrieved)  # a write left behind may fail with its call: not worth a log line
        self._writing = writing
        await asyncio.shield(writing)
        self.sent += len(chunk)

    async def settle(self, timeout: float) -> None:
        """Wait, up to ``timeout`` seconds, for a response write still under way."""
        writing = self._writing
        if writing is not None and not writing.done():
            await asyncio.wait({writing}, timeout=timeout)

    def rewind(self) -> bool:
        """Start again from the first chunk; False once more than it was read or any answer
        went back (the stream cannot be sent twice then)."""
        if self.sent or self._broken:
            return False
        if self.pulled == 0:
            return True
        if self.pulled == 1 and self._first is not None:
            self._replay = self._first
            return True
        return False


def _retrieved(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


async def pump(rpc: grpc.aio.StreamStreamCall, stream: Chunks) -> None:
    """Send ``stream``'s request chunks into ``rpc`` (a stream-stream call just opened, no
    request iterator) while writing its response chunks to ``stream``, until the response
    ends. Raises what failed first: the downstream's ``AioRpcError`` untouched (the caller
    maps it: a Router may retry, the runner supervisor names a crash), or what reading the
    request raised (a typed error, such as the stream limit). Whatever way it ends, nothing
    it started is left running: a caller that gives up (cancellation) cancels ``rpc`` too,
    and the hop below sees CANCELLED."""

    async def send() -> None:
        async for chunk in stream:
            if not await write_chunk(rpc, chunk):
                return  # the call ended: the receiver reads how
        await rpc.done_writing()

    async def receive() -> None:
        while True:
            chunk = await rpc.read()
            if chunk is grpc.aio.EOF:
                return
            await stream.write(chunk)

    sender = asyncio.ensure_future(send())
    receiver = asyncio.ensure_future(receive())
    try:
        pending = {sender, receiver}
        while receiver in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                receiver.result()  # the downstream's status, if it failed
            elif sender in done and not sender.cancelled():
                exc = sender.exception()
                if exc is not None and not isinstance(exc, (grpc.aio.AioRpcError, asyncio.InvalidStateError)):
                    raise exc  # reading the request failed (a typed error such as the stream limit)
                # Else all was sent, or a write failed because the call below ended: its
                # status (the receiver reads it) says how, or it answered without reading all.
    finally:
        for task in (sender, receiver):
            task.cancel()
        rpc.cancel()  # nothing if it ended already
        await asyncio.gather(sender, receiver, return_exceptions=True)


def bare(trailing) -> bool:
    """A status without algomesh's details: from gRPC itself, not from a server of ours."""
    return not any(k == STATUS_DETAILS_KEY for k, _ in trailing or ())
