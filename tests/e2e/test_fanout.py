"""Fan-out and composition against a real mesh: ``algo.map(inputs, concurrency=N)`` and
``(a | b | c)``. Every number below is measured by the algorithms themselves (their pid,
their own clock) or read back from the control plane's traces."""
import asyncio
import time

import pytest

import algomesh
from tests.conftest import stored_trace, write_algorithm

# Exactly the instances a test scales to; and each instance may run 8 calls at once, so
# the only bound on concurrency is the one map keeps.
SCALING = "[scaling]\nconcurrency = 8\nmax_in_flight = 64\nscale_up_in_flight = 1000\n"

PROBE = """\
import os, time
def apply(x):
    start = time.time()
    time.sleep(x.get("sleep", 0))
    if x.get("fail"):
        raise ValueError(f"item {x['i']} refused")
    return {"i": x["i"], "pid": os.getpid(), "start": start, "end": time.time()}
"""

# Fans out from inside an algorithm: to fo/probe, or around a loop back to itself.
FAN = """\
import algomesh
def apply(x):
    client = algomesh.client()
    if x["to"] == "fo/probe":
        out = client.algo("fo/probe").map([{"i": i, "sleep": 0.05} for i in range(x["n"])], concurrency=3)
        return [r.result["i"] for r in out]
    out = client.algo(x["to"]).map(range(x["n"]), concurrency=2)
    return [r.error.reason if r.error else r.result for r in out]
"""
BACK = "import algomesh\ndef apply(i):\n    return algomesh.client().algo('fo/fan').pipe({'to': 'fo/probe', 'n': 1}).result\n"

UPPER = "def apply(text):\n    return text.upper()\n"
WORDS = """\
def apply(text):
    if "FAIL" in text:
        raise KeyError("no words for " + text)
    return text.split()
"""
COUNT = "def apply(words):\n    return {'n': len(words), 'first': words[0] if words else None}\n"


@pytest.fixture(scope="module", autouse=True)
def published(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("fanout")
    mesh.publish(write_algorithm(d / "probe", "fo/probe", "1.0.0", PROBE, extra_toml=SCALING))
    mesh.publish(write_algorithm(d / "fan", "fo/fan", "1.0.0", FAN,
                                 extra_toml='[permissions]\ncan_call = ["fo/probe", "fo/back"]\n' + SCALING))
    mesh.publish(write_algorithm(d / "back", "fo/back", "1.0.0", BACK,
                                 extra_toml='[permissions]\ncan_call = ["fo/fan"]\n'))
    for name, code in (("upper", UPPER), ("words", WORDS), ("count", COUNT)):
        mesh.publish(write_algorithm(d / name, f"fo/{name}", "1.0.0", code))


@pytest.fixture(scope="module")
def probe(client):
    assert len(client.scale("fo/probe", 2).instances) == 2
    return client.algo("fo/probe").set_options(timeout=60)


def overlap(results) -> int:
    """The most calls the algorithm was running at one moment (its own timestamps)."""
    events = sorted([(r["start"], 1) for r in results] + [(r["end"], -1) for r in results])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_results_come_back_in_input_order_whatever_each_call_takes(probe):
    # the first inputs are the slowest: they finish last, yet come back first
    items = [{"i": i, "sleep": 0.03 * (16 - i)} for i in range(16)]
    out = probe.map(items, concurrency=16)
    assert [r.result["i"] for r in out] == list(range(16))
    ends = [r.result["end"] for r in out]
    # really finished out of order (not every call runs at once on a busy machine: the mesh
    # balances each call on its own, so one instance may queue some; some still overtake)
    assert ends != sorted(ends), ends


def test_one_input_failing_does_not_fail_the_others(probe):
    out = probe.map([{"i": i, "fail": i % 4 == 1} for i in range(12)], concurrency=4)
    assert [r.ok for r in out] == [i % 4 != 1 for i in range(12)]
    for i, r in enumerate(out):
        if i % 4 == 1:
            assert isinstance(r.error, algomesh.AlgorithmError)
            assert r.error.error_type == "ValueError" and f"item {i} refused" in r.error.message
            with pytest.raises(algomesh.AlgorithmError):
                r.result
        else:
            assert r.error is None and r.result["i"] == i


@pytest.mark.parametrize("concurrency", [1, 3])
def test_no_more_than_concurrency_calls_run_at_once(probe, concurrency):
    items = [{"i": i, "sleep": 0.15} for i in range(4 * concurrency)]
    t0 = time.monotonic()
    out = probe.map(iter(items), concurrency=concurrency)   # a generator: no len, pulled lazily
    elapsed = time.monotonic() - t0
    results = [r.result for r in out]
    assert overlap(results) <= concurrency
    assert overlap(results) >= min(concurrency, 2)            # and it did fan out
    assert elapsed >= 4 * 0.15                                  # four rounds, at least


def test_calls_spread_over_the_instances(client, probe):
    out = probe.map([{"i": i, "sleep": 0.05} for i in range(40)], concurrency=4)
    pids = [r.result["pid"] for r in out]
    assert len(set(pids)) == 2, pids
    assert min(pids.count(p) for p in set(pids)) >= 5  # both did a real share
    assert len(client.instances("fo/probe")) == 2


def test_a_progress_bar_is_drawn_when_forced(probe, capfd):
    capfd.readouterr()
    out = probe.map([{"i": i, "sleep": 0.1} for i in range(12)], concurrency=4, progress=True)
    assert all(r.ok for r in out)
    err = capfd.readouterr().err
    assert err.count("\r") >= 2 and err.endswith("\n")           # redrawn in place, one line at the end
    last = err.rstrip("\n").rsplit("\r", 1)[1].rstrip()
    assert last.startswith("fo/probe 12/12 ▕" + "█" * 24 + "▏ ") and last.endswith("/s"), last
    assert "\n" not in err.rstrip("\n")


def test_no_progress_bar_when_stderr_is_not_a_terminal(probe, capfd):
    capfd.readouterr()
    probe.map([{"i": i} for i in range(4)], concurrency=2)
    assert capfd.readouterr().err == ""


def test_the_async_client_maps_too(mesh):
    async def main():
        async with algomesh.async_client(mesh.api_key, mesh.address) as c:
            async def items():
                for i in range(10):
                    yield {"i": i, "sleep": 0.02 * (10 - i), "fail": i == 4}
            out = await c.algo("fo/probe").map(items(), concurrency=5)
            return [r.error.reason if r.error else r.result["i"] for r in out]

    assert asyncio.run(main()) == [0, 1, 2, 3, "ALGORITHM_ERROR", 5, 6, 7, 8, 9]


def test_map_inside_an_algorithm_carries_the_call_it_serves(client):
    resp = client.algo("fo/fan").set_options(timeout=60).pipe({"to": "fo/probe", "n": 6})
    assert resp.result == [0, 1, 2, 3, 4, 5]
    # one trace: the six pipes are children of fo/fan's apply
    trace = stored_trace(client, resp.metadata.trace_id, 3 + 6 * 3)
    names = [s.name for s in trace.spans]
    assert names.count("pipe fo/probe") == 6 and names.count("apply fo/probe@1.0.0") == 6
    by_id = {s.span_id: s.name for s in trace.spans}
    assert {by_id.get(s.parent_span_id) for s in trace.spans if s.name == "pipe fo/probe"} == {"apply fo/fan@1.0.0"}
    # and the pipeline's path: fo/fan maps to fo/back, which pipes back to fo/fan: a loop,
    # refused per item, which the sidecar can only see if map's calls carry the call token
    out = client.algo("fo/fan").set_options(timeout=60).pipe({"to": "fo/back", "n": 3}).result
    assert out == ["CALL_CYCLE"] * 3


def test_a_composed_pipeline_equals_manual_chaining_in_one_trace(client):
    upper, words, count = client.algo("fo/upper"), client.algo("fo/words"), client.algo("fo/count")
    pipeline = upper | words | count
    assert isinstance(pipeline, algomesh.Pipeline)
    assert repr(pipeline) == "<algomesh.Pipeline fo/upper | fo/words | fo/count>"
    text = "pipelines beat monoliths"
    resp = pipeline.pipe(text)
    assert resp.result == count.pipe(words.pipe(upper.pipe(text))).result == {"n": 3, "first": "PIPELINES"}
    assert resp.metadata.algorithm == "fo/count"
    trace = stored_trace(client, resp.metadata.trace_id, 9, names={"call fo/upper", "call fo/words", "call fo/count"})
    spans = {s.name: s for s in trace.spans}
    assert {"call fo/upper", "call fo/words", "call fo/count"} <= set(spans), sorted(spans)
    assert {s.trace_id for s in trace.spans} == {resp.metadata.trace_id}
    by_id = {s.span_id: s.name for s in trace.spans}
    assert by_id[spans["call fo/words"].parent_span_id] == "call fo/upper"   # chained as `b.pipe(a.pipe(x))`
    assert by_id[spans["call fo/count"].parent_span_id] == "call fo/words"
    # | takes more stages, and a pipeline chains onto a pending response
    assert (upper | (words | count)).pipe(upper.pipe("x y")).result == {"n": 2, "first": "X"}


def test_a_failing_stage_is_named_and_the_rest_are_not_called(client):
    pipeline = client.algo("fo/upper") | client.algo("fo/words") | client.algo("fo/count")
    with pytest.raises(algomesh.AlgorithmError) as e:
        pipeline.pipe("please fail now").result
    assert e.value.reason == "ALGORITHM_ERROR" and e.value.error_type == "KeyError"
    assert e.value.message.startswith("stage 2 of 3 (fo/words): ")
    assert e.value.metadata["stage"] == "2" and e.value.metadata["stage_target"] == "fo/words"
    trace = stored_trace(client, e.value.metadata["trace_id"], 6)
    assert not any("fo/count" in s.name for s in trace.spans)
    with pytest.raises(algomesh.NotFoundError, match=r"stage 3 of 3 \(fo/missing\)"):
        (client.algo("fo/upper") | client.algo("fo/words") | client.algo("fo/missing")).pipe("a b").result


def test_a_composed_pipeline_maps(client):
    pipeline = client.algo("fo/upper") | client.algo("fo/words") | client.algo("fo/count")
    out = pipeline.map(["a b", "fail here", "c d e", ""], concurrency=2)
    assert [r.result if r.ok else r.error.metadata["stage"] for r in out] == \
        [{"n": 2, "first": "A"}, "2", {"n": 3, "first": "C"}, {"n": 0, "first": None}]


def test_async_pipelines_compose_too(mesh):
    async def main():
        async with algomesh.async_client(mesh.api_key, mesh.address) as c:
            pipeline = c.algo("fo/upper") | c.algo("fo/words") | c.algo("fo/count")
            one = (await pipeline.pipe("async as well")).result
            many = await pipeline.map(["x", "FAIL"], concurrency=2)
            return one, [r.result if r.ok else str(r.error) for r in many]

    one, many = asyncio.run(main())
    assert one == {"n": 3, "first": "ASYNC"}
    assert many[0] == {"n": 1, "first": "X"} and many[1].startswith("ALGORITHM_ERROR: stage 2 of 3 (fo/words): ")
