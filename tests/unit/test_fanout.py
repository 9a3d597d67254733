"""The fan-out engine and composition, without a mesh: ``pipe`` here is a function that
returns real SDK responses completed by a thread pool (sync) or by tasks (asyncio), so the
order, the bounds, laziness and the progress line can be measured exactly."""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import itertools
import random
import threading
import time

import pytest

import algomesh
from algomesh import _fanout
from algomesh._client import AsyncResponse, Response, _Raw
from algomesh._payload import encode
from algomesh.v1 import payload_pb2
from algomesh._compose import in_stage


def raw(value) -> _Raw:
    """What a finished call holds: an undecoded CallResponse."""
    return _Raw(payload_pb2.CallResponse(output=encode(value)).SerializeToString(), ())


class Subject:
    """Something with ``pipe(x) -> Response`` that counts calls in flight."""

    def __init__(self, work, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self.work, self.pool = work, pool
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.started = 0
        self.target = "t/subject"

    def _run(self, x):
        try:
            return raw(self.work(x))
        finally:
            with self.lock:
                self.in_flight -= 1

    def pipe(self, x) -> Response:
        with self.lock:
            self.started += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return Response(self.pool.submit(self._run, x))


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as p:
        yield p


def sleepy(x):
    time.sleep(random.uniform(0, 0.02))
    if x % 5 == 3:
        raise algomesh.AlgorithmError(f"no {x}", metadata={"error_type": "ValueError"})
    return x * 10


def test_results_come_in_input_order_with_per_item_errors_and_the_bound_held(pool):
    s = Subject(sleepy, pool)
    out = list(_fanout.run_sync(s, range(40), 4, progress=False, total=None, bounded=False, method="map"))
    assert len(out) == 40 and all(r.done() for r in out)
    for i, r in enumerate(out):
        if i % 5 == 3:
            assert not r.ok and isinstance(r.error, algomesh.AlgorithmError) and r.error.message == f"no {i}"
            with pytest.raises(algomesh.AlgorithmError):
                r.result
        else:
            assert r.ok and r.error is None and r.result == i * 10
    assert s.max_in_flight == 4


def test_a_generator_is_pulled_only_as_slots_free_and_imap_holds_a_bounded_window(pool):
    pulled = 0

    def numbers():  # endless: materialising it would never return
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    s = Subject(lambda x: (time.sleep(0.001 * (x % 7)), x)[1], pool)
    window = _fanout.WINDOW_PER_SLOT * 3
    seen = []
    for r in _fanout.run_sync(s, numbers(), 3, progress=False, total=None, bounded=True, method="imap"):
        seen.append(r.result)
        assert pulled - len(seen) < window  # started but not yet yielded: bounded
        if len(seen) == 200:
            break
    assert seen == list(range(200))
    assert s.max_in_flight <= 3


def test_a_slow_head_does_not_stop_the_others_from_running(pool):
    # item 0 takes 0.3 s, the rest none: map keeps 4 running meanwhile and finishes in ~0.3 s
    s = Subject(lambda x: (time.sleep(0.3 if x == 0 else 0.01), x)[1], pool)
    t0 = time.monotonic()
    out = list(_fanout.run_sync(s, range(60), 4, progress=False, total=None, bounded=False, method="map"))
    assert [r.result for r in out] == list(range(60))
    assert time.monotonic() - t0 < 0.3 + 0.5


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_concurrency_must_be_a_positive_integer(pool, bad):
    s = Subject(lambda x: x, pool)
    with pytest.raises(algomesh.InvalidError, match="concurrency must be a positive integer"):
        _fanout.run_sync(s, [1], bad, progress=False, total=None, bounded=False, method="map")
    assert s.started == 0


def test_a_refused_input_is_that_items_error(pool):
    class Picky(Subject):
        def pipe(self, x):
            if x == "bad":
                raise algomesh.InvalidError("cannot encode")
            return super().pipe(x)

    out = list(_fanout.run_sync(Picky(lambda x: x, pool), ["a", "bad", "c"], 2, progress=False, total=None,
                                bounded=False, method="map"))
    assert [r.ok for r in out] == [True, False, True]
    assert out[1].error.reason == "INVALID_INPUT"


def test_sync_map_refuses_to_block_a_running_loop(pool):
    s = Subject(lambda x: x, pool)

    async def main():
        with pytest.raises(RuntimeError, match="would block the running event loop"):
            _fanout.run_sync(s, [1], 1, progress=False, total=None, bounded=False, method="Algorithm.map")

    asyncio.run(main())
    assert s.started == 0


# ---------------------------------------------------------------------------- asyncio


class AsyncSubject:
    def __init__(self) -> None:
        self.in_flight = self.max_in_flight = 0
        self.target = "t/async"

    async def _run(self, x):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(random.uniform(0, 0.01))
            if x == 7:
                raise algomesh.AlgorithmError("seven")
            return raw(x + 1)
        finally:
            self.in_flight -= 1

    def pipe(self, x) -> AsyncResponse:
        return AsyncResponse(asyncio.ensure_future(self._run(x)))


def test_async_map_keeps_order_errors_and_bound_and_takes_async_iterables():
    async def inputs():
        for i in range(30):
            await asyncio.sleep(0)
            yield i

    async def main():
        s = AsyncSubject()
        out = await _fanout.collect(_fanout.run_async(s, inputs(), 5, progress=False, total=None, bounded=False))
        return s, out

    s, out = asyncio.run(main())
    assert s.max_in_flight == 5
    assert [r.error.message if not r.ok else r.result for r in out] == \
        [i + 1 if i != 7 else "seven" for i in range(30)]


def test_async_imap_stopped_early_cancels_what_nobody_will_read():
    async def main():
        s = AsyncSubject()
        it = _fanout.run_async(s, range(1000), 4, progress=False, total=None, bounded=True)
        first = [r async for r in _take(it, 5)]
        await it.aclose()
        await asyncio.sleep(0.05)
        return s, first

    s, first = asyncio.run(main())
    assert [r.result for r in first] == [1, 2, 3, 4, 5]
    assert s.in_flight == 0


async def _take(it, n):
    async for r in it:
        yield r
        n -= 1
        if n == 0:
            return


# ---------------------------------------------------------------------------- progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_reads_like_a_bar():
    p = _fanout.Progress(io.StringIO(), 100, "demo/x")
    line = p.line(42, 0, now=p.start + 10)
    assert line == "demo/x 42/100 ▕██████████░░░░░░░░░░░░░░▏ 4.2/s eta 14s"
    assert p.line(100, 3, now=p.start + 20) == "demo/x 100/100 ▕████████████████████████▏ 5.0/s 3 failed"
    assert _fanout.Progress(io.StringIO(), None).line(7, 0, now=time.monotonic() + 1e6) == "7 done 0.0/s"


def test_progress_is_drawn_in_place_on_a_terminal_only(monkeypatch, pool):
    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    list(_fanout.run_sync(Subject(lambda x: x, pool), range(10), 2, progress=None, total=None,
                          bounded=False, method="map"))
    drawn = tty.getvalue()
    assert drawn.startswith("\r") and drawn.endswith("\n") and drawn.count("\n") == 1
    assert drawn.rsplit("\r", 1)[1].startswith("t/subject 10/10 ▕" + "█" * 24 + "▏")

    tty2 = Tty()
    monkeypatch.setattr("sys.stderr", tty2)
    list(_fanout.run_sync(Subject(lambda x: x, pool), range(10), 2, progress=False, total=None,
                          bounded=False, method="map"))
    assert tty2.getvalue() == ""

    plain = io.StringIO()  # not a terminal: nothing unless forced
    monkeypatch.setattr("sys.stderr", plain)
    list(_fanout.run_sync(Subject(lambda x: x, pool), iter(range(10)), 2, progress=None, total=None,
                          bounded=False, method="map"))
    assert plain.getvalue() == ""
    list(_fanout.run_sync(Subject(lambda x: x, pool), iter(range(10)), 2, progress=True, total=None,
                          bounded=False, method="map"))
    assert plain.getvalue().rsplit("\r", 1)[1].startswith("t/subject 10 done ")


# ---------------------------------------------------------------------------- composition


def test_composition_flattens_and_refuses_what_is_not_a_stage():
    c = algomesh.client("k", "127.0.0.1:9")
    a, b, d = c.algo("x/a"), c.algo("x/b/1.*"), c.algo("x/d/1.2.3")
    p = a | b | d
    assert isinstance(p, algomesh.Pipeline) and len(p) == 3
    assert p == (a | (b | d)) == ((a | b) | d)
    assert [str(s.target) for s in (p | p).stages] == ["x/a", "x/b/1.*", "x/d/1.2.3"] * 2
    assert repr(p) == "<algomesh.Pipeline x/a | x/b/1.* | x/d/1.2.3>"
    with pytest.raises(TypeError, match="must be an algomesh Algorithm or Pipeline, not int"):
        a | 3
    ac = algomesh.async_client("k", "127.0.0.1:9")
    with pytest.raises(TypeError, match="one kind of client"):
        a | ac.algo("x/y")
    assert repr(ac.algo("x/y") | ac.algo("x/z")) == "<algomesh.AsyncPipeline x/y | x/z>"
    c.close()


def test_a_stage_error_keeps_its_type_and_names_the_stage():
    c = algomesh.client("k", "127.0.0.1:9")
    stages = (c.algo("x/a") | c.algo("x/b")).stages
    exc = algomesh.AlgorithmError("boom", metadata={"algorithm": "x/b", "error_type": "KeyError"}, stacktrace="tb")
    named = in_stage(exc, 1, stages)
    assert type(named) is algomesh.AlgorithmError and named.reason == "ALGORITHM_ERROR"
    assert str(named) == "ALGORITHM_ERROR: stage 2 of 2 (x/b): boom"
    assert named.metadata == {"algorithm": "x/b", "error_type": "KeyError", "stage": "2", "stage_target": "x/b"}
    assert named.stacktrace == "tb" and named.error_type == "KeyError"
    c.close()
