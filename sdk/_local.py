"""Pipes without a socket, for an algorithm that runs inside its sidecar (isolation = "shared").

Such a sidecar installs its outbound stack here (``install``); a client made inside the
algorithm for the sidecar's own address (``algomesh.client()``) then hands each pipe to
that stack in-process instead of sending it through the outbound Unix socket: the same
layers (permissions, lineage, tracing, routing), minus a gRPC client and server. A
blocking pipe (from ``apply`` on its worker thread) runs on the sidecar's event loop and
waits for it; an async one is awaited in that loop directly. Streamed pipes too: their
chunks pass between the algorithm and the stack through queues of one chunk each way
(the same bounded memory as gRPC's flow control). Outside such a sidecar nothing is
installed and clients use gRPC as always.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import grpc

from ._errors import AlgomeshError, error

Handler = Callable[[bytes, tuple, float], Awaitable[tuple[bytes, list]]]  # (body, metadata, timeout)
# (request chunks, write one answer chunk, metadata, timeout) -> trailers
StreamHandler = Callable[[AsyncIterator[bytes], Callable[[bytes], Awaitable[None]], tuple, float], Awaitable[list]]

_installed: tuple[str, Handler, asyncio.AbstractEventLoop, StreamHandler] | None = None


def install(address: str, handler: Handler, loop: asyncio.AbstractEventLoop, stream: StreamHandler) -> None:
    """The sidecar: calls from clients of ``address`` (its outbound socket) go to ``handler``,
    streamed ones to ``stream``."""
    global _installed
    _installed = (address, handler, loop, stream)


def for_address(address: str) -> tuple[Handler, asyncio.AbstractEventLoop] | None:
    if _installed is not None and _installed[0] == address:
        return _installed[1], _installed[2]
    return None


def stream_for_address(address: str) -> tuple[StreamHandler, asyncio.AbstractEventLoop] | None:
    if _installed is not None and _installed[0] == address:
        return _installed[3], _installed[2]
    return None


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this code runs on ``loop`` (the sidecar's: an async apply)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _not_on(loop: asyncio.AbstractEventLoop, what: str) -> None:
    if _on(loop):
        raise RuntimeError(f"a blocking {what} on the sidecar's own event loop would never finish: "
                           "use algomesh.async_client() in an async apply")


class LocalFuture:
    """What ``Algorithm._start`` needs of a ``grpc.Future``; errors are typed already."""

    def __init__(self, inner: "concurrent.futures.Future[tuple[bytes, list]]") -> None:
        self._inner = inner

    def result(self, timeout: float | None = None) -> bytes:
        return self._inner.result(timeout)[0]

    def trailing_metadata(self) -> list:
        return self._inner.result()[1]

    def add_done_callback(self, fn: Callable[["LocalFuture"], None]) -> None:
        self._inner.add_done_callback(lambda _f: fn(self))


class LocalUnary:
    """A blocking client's multicallable, in-process."""

    def __init__(self, handler: Handler, loop: asyncio.AbstractEventLoop) -> None:
        self._handler, self._loop = handler, loop

    def future(self, body: bytes, metadata: tuple = (), timeout: float | None = None) -> LocalFuture:
        _not_on(self._loop, "pipe")
        return LocalFuture(asyncio.run_coroutine_threadsafe(
            self._handler(body, tuple(metadata or ()), timeout or 0.0), self._loop))


class LocalCall:
    """An asyncio client's call, in-process: awaitable, with its trailers afterwards. On the
    sidecar's own loop (an async apply) the handler runs when the call is awaited, as a
    coroutine of the awaiting task (no task of its own: the SDK awaits every call it makes
    at once); from another loop it runs on the sidecar's and is waited for."""

    def __init__(self, handler: Handler, loop: asyncio.AbstractEventLoop, body: bytes, metadata: tuple,
                 timeout: float) -> None:
        coro = handler(body, metadata, timeout)
        same = _on(loop)
        self._coro: Any = coro if same else None
        self._task: Any = None if same else asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
        self._result: tuple[bytes, list] | None = None
        self._error: BaseException | None = None

    async def _outcome(self) -> tuple[bytes, list]:
        if self._result is None:
            if self._error is not None:
                raise self._error
            if self._coro is not None:  # the first to wait runs it; an error is kept for a later wait
                coro, self._coro = self._coro, None
                try:
                    self._result = await coro
                except BaseException as exc:
                    self._error = exc
                    raise
            else:
                self._result = await self._task
        return self._result

    def __await__(self):  # type: ignore[no-untyped-def]
        body, _ = yield from self._outcome().__await__()
        return body

    async def trailing_metadata(self) -> list:
        return (await self._outcome())[1]


class AioLocalUnary:
    def __init__(self, handler: Handler, loop: asyncio.AbstractEventLoop) -> None:
        self._handler, self._loop = handler, loop

    def __call__(self, body: bytes, metadata: tuple = (), timeout: float | None = None) -> LocalCall:
        return LocalCall(self._handler, self._loop, body, tuple(metadata or ()), timeout or 0.0)


_END = object()


class LocalStreamCall:
    """What ``AsyncStreamResponse`` needs of a grpc.aio stream-stream call (``write``,
    ``done_writing``, ``read``, ``trailing_metadata``, ``cancel``, ``done``), in-process: the
    stack runs as a task on the sidecar's loop, fed and drained through one-chunk queues.
    Its errors are typed already; they are raised by ``read``."""

    def __init__(self, handler: StreamHandler, metadata: tuple, timeout: float) -> None:
        self._requests: asyncio.Queue = asyncio.Queue(1)
        self._answers: asyncio.Queue = asyncio.Queue(1)
        self.trailing: list = []
        self._error: BaseException | None = None
        self._writing = True
        self._ended = False
        self.feeder: asyncio.Future | None = None  # LocalBlockingStream's: what feeds it the request
        self._task = asyncio.ensure_future(self._run(handler, metadata, timeout))

    async def _source(self) -> AsyncIterator[bytes]:
        while (chunk := await self._requests.get()) is not _END:
            yield chunk

    async def _run(self, handler: StreamHandler, metadata: tuple, timeout: float) -> None:
        try:
            self.trailing = await handler(self._source(), self._answers.put, metadata, timeout)
        except AlgomeshError as exc:
            self._error = exc
        except Exception as exc:  # the stack rescues everything it runs: a bug of ours
            self._error = error("INTERNAL", f"in-process stream failed: {exc!r}")
        self._ended = True  # never waits for a reader: an answer nobody reads cannot hold this task
        if self._answers.empty():
            self._answers.put_nowait(_END)

    async def write(self, chunk: bytes) -> None:
        if self._task.done() or not self._writing:
            raise asyncio.InvalidStateError("the call takes no more chunks")
        await self._requests.put(chunk)

    async def done_writing(self) -> None:
        if self._writing and not self._task.done():
            self._writing = False
            await self._requests.put(_END)

    async def read(self) -> Any:
        if self._task.cancelled() and self._answers.empty():
            raise error("CANCELLED", "the stream was cancelled")
        item = await self._answers.get()
        if item is _END:
            self._answers.put_nowait(_END)  # every later read ends too
            if self._error is not None:
                raise self._error
            return grpc.aio.EOF
        if self._ended and self._answers.empty():  # that was the last chunk: the end follows it
            self._answers.put_nowait(_END)
        return item

    async def trailing_metadata(self) -> list:
        return self.trailing

    def done(self) -> bool:
        return self._task.done()

    def cancel(self) -> bool:
        if self.feeder is not None:
            self.feeder.cancel()
        if self._task.done():
            return False
        self._task.cancel()
        if self._answers.empty():  # a reader waiting for the next chunk: it is not coming
            self._answers.put_nowait(_END)
            self._error = error("CANCELLED", "the stream was cancelled")
        return True


class AioLocalStream:
    """An asyncio client's ``Mesh/CallStream`` multicallable: in-process on the sidecar's own
    loop (an async apply), else ``grpc_stream`` (the outbound socket, as always)."""

    def __init__(self, handler: StreamHandler, loop: asyncio.AbstractEventLoop, grpc_stream: Any) -> None:
        self._handler, self._loop, self._grpc = handler, loop, grpc_stream

    def __call__(self, metadata: tuple = (), timeout: float | None = None) -> Any:
        if not _on(self._loop):
            return self._grpc(metadata=metadata, timeout=timeout)
        return LocalStreamCall(self._handler, tuple(metadata or ()), timeout or 0.0)


class LocalBlockingStream:
    """What ``StreamResponse`` needs of a blocking stream-stream call (an iterator of answer
    chunks with ``trailing_metadata`` and ``cancel``), in-process: the stack runs on the
    sidecar's loop; the request's chunks are read from ``requests`` in a worker thread (on
    the loop if it is an async iterator), the answer's handed to this thread one at a time
    (or read on the loop: ``answer_on``)."""

    def __init__(self, handler: StreamHandler, loop: asyncio.AbstractEventLoop,
                 requests: Iterator[bytes] | AsyncIterator[bytes],
                 metadata: tuple, timeout: float) -> None:
        self._loop = loop
        self._call = asyncio.run_coroutine_threadsafe(self._start(handler, requests, metadata, timeout), loop).result()

    @staticmethod
    async def _start(handler: StreamHandler, requests: Iterator[bytes] | AsyncIterator[bytes], metadata: tuple,
                     timeout: float) -> LocalStreamCall:
        async def source() -> AsyncIterator[bytes]:
            if hasattr(requests, "__aiter__"):  # read on this loop (a runner's stream passed on)
                async for chunk in requests:
                    yield chunk
                return
            while (chunk := await asyncio.to_thread(next, requests, None)) is not None:
                yield chunk

        async def feed(call: LocalStreamCall) -> None:
            try:
                async for chunk in source():
                    await call.write(chunk)
                await call.done_writing()
            except asyncio.InvalidStateError:
                pass  # the call ended: reading the answer says how
            except Exception:  # the source failed (StreamResponse kept it, and raises it): end the call
                call.cancel()

        call = LocalStreamCall(handler, metadata, timeout)
        call.feeder = asyncio.ensure_future(feed(call))
        return call

    def __iter__(self) -> "LocalBlockingStream":
        return self

    def __next__(self) -> bytes:
        raw = asyncio.run_coroutine_threadsafe(self._call.read(), self._loop).result()
        if raw is grpc.aio.EOF:
            raise StopIteration
        return raw

    def trailing_metadata(self) -> list:
        return self._call.trailing

    def cancel(self) -> None:
        self._loop.call_soon_threadsafe(self._call.cancel)

    def answer_on(self, loop: asyncio.AbstractEventLoop) -> LocalStreamCall | None:
        """The call itself, to be read on ``loop`` if that is the loop it runs on."""
        return self._call if loop is self._loop else None


class LocalStream:
    """A blocking client's ``Mesh/CallStream`` multicallable, in-process (``LocalBlockingStream``)."""

    def __init__(self, handler: StreamHandler, loop: asyncio.AbstractEventLoop) -> None:
        self._handler, self.loop = handler, loop

    def __call__(self, requests: Iterator[bytes] | AsyncIterator[bytes], metadata: tuple = (),
                 timeout: float | None = None) -> Any:
        """``requests`` is read in a worker thread; an async iterator (of the loop's own
        chunks: ``_stream.start``) on the loop."""
        _not_on(self.loop, "stream")
        return LocalBlockingStream(self._handler, self.loop, requests, tuple(metadata or ()), timeout or 0.0)
