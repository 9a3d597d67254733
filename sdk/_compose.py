"""Composition: ``clean | tokenize | score`` is one callable pipeline.

``pipeline.pipe(x)`` calls the stages one after the other, each stage's output going to the
next untouched (its payload bytes are forwarded, never decoded and re-encoded), and returns
one response, the last stage's: one wait, one trace (each stage's call joins the previous
one's trace, as ``score.pipe(tokenize.pipe(clean.pipe(x)))`` does). A stage that fails
fails the pipeline with its own typed error, its message starting with the stage that
failed (``stage 2 of 3 (demo/tokenize): ...``) and its metadata holding ``stage`` (1-based)
and ``stage_target``; the stages after it are not called.

``pipeline.map(inputs, concurrency=N)`` fans the whole pipeline out: up to N inputs are
somewhere in the pipeline at once. ``pipeline | other`` appends stages (an Algorithm or
another Pipeline); pipelines are immutable.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, AsyncIterator, Iterable, Iterator

from . import _fanout
from ._client import Algorithm, AsyncAlgorithm, AsyncResponse, Response, _Raw
from ._context import CALL_CONTEXT
from ._errors import AlgomeshError, error

__all__ = ["Pipeline", "AsyncPipeline"]


def in_stage(exc: BaseException, index: int, stages: tuple[Any, ...]) -> BaseException:
    """``exc`` (raised by ``stages[index]``) as the same typed error, naming the stage."""
    if not isinstance(exc, AlgomeshError):
        return exc
    target = str(stages[index].target)
    named = type(exc)(
        f"stage {index + 1} of {len(stages)} ({target}): {exc.message}",
        reason=exc.reason,
        metadata={**exc.metadata, "stage": str(index + 1), "stage_target": target},
        stacktrace=exc.stacktrace,
    )
    return named


class _Composed:
    _kind: type = object

    def __init__(self, stages: Iterable[Any]) -> None:
        flat: list[Any] = []
        for stage in stages:
            flat.extend(self._stages_of(stage))
        if not flat:
            raise TypeError("a pipeline needs at least one stage")
        self.stages: tuple[Any, ...] = tuple(flat)

    @classmethod
    def _stages_of(cls, other: Any) -> tuple[Any, ...]:
        if isinstance(other, cls):
            return other.stages
        if isinstance(other, cls._kind):
            return (other,)
        if isinstance(other, (Algorithm, AsyncAlgorithm, _Composed)):
            raise TypeError(f"cannot compose {cls._kind.__name__} stages with {type(other).__name__}: "
                            "make every stage with one kind of client (algomesh.client() or algomesh.async_client())")
        raise TypeError(f"a pipeline stage must be an algomesh {cls._kind.__name__} or {cls.__name__}, "
                        f"not {type(other).__name__}")

    def __or__(self, other: Any) -> Any:
        return type(self)((self, *self._stages_of(other)))

    def __ror__(self, other: Any) -> Any:
        return type(self)((*self._stages_of(other), self))

    def __len__(self) -> int:
        return len(self.stages)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.stages == other.stages  # type: ignore[attr-defined]

    __hash__ = object.__hash__

    def __str__(self) -> str:
        return " | ".join(str(s.target) for s in self.stages)

    def __repr__(self) -> str:
        return f"<algomesh.{type(self).__name__} {self}>"


class Pipeline(_Composed):
    """Algorithms of one ``Client`` composed with ``|``: ``(a | b | c).pipe(x).result``."""

    _kind = Algorithm

    def pipe(self, input: Any) -> Response:
        """Start the pipeline on ``input`` (a Response passed in is chained, not awaited)."""
        out: concurrent.futures.Future[_Raw] = concurrent.futures.Future()
        token = CALL_CONTEXT.get()  # read here: the stages start from gRPC's callback threads

        def run(index: int, value: Any) -> None:
            step: concurrent.futures.Future[_Raw] = concurrent.futures.Future()
            try:
                self.stages[index]._start(value, step, token)
            except Exception as exc:  # e.g. the client was closed: fail, never hang
                step.set_exception(error("INTERNAL", f"the call could not start: {exc!r}"))
            step.add_done_callback(lambda f: after(index, f))

        def after(index: int, step: "concurrent.futures.Future[_Raw]") -> None:
            exc = step.exception()
            if exc is not None:
                out.set_exception(in_stage(exc, index, self.stages))
            elif index + 1 == len(self.stages):
                out.set_result(step.result())
            else:
                run(index + 1, step.result())

        if isinstance(input, Response):
            def begin(prev: "concurrent.futures.Future[_Raw]") -> None:
                exc = prev.exception()
                if exc is not None:
                    out.set_exception(exc)  # not a stage's error: the input's
                else:
                    run(0, prev.result())
            input._future.add_done_callback(begin)
        else:
            run(0, input)
        return Response(out, self.stages[-1]._client)

    def map(self, inputs: Iterable[Any], concurrency: int = _fanout.DEFAULT_CONCURRENCY, *,
            progress: bool | None = None, total: int | None = None) -> list[Response]:
        """Run the pipeline on every input, at most ``concurrency`` inputs in it at once;
        finished responses in input order (see ``Algorithm.map``)."""
        return list(_fanout.run_sync(self, inputs, concurrency, progress=progress, total=total,
                                     bounded=False, method="Pipeline.map"))

    def imap(self, inputs: Iterable[Any], concurrency: int = _fanout.DEFAULT_CONCURRENCY, *,
             progress: bool | None = None, total: int | None = None) -> Iterator[Response]:
        """Like ``map``, yielding each response in input order as soon as it can."""
        return _fanout.run_sync(self, inputs, concurrency, progress=progress, total=total,
                                bounded=True, method="Pipeline.imap")


class AsyncPipeline(_Composed):
    """AsyncAlgorithms composed with ``|``: ``await (a | b).pipe(x)``."""

    _kind = AsyncAlgorithm

    def pipe(self, input: Any) -> AsyncResponse:
        return AsyncResponse(asyncio.ensure_future(self._run(input, CALL_CONTEXT.get())), self.stages[-1]._client)

    async def _run(self, value: Any, token: tuple) -> _Raw:
        if isinstance(value, (AsyncResponse, Response)):
            value = (await value)._raw()
        for index, stage in enumerate(self.stages):
            try:
                value = await stage._run(value, token)
            except AlgomeshError as exc:
                raise in_stage(exc, index, self.stages) from None
        return value

    async def map(self, inputs: Any, concurrency: int = _fanout.DEFAULT_CONCURRENCY, *,
                  progress: bool | None = None, total: int | None = None) -> list[AsyncResponse]:
        """``await pipeline.map(inputs)``: finished responses in input order."""
        return await _fanout.collect(_fanout.run_async(self, inputs, concurrency, progress=progress,
                                                       total=total, bounded=False))

    def imap(self, inputs: Any, concurrency: int = _fanout.DEFAULT_CONCURRENCY, *,
             progress: bool | None = None, total: int | None = None) -> AsyncIterator[AsyncResponse]:
        """``async for response in pipeline.imap(inputs)``: in input order, as soon as it can."""
        return _fanout.run_async(self, inputs, concurrency, progress=progress, total=total, bounded=True)
