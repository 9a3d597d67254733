"""Fan-out: ``algo.map(inputs, concurrency=N)`` calls one algorithm (or a composed pipeline)
on many inputs.

- At most ``concurrency`` calls are in flight; each is an ordinary call, so the mesh
  balances every one of them over the algorithm's instances.
- Results come back **in input order**, one finished response per input. A failed input
  does not fail the others: its response's ``.result`` raises that input's typed error,
  ``.error`` returns it (``None`` when it succeeded), ``.ok`` says which.
- Inputs are pulled from the iterable only when a slot frees up, so a generator of a
  million inputs is never held in memory at once. ``imap`` also yields the responses as
  the head of the line finishes, holding at most ``window`` of them (started or waiting to
  be yielded), so memory stays bounded on both sides.
- Inside an algorithm, each call is started in the caller's context: it carries the
  call token and trace of the call being served (``_context.CALL_CONTEXT``), exactly like
  a ``pipe`` made there.
- A progress bar (``42/100 ▕████░░░░▏ 3.1/s``) is drawn on stderr, updated in place, when
  stderr is a terminal or when ``progress=True``; ``progress=False`` never draws it.

The engine knows nothing of gRPC: it takes a ``pipe(input) -> response`` function (an
Algorithm's, a Pipeline's) and a way to make an already-failed response, so it is the same
for the sync and the asyncio client.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import sys
import time
from typing import IO, Any, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

from ._errors import AlgomeshError, error

DEFAULT_CONCURRENCY = 8
WINDOW_PER_SLOT = 4  # imap: responses held (running or finished, not yet yielded) per slot


def check_concurrency(concurrency: Any) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise error("INVALID_INPUT", f"concurrency must be a positive integer, not {concurrency!r}")
    return concurrency


def _total(inputs: Any, total: int | None) -> int | None:
    if total is not None:
        return int(total)
    try:
        return len(inputs)
    except TypeError:  # a generator: unknown until it ends
        return None


# ---------------------------------------------------------------------------- progress


class Progress:
    """One line on a terminal, rewritten in place: ``label 42/100 ▕████░░░░▏ 3.1/s``.

    Drawn at most every ``interval`` seconds (and once at the end, followed by a newline),
    always from the thread that runs the map, never from gRPC's callback threads."""

    WIDTH = 24

    def __init__(self, stream: IO[str], total: int | None, label: str = "", interval: float = 0.1) -> None:
        self.stream, self.total, self.label, self.interval = stream, total, label, interval
        self.start = time.monotonic()
        self._drawn_at = 0.0
        self._width = 0  # of the last line drawn, to blank what a shorter line leaves

    @classmethod
    def maybe(cls, progress: bool | None, total: int | None, label: str) -> "Progress | None":
        stream = sys.stderr
        if progress is None:
            try:
                progress = stream.isatty()
            except (AttributeError, ValueError):  # a closed or odd stream: no bar
                progress = False
        return cls(stream, total, label) if progress else None

    def line(self, done: int, failed: int, now: float | None = None) -> str:
        elapsed = max((now if now is not None else time.monotonic()) - self.start, 1e-9)
        rate = done / elapsed
        parts = [self.label] if self.label else []
        if self.total:
            filled = min(self.WIDTH, int(self.WIDTH * done / self.total))
            parts.append(f"{done}/{self.total} ▕{'█' * filled}{'░' * (self.WIDTH - filled)}▏ {rate:.1f}/s")
            if 0 < done < self.total and rate > 0:
                parts.append(f"eta {_duration((self.total - done) / rate)}")
        else:
            parts.append(f"{done} done {rate:.1f}/s")
        if failed:
            parts.append(f"{failed} failed")
        return " ".join(parts)

    def update(self, done: int, failed: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._drawn_at < self.interval:
            return
        self._drawn_at = now
        text = self.line(done, failed, now)
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        try:
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: the map goes on without it
            pass


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---------------------------------------------------------------------------- sync


def imap(pipe: Callable[[Any], Any], failed: Callable[[AlgomeshError], Any], inputs: Iterable[Any], *,
         concurrency: int, window: int | None, progress: Progress | None) -> Iterator[Any]:
    """Responses (finished) in input order. ``pipe(x)`` must return a Response, whose
    ``_future`` is a ``concurrent.futures.Future``; ``failed(exc)`` makes a failed one.
    ``window``: most responses held at once (None: no bound beyond ``concurrency`` running)."""
    check_concurrency(concurrency)
    if window is not None:
        window = max(window, concurrency)
    source = iter(inputs)
    return _imap(pipe, failed, source, concurrency, window, progress)


def _imap(pipe: Callable[[Any], Any], failed: Callable[[AlgomeshError], Any], source: Iterator[Any],
          concurrency: int, window: int | None, progress: Progress | None) -> Iterator[Any]:
    held: collections.deque[Any] = collections.deque()   # started, not yet yielded, in input order
    running: set[concurrent.futures.Future[Any]] = set()
    done = failures = 0
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < concurrency and (window is None or len(held) < window):
                try:
                    value = next(source)
                except StopIteration:
                    exhausted = True
                    break
                try:
                    response = pipe(value)
                except AlgomeshError as exc:  # refused before it left: this input's error
                    response = failed(exc)
                held.append(response)
                running.add(response._future)
            if not held:
                return
            if not held[0].done():
                concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            finished = {f for f in running if f.done()}
            running -= finished
            done += len(finished)
            failures += sum(1 for f in finished if f.exception() is not None)
            if progress is not None:
                progress.update(done, failures)
            while held and held[0].done():
                yield held.popleft()
    finally:
        if progress is not None:
            progress.update(done, failures, final=True)


# ---------------------------------------------------------------------------- asyncio


async def _pull(source: Any) -> tuple[bool, Any]:
    """The next input of a sync or async iterator: (True, value) or (False, None) at its end."""
    if hasattr(source, "__anext__"):
        try:
            return True, await source.__anext__()
        except StopAsyncIteration:
            return False, None
    try:
        return True, next(source)
    except StopIteration:
        return False, None


def aimap(pipe: Callable[[Any], Any], failed: Callable[[AlgomeshError], Any],
          inputs: Iterable[Any] | AsyncIterable[Any], *, concurrency: int, window: int | None,
          progress: Progress | None) -> AsyncIterator[Any]:
    """The asyncio form of ``imap``: ``pipe(x)`` returns an AsyncResponse (``_task``)."""
    check_concurrency(concurrency)
    if window is not None:
        window = max(window, concurrency)
    source = inputs.__aiter__() if hasattr(inputs, "__aiter__") else iter(inputs)  # type: ignore[union-attr]
    return _aimap(pipe, failed, source, concurrency, window, progress)


async def _aimap(pipe: Callable[[Any], Any], failed: Callable[[AlgomeshError], Any], source: Any,
                 concurrency: int, window: int | None, progress: Progress | None) -> AsyncIterator[Any]:
    held: collections.deque[Any] = collections.deque()
    running: set[asyncio.Future[Any]] = set()
    done = failures = 0
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < concurrency and (window is None or len(held) < window):
                more, value = await _pull(source)
                if not more:
                    exhausted = True
                    break
                try:
                    response = pipe(value)
                except AlgomeshError as exc:
                    response = failed(exc)
                held.append(response)
                running.add(response._task)
            if not held:
                return
            if not held[0].done():
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            finished = {t for t in running if t.done()}
            running -= finished
            done += len(finished)
            # .exception() also marks each error retrieved: it lives on in its response
            failures += sum(1 for t in finished if t.cancelled() or t.exception() is not None)
            if progress is not None:
                progress.update(done, failures)
            while held and held[0].done():
                yield held.popleft()
    finally:
        for task in running:  # the caller stopped early: calls nobody will read
            task.cancel()
        if progress is not None:
            progress.update(done, failures, final=True)


# ---------------------------------------------------------------------------- the SDK's methods
# Algorithm, AsyncAlgorithm, Pipeline and AsyncPipeline call these: ``subject`` has
# ``pipe(input)`` and reads as its target (or its stages) for the progress bar's label.


def _label(subject: Any) -> str:
    return str(getattr(subject, "target", subject))


def run_sync(subject: Any, inputs: Iterable[Any], concurrency: int, *, progress: bool | None,
             total: int | None, bounded: bool, method: str) -> Iterator[Any]:
    from ._client import Response, _running_loop

    check_concurrency(concurrency)
    if _running_loop() is not None:
        raise RuntimeError(f"{method} would block the running event loop; "
                           "use algomesh.async_client() and `await algo.map(...)`")

    def failed(exc: AlgomeshError) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_exception(exc)
        return Response(future)

    return imap(subject.pipe, failed, inputs, concurrency=concurrency,
                window=WINDOW_PER_SLOT * concurrency if bounded else None,
                progress=Progress.maybe(progress, _total(inputs, total), _label(subject)))


def run_async(subject: Any, inputs: Any, concurrency: int, *, progress: bool | None,
              total: int | None, bounded: bool) -> AsyncIterator[Any]:
    from ._client import AsyncResponse

    check_concurrency(concurrency)

    def failed(exc: AlgomeshError) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
        return AsyncResponse(future)

    return aimap(subject.pipe, failed, inputs, concurrency=concurrency,
                 window=WINDOW_PER_SLOT * concurrency if bounded else None,
                 progress=Progress.maybe(progress, _total(inputs, total), _label(subject)))


async def collect(responses: AsyncIterator[Any]) -> list[Any]:
    return [r async for r in responses]
