"""A blocking apply's streamed pipes in a runner process, moved on the runner's own loop.

A Python runner process serves its algorithm with grpc.aio on an event loop; a blocking
``apply`` runs in a worker thread, and its ``algomesh.client()`` talks to the sidecar's
outbound socket over a blocking channel. When such an apply passes the stream it
received on (``client.algo(x).stream(stream)``) and answers with that call's answer,
every chunk would cross from the loop to the thread and back, both ways. Instead the
runner installs its loop here (``install``): the client's ``Mesh/CallStream`` is then a
``LoopStream``, which sends such a stream (``_stream.start`` hands it over as an async
iterator of the loop's own chunks) on a grpc.aio channel on that loop, and lets the
runner read the answer there too (``LoopStreamCall.answer_on``); the apply's thread only
waits. Every other stream goes on the blocking channel, as before.

(A shared algorithm's pipes are in-process instead: ``_local.py``.)
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterator

import grpc

from . import _wire
from ._errors import error, from_rpc_error
from ._local import _on
from ._stream import send_chunks

_installed: tuple[str, asyncio.AbstractEventLoop] | None = None


def install(address: str, loop: asyncio.AbstractEventLoop) -> None:
    """The runner: blocking clients of ``address`` (its sidecar's outbound socket) run on
    ``loop`` the streams it can carry there."""
    global _installed
    _installed = (address, loop)


def loop_for(address: str) -> asyncio.AbstractEventLoop | None:
    if _installed is not None and _installed[0] == address:
        return _installed[1]
    return None


class LoopStreamCall:
    """One stream on the loop's channel: what ``StreamResponse`` reads from a worker thread
    (an iterator of answer chunks with ``trailing_metadata`` and ``cancel``), and, through
    ``answer_on``, what the runner reads on the loop (``read``, ``trailing``, ``cancel``).
    Its errors are typed."""

    def __init__(self, rpc: Any, loop: asyncio.AbstractEventLoop, requests: AsyncIterator[bytes]) -> None:
        self._rpc, self._loop = rpc, loop
        self.trailing: list = []
        # not grpc.aio's own request iterator: see _stream.write_chunk
        self._sender = asyncio.ensure_future(send_chunks(rpc, requests))

    async def read(self) -> Any:
        try:
            raw = await self._rpc.read()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the reader itself is cancelled
            raise error("CANCELLED", "the stream was cancelled") from None  # the call was
        if raw is grpc.aio.EOF:
            self.trailing = list(await self._rpc.trailing_metadata() or ())
        return raw

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        raw = asyncio.run_coroutine_threadsafe(self.read(), self._loop).result()
        if raw is grpc.aio.EOF:
            raise StopIteration
        return raw

    def trailing_metadata(self) -> list:
        return self.trailing

    def _cancel(self) -> None:
        self._sender.cancel()
        self._rpc.cancel()

    def cancel(self) -> None:
        if _on(self._loop):
            self._cancel()
        else:
            self._loop.call_soon_threadsafe(self._cancel)

    def answer_on(self, loop: asyncio.AbstractEventLoop) -> "LoopStreamCall | None":
        """This call, to be read on ``loop`` if that is the loop it runs on."""
        return self if loop is self._loop else None


class LoopStream:
    """A blocking client's ``Mesh/CallStream`` multicallable in a runner process: grpc's
    blocking one, except for a request that is an async iterator (of the loop's own
    chunks: ``_stream.start``), which goes on a grpc.aio channel on ``loop``."""

    def __init__(self, blocking: Any, address: str, loop: asyncio.AbstractEventLoop) -> None:
        self._blocking, self._address, self.loop = blocking, address, loop
        self._multicallable: Any = None  # the loop's channel's, made on the loop at first use

    def __call__(self, requests: Iterator[bytes] | AsyncIterator[bytes], metadata: Any = (),
                 timeout: float | None = None) -> Any:
        if not hasattr(requests, "__aiter__"):
            return self._blocking(requests, metadata=metadata, timeout=timeout)
        if _on(self.loop):
            raise RuntimeError("a blocking stream on the runner's own event loop would never finish: "
                               "use algomesh.async_client() in an async apply")
        return asyncio.run_coroutine_threadsafe(self._start(requests, metadata, timeout), self.loop).result()

    async def _start(self, requests: AsyncIterator[bytes], metadata: Any, timeout: float | None) -> LoopStreamCall:
        if self._multicallable is None:
            channel = grpc.aio.insecure_channel(self._address, options=_wire.CLIENT_CHANNEL_OPTIONS)
            self._multicallable = channel.stream_stream(_wire.CALL_STREAM_METHOD)
        return LoopStreamCall(self._multicallable(metadata=metadata, timeout=timeout), self.loop, requests)
