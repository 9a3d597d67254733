"""The result cache: LRU and byte accounting, and the layer's rules (sidecar/cache.py)."""
import asyncio
import time

import pytest

from algomesh import _wire
from algomesh._errors import AlgomeshError, error
from algomesh.registry.keys import Principal
from algomesh.sidecar.cache import (ENTRY_OVERHEAD, ResultCache, cache_mb, entry_size, request_key,
                                    result_cache)
from algomesh.sidecar.stack import Call, Reply

TRAILING = ((_wire.ALGORITHM_KEY, "t/det"), (_wire.VERSION_KEY, "1.0.0"))
HIT = (_wire.CACHE_HIT_KEY, "1")


def test_entry_size_counts_body_trailers_and_overhead():
    assert entry_size(b"x" * 10, (("ab", "cde"),)) == 10 + 5 + ENTRY_OVERHEAD


def test_bytes_are_accounted_and_least_recently_used_is_evicted_first():
    one = entry_size(b"a" * 100, ())
    cache = ResultCache(3 * one, max_entry=one)
    for key in (b"1", b"2", b"3"):
        assert cache.put(key, key * 100, ())
    assert len(cache) == 3 and cache.bytes == 3 * one
    assert cache.get(b"1") == (b"1" * 100, ())      # 1 is now the most recently used
    assert cache.put(b"4", b"4" * 100, ())          # evicts 2, the least recently used
    assert b"2" not in cache and all(k in cache for k in (b"1", b"3", b"4"))
    assert cache.bytes == 3 * one and cache.evictions == 1
    assert cache.get(b"2") is None


def test_a_bigger_entry_evicts_as_many_as_it_needs():
    small = entry_size(b"s", ())
    cache = ResultCache(4 * small + 10, max_entry=4 * small + 10)
    for i in range(4):
        cache.put(bytes([i]), b"s", ())
    big = b"B" * (3 * small - ENTRY_OVERHEAD)       # needs three small ones' room
    assert cache.put(b"big", big, ())
    assert len(cache) == 2 and b"big" in cache and bytes([3]) in cache
    assert cache.bytes == entry_size(big, ()) + small <= cache.max_bytes
    assert cache.evictions == 3


def test_replacing_a_key_does_not_count_it_twice():
    cache = ResultCache(10_000)
    cache.put(b"k", b"x" * 100, TRAILING)
    cache.put(b"k", b"y" * 50, TRAILING)
    assert len(cache) == 1 and cache.bytes == entry_size(b"y" * 50, TRAILING)
    assert cache.get(b"k") == (b"y" * 50, TRAILING)


def test_responses_over_an_eighth_of_the_bound_are_not_kept():
    cache = ResultCache(8 * 1024)
    assert cache.max_entry == 1024
    assert not cache.put(b"big", b"x" * (1024 - ENTRY_OVERHEAD + 1), ())
    assert len(cache) == 0 and cache.bytes == 0
    assert cache.put(b"fits", b"x" * (1024 - ENTRY_OVERHEAD), ())


def test_the_bound_in_mib_is_checked():
    assert cache_mb(None) == 64.0 and cache_mb("") == 64.0
    assert cache_mb("0.25") == 0.25 and cache_mb(0) == 0.0
    for bad in ("-1", "lots", "nan", "inf", 2**21):
        with pytest.raises(AlgomeshError) as info:
            cache_mb(bad)
        assert info.value.reason == "INVALID_INPUT"


# the layer --------------------------------------------------------------------------------


class Algorithm:
    """A terminal handler that counts its invocations: answers its input reversed, fails
    on b"fail", and waits on ``gate`` if one is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, call: Call) -> Reply:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if call.body == b"fail":
            raise error("ALGORITHM_ERROR", "it failed")
        return Reply(call.body[::-1], list(TRAILING))


def _call(body: bytes, **kw) -> Call:
    return Call(body=body, target="", deadline=time.monotonic() + 10, **kw)


def _stack(max_bytes: int = 1 << 20):
    algo, cache = Algorithm(), ResultCache(max_bytes)
    return algo, cache, result_cache(cache)(algo)


def test_a_second_identical_call_is_a_hit_with_the_same_bytes_and_trailers():
    async def run():
        algo, cache, handle = _stack()
        first = await handle(_call(b"abc"))
        second = await handle(_call(b"abc"))
        other = await handle(_call(b"abd"))
        return algo.calls, first, second, other
    calls, first, second, other = asyncio.run(run())
    assert calls == 2
    assert first.body == second.body == b"cba" and other.body == b"dba"
    assert HIT not in first.trailing and HIT not in other.trailing
    assert second.trailing == [*TRAILING, HIT]


def test_errors_are_not_cached():
    async def run():
        algo, cache, handle = _stack()
        for _ in range(2):
            with pytest.raises(AlgomeshError):
                await handle(_call(b"fail"))
        return algo.calls, len(cache)
    assert asyncio.run(run()) == (2, 0)


def test_bypass_neither_reads_nor_writes():
    async def run():
        algo, cache, handle = _stack()
        await handle(_call(b"abc", cache=False))
        assert len(cache) == 0                       # not written
        await handle(_call(b"abc"))
        reply = await handle(_call(b"abc", cache=False))  # not read
        return algo.calls, reply
    calls, reply = asyncio.run(run())
    assert calls == 3 and HIT not in reply.trailing


def test_no_cache_is_no_layer():
    algo = Algorithm()
    assert result_cache(None)(algo) is algo
    assert result_cache(ResultCache(0))(algo) is algo


def test_a_key_without_pipelines_is_cached_apart():
    plain, forbidden = _call(b"x"), _call(b"x", principal=Principal("o", pipelines=False))
    assert request_key(plain) != request_key(forbidden)
    assert request_key(plain) == request_key(_call(b"x", principal=Principal("o")))
    assert request_key(plain) != request_key(_call(b"y"))


def test_concurrent_identical_misses_compute_once():
    async def run():
        algo, cache, handle = _stack()
        algo.gate = asyncio.Event()
        calls = [asyncio.ensure_future(handle(_call(b"same"))) for _ in range(5)]
        await asyncio.sleep(0.05)
        algo.gate.set()
        return algo.calls, await asyncio.gather(*calls)
    calls, replies = asyncio.run(run())
    assert calls == 1
    assert {r.body for r in replies} == {b"emas"}
    assert sum(HIT in r.trailing for r in replies) == 4


def test_when_the_first_of_concurrent_misses_fails_the_others_compute_themselves():
    async def run():
        algo, cache, handle = _stack()
        algo.gate = asyncio.Event()
        calls = [asyncio.ensure_future(handle(_call(b"fail"))) for _ in range(3)]
        await asyncio.sleep(0.05)
        algo.gate.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        return algo.calls, results
    calls, results = asyncio.run(run())
    assert calls == 3
    assert all(isinstance(r, AlgomeshError) and r.reason == "ALGORITHM_ERROR" for r in results)


def test_a_waiter_giving_up_does_not_cancel_the_first_call():
    async def run():
        algo, cache, handle = _stack()
        algo.gate = asyncio.Event()
        first = asyncio.ensure_future(handle(_call(b"abc")))
        await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await handle(_call(b"abc"))
        algo.gate.set()
        reply = await first
        return algo.calls, reply, len(cache)
    calls, reply, kept = asyncio.run(run())
    assert calls == 1 and reply.body == b"cba" and kept == 1


def test_the_cache_gauges_read_the_cache_at_each_scrape():
    from algomesh.sidecar.measure import MeshMetrics

    metrics, cache = MeshMetrics(), ResultCache(entry_size(b"x" * 10, ()) * 2, max_entry=1 << 20)
    metrics.watch_cache(cache, "t/det", "1.0.0")
    labels = '{algorithm="t/det",version="1.0.0"}'
    assert f"algomesh_cache_entries{labels} 0" in metrics.render().decode()
    for key in (b"1", b"2", b"3"):
        cache.put(key, b"x" * 10, ())
    text = metrics.render().decode()
    assert f"algomesh_cache_entries{labels} 2" in text
    assert f"algomesh_cache_bytes{labels} {2 * entry_size(b'x' * 10, ())}" in text
    assert f"algomesh_cache_evictions{labels} 1" in text


def test_a_data_reference_is_recognised_from_the_request_bytes_alone():
    from algomesh._data import DataFile
    from algomesh._payload import encode
    from algomesh.sidecar.cache import refers_to_data
    from algomesh.v1 import payload_pb2

    def body(value) -> bytes:
        return payload_pb2.CallRequest(input=encode(value), capture_stdout=True).SerializeToString()

    assert refers_to_data(body(DataFile("data://alice/c/x.bin")))
    assert refers_to_data(body(DataFile("data://alice/c/" + "y" * 200 + "/" + "z" * 200)))  # a two-byte length varint
    for other in ("data://alice/c/x.bin", b"\x08\x04", {"a": 1}, "", b""):
        assert not refers_to_data(body(other)), other
    assert not refers_to_data(b"")
