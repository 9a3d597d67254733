"""Pipes without a socket, for an algorithm that runs inside its sidecar (isolation = "shared").

Such a sidecar installs its outbound stack here (``install``); a client made inside the
algorithm for the sidecar's own address (``algomesh.client()``) then hands each pipe to
that stack in-process instead of sending it through the outbound Unix socket: the same
layers (permissions, lineage, tracing, routing), minus a gRPC client and server. A
blocking pipe (from ``apply`` on its worker thread) runs on the sidecar's event loop and
waits for it; an async one is awaited in that loop directly. Outside such a sidecar
nothing is installed and clients use gRPC as always.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Awaitable, Callable

Handler = Callable[[bytes, tuple, float], Awaitable[tuple[bytes, list]]]  # (body, metadata, timeout)

_installed: tuple[str, Handler, asyncio.AbstractEventLoop] | None = None


def install(address: str, handler: Handler, loop: asyncio.AbstractEventLoop) -> None:
    """The sidecar: calls from clients of ``address`` (its outbound socket) go to ``handler``."""
    global _installed
    _installed = (address, handler, loop)


def for_address(address: str) -> tuple[Handler, asyncio.AbstractEventLoop] | None:
    if _installed is not None and _installed[0] == address:
        return _installed[1], _installed[2]
    return None


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
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("a blocking pipe on the sidecar's own event loop would never finish: "
                               "use algomesh.async_client() in an async apply")
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
        try:
            same = asyncio.get_running_loop() is loop
        except RuntimeError:
            same = False
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
