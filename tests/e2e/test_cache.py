"""Result caching end to end: a real mesh, deterministic algorithms that count their real
invocations in a file, hits seen in the response's metadata, on the span and in /metrics.

The mesh runs with ALGOMESH_CACHE_MB=0.0625 (a 64 KiB bound per instance, so an entry
is kept only up to 8 KiB) to see eviction with small payloads.
"""
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import algomesh
from tests.conftest import start_mesh, stop_mesh, write_algorithm

COUNTED = """\
import json, os, time

COUNTER = {counter!r}

def apply(input):
    with open(COUNTER, "a") as f:          # one line per real invocation
        f.write(json.dumps(input) + "\\n")
    if input == "fail":
        raise ValueError("asked to fail")
    if isinstance(input, dict):
        time.sleep(input.get("sleep", 0))
        return {{"echo": input.get("n"), "pad": "x" * input.get("pad", 0)}}
    return {{"echo": input, "pid": os.getpid()}}
"""

# Two pipelines that reuse the same deterministic stage.
VIA = """\
import algomesh

def apply(input):
    resp = algomesh.client().algo("cache/count").pipe(input)
    return {{"via": {name!r}, "result": resp.result, "hit": resp.metadata.cache_hit}}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALGOMESH_CACHE_MB", "0.0625")
        m = start_mesh(tmp_path_factory.mktemp("mesh"))
    yield m
    stop_mesh(m)


@pytest.fixture(scope="module")
def counters(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    files = {name: d / f"{name}.calls" for name in ("count", "fresh", "private")}
    mesh.publish(write_algorithm(d / "count", "cache/count", "1.0.0", COUNTED.format(counter=str(files["count"])),
                                 extra_toml="deterministic = true\n"))
    mesh.publish(write_algorithm(d / "fresh", "cache/fresh", "1.0.0", COUNTED.format(counter=str(files["fresh"]))))
    mesh.publish(write_algorithm(d / "private", "cache/private", "1.0.0",
                                 COUNTED.format(counter=str(files["private"])),
                                 extra_toml='deterministic = true\n[permissions]\ncallability = "private"\n'))
    for name in ("left", "right"):
        mesh.publish(write_algorithm(d / name, f"cache/{name}", "1.0.0", VIA.format(name=name),
                                     extra_toml='[permissions]\ncan_call = ["cache/count"]\n'))
    return files


def invocations(path, input=None) -> int:
    """How many times the algorithm really ran (on ``input``, if given)."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    if input is None:
        return len(lines)
    import json
    return sum(json.loads(line) == input for line in lines)


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                        if line and not line.startswith("#"))}


def trace_spans(client, trace_id: str, names: set[str], timeout: float = 15.0) -> dict:
    """The trace's spans by name, once all of ``names`` are stored (sidecars send in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            spans = {s.name: s for s in client.trace(trace_id).spans}
            if names <= set(spans) or time.monotonic() > deadline:
                return spans
        except algomesh.NotFoundError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_a_second_call_with_the_same_input_is_a_hit_in_metadata_span_and_metrics(mesh, client, counters):
    count = client.algo("cache/count")
    first = count.pipe("hello")
    assert first.result["echo"] == "hello" and not first.metadata.cache_hit
    second = count.pipe("hello")
    assert second.result == first.result                       # the same pid: the kept answer
    assert second.metadata.cache_hit and second.metadata.version == "1.0.0"
    assert second.metadata.algorithm == "cache/count"
    assert invocations(counters["count"], "hello") == 1        # the algorithm ran once

    # the span: the instance's SERVER span and the ingress's say so; no apply span on a hit
    spans = trace_spans(client, second.metadata.trace_id, {"call cache/count", "cache/count@1.0.0"})
    assert spans["cache/count@1.0.0"].attributes["algomesh.cache_hit"] == "true"
    assert spans["call cache/count"].attributes["algomesh.cache_hit"] == "true"
    assert "apply cache/count@1.0.0" not in spans
    missed = trace_spans(client, first.metadata.trace_id, {"cache/count@1.0.0", "apply cache/count@1.0.0"})
    assert "algomesh.cache_hit" not in missed["cache/count@1.0.0"].attributes

    # the metric, on the instance and on the control plane
    (instance,) = client.instances("cache/count")
    labels = '{surface="inbound",algorithm="cache/count",version="1.0.0"}'
    assert scrape(instance.metrics_address)[f"algomesh_cache_hits_total{labels}"] == 1
    plane = re.search(r"metrics\s+http://(\S+)/metrics", mesh.banner).group(1)
    assert scrape(plane)['algomesh_cache_hits_total{surface="ingress",algorithm="cache/count",version="1.0.0"}'] == 1


def test_a_different_input_is_a_miss(client, counters):
    count = client.algo("cache/count")
    a, b = count.pipe("one"), count.pipe("two")
    assert (a.result["echo"], b.result["echo"]) == ("one", "two")
    assert not a.metadata.cache_hit and not b.metadata.cache_hit
    # the content type is part of the key: the text "1" and the JSON number 1 are two inputs
    assert not count.pipe(1).metadata.cache_hit and not count.pipe("1").metadata.cache_hit
    assert count.pipe(1).metadata.cache_hit and count.pipe("1").metadata.cache_hit
    assert invocations(counters["count"], 1) == 1 and invocations(counters["count"], "1") == 1


def test_an_algorithm_not_declared_deterministic_is_never_cached(client, counters):
    fresh = client.algo("cache/fresh")
    for _ in range(3):
        resp = fresh.pipe("same")
        assert resp.result["echo"] == "same" and not resp.metadata.cache_hit
    assert invocations(counters["fresh"], "same") == 3


def test_cache_false_bypasses_the_cache_neither_reading_nor_writing(client, counters):
    count = client.algo("cache/count")
    assert not count.pipe("bypass").metadata.cache_hit        # computed and kept
    off = client.algo("cache/count").set_options(cache=False)
    assert not off.pipe("bypass").metadata.cache_hit          # not read
    assert invocations(counters["count"], "bypass") == 2
    assert not off.pipe("never kept").metadata.cache_hit      # not written either:
    assert not count.pipe("never kept").metadata.cache_hit    # the next normal call computes
    assert invocations(counters["count"], "never kept") == 2
    assert count.pipe("bypass").metadata.cache_hit            # and the kept one is still there


def test_two_pipelines_reusing_the_same_stage_share_its_cached_result(client, counters):
    left = client.algo("cache/left").pipe("shared input").result
    right = client.algo("cache/right").pipe("shared input").result
    assert (left["via"], right["via"]) == ("left", "right")
    assert left["result"] == right["result"] and left["result"]["echo"] == "shared input"
    assert not left["hit"] and right["hit"]                   # the second pipeline got the first's result
    direct = client.algo("cache/count").pipe("shared input")  # and so does a client calling the stage itself
    assert direct.metadata.cache_hit and direct.result == left["result"]
    assert invocations(counters["count"], "shared input") == 1


def test_errors_are_not_cached(client, counters):
    count = client.algo("cache/count")
    for _ in range(2):
        with pytest.raises(algomesh.AlgomeshError) as info:
            count.pipe("fail").result
        assert info.value.reason == "ALGORITHM_ERROR"
    assert invocations(counters["count"], "fail") == 2


def test_least_recently_used_entries_are_evicted_under_the_bound(client, counters):
    count = client.algo("cache/count")
    inputs = [{"n": i, "pad": 3000} for i in range(30)]       # ~3.3 KB each; 64 KiB holds ~19
    for x in inputs:
        assert not count.pipe(x).metadata.cache_hit
    assert count.pipe(inputs[-1]).metadata.cache_hit          # recent: kept
    assert not count.pipe(inputs[0]).metadata.cache_hit       # the oldest: evicted, computed again
    assert invocations(counters["count"], inputs[0]) == 2 and invocations(counters["count"], inputs[-1]) == 1
    # a response over an eighth of the bound (8 KiB) is never kept
    big = {"n": "big", "pad": 9000}
    assert not count.pipe(big).metadata.cache_hit and not count.pipe(big).metadata.cache_hit
    assert invocations(counters["count"], big) == 2
    # what the instance holds stays within the bound, as its /metrics say
    (instance,) = client.instances("cache/count")
    m = scrape(instance.metrics_address)
    labels = '{algorithm="cache/count",version="1.0.0"}'
    assert 16 * 3000 < m[f"algomesh_cache_bytes{labels}"] <= 64 * 1024
    assert 16 <= m[f"algomesh_cache_entries{labels}"] <= 21 and m[f"algomesh_cache_evictions{labels}"] >= 10


def test_concurrent_identical_calls_run_the_algorithm_once(client, counters):
    count, x = client.algo("cache/count"), {"n": "together", "sleep": 0.5}
    with ThreadPoolExecutor(4) as pool:
        resps = list(pool.map(lambda _: count.pipe(x), range(4)))
    assert {r.result["echo"] for r in resps} == {"together"}
    assert sum(r.metadata.cache_hit for r in resps) == 3
    assert invocations(counters["count"], x) == 1


def test_a_hit_is_still_checked_for_permission(mesh, client, counters):
    with mesh.client(client.create_key("cache").secret) as owner:
        assert not owner.algo("cache/private").pipe("mine").metadata.cache_hit
        assert owner.algo("cache/private").pipe("mine").metadata.cache_hit
    with pytest.raises(algomesh.AlgomeshError) as info:       # the admin's key is not cache's
        client.algo("cache/private").pipe("mine").result
    assert info.value.reason == "PERMISSION_DENIED"
    assert invocations(counters["private"], "mine") == 1


def test_algomesh_up_refuses_a_bad_cache_size(tmp_path):
    import subprocess
    import sys

    for bad in ("-1", "2e6", "nan"):
        out = subprocess.run([sys.executable, "-m", "algomesh.cli", "up", "--data-dir", str(tmp_path / "d"),
                              "--port", "0", "--cache-mb", bad], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "--cache-mb must be between 0 (off) and 1048576" in out.stderr, out.stderr


def test_with_several_instances_the_same_request_finds_the_same_cache(mesh, client, counters, tmp_path):
    # Each instance keeps its own cache; the routers send a deterministic algorithm's
    # request to the instance its bytes hash to, so a repeat is a hit whichever instance
    # answered first, and distinct requests still spread over the instances.
    counter = tmp_path / "spread.calls"
    mesh.publish(write_algorithm(tmp_path / "spread", "cache/spread", "1.0.0",
                                 COUNTED.format(counter=str(counter)), extra_toml="deterministic = true\n"))
    assert len(client.scale("cache/spread", 2).instances) == 2
    algo = client.algo("cache/spread")
    deadline = time.monotonic() + 10  # until the ingress's view has both (a moment after scale answers)
    while len({r.result["pid"] for r in algo.map([f"warm {i} {time.time()}" for i in range(8)])}) < 2:
        assert time.monotonic() < deadline, "the ingress never routed to the second instance"
    first = [r.result for r in algo.map([f"frame {i}" for i in range(24)], concurrency=4)]
    assert len({r["pid"] for r in first}) == 2, "distinct requests all went to one instance"
    again = algo.map([f"frame {i}" for i in range(24)], concurrency=4)
    assert all(r.metadata.cache_hit for r in again), sum(r.metadata.cache_hit for r in again)
    assert [r.result for r in again] == first
    assert invocations(counter, "frame 0") == 1 and sum(invocations(counter, f"frame {i}") for i in range(24)) == 24
    # a pipeline through another algorithm's sidecar finds the same instances' caches
    left = client.algo("cache/left")
    client.scale("cache/count", 2)
    deadline = time.monotonic() + 10  # until cache/left's sidecar has both in its view
    while len({left.pipe(f"warm {i} {time.time()}").result["result"]["pid"] for i in range(8)}) < 2:
        assert time.monotonic() < deadline, "cache/left's sidecar never routed to the second instance"
    firsts = [left.pipe(f"p{i}").result for i in range(8)]
    assert all(left.pipe(f"p{i}").result["hit"] for i in range(8)), firsts
