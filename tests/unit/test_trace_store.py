"""The trace store's bounds (real SQLite): spans past their age and the oldest beyond
``max_spans`` go, in sweeps rather than with every batch."""
import time

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from algomesh.sidecar.traces import TraceStore


def batch(first: int, n: int, start_ns: int) -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(first, first + n):
        spans.add(trace_id=i.to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"), name=f"s{i}", kind=2,
                  start_time_unix_nano=start_ns + i, end_time_unix_nano=start_ns + i + 1000)
    return request


def count(store: TraceStore) -> int:
    return store._db.execute("SELECT count(*) FROM spans").fetchone()[0]


def test_the_oldest_beyond_max_spans_go_once_the_slack_is_used(tmp_path):
    store = TraceStore(tmp_path / "t.db", max_spans=1000)    # slack: 100 spans
    now = time.time_ns()
    for b in range(10):
        store.add(batch(b * 100, 100, now))
    assert count(store) == 1000
    store.add(batch(1000, 100, now))                         # 1100: within the slack, kept
    assert count(store) == 1100
    store.add(batch(1100, 50, now))                          # past it: back to max_spans, newest kept
    assert count(store) == 1000
    names = {r[0] for r in store._db.execute("SELECT name FROM spans")}
    assert "s1149" in names and "s150" in names and "s149" not in names


def test_spans_sent_again_count_once_and_none_is_lost(tmp_path):
    store = TraceStore(tmp_path / "t.db", max_spans=1000)
    now = time.time_ns()
    for _ in range(20):                                       # the same 100 spans, again and again
        store.add(batch(0, 100, now))
    assert count(store) == 100


def test_spans_past_their_age_go_at_the_next_sweep(tmp_path):
    store = TraceStore(tmp_path / "t.db", retention=60)
    old = time.time_ns() - 120 * 10**9
    store.add(batch(0, 10, old))                              # the first add sweeps: already too old
    assert count(store) == 0
    store._next_age_sweep = 0.0
    store.add(batch(10, 10, time.time_ns()))
    assert count(store) == 10


def test_a_store_reopened_knows_how_many_it_holds(tmp_path):
    store = TraceStore(tmp_path / "t.db", max_spans=1000)
    now = time.time_ns()
    store.add(batch(0, 1000, now))
    store._db.close()
    again = TraceStore(tmp_path / "t.db", max_spans=1000)
    again.add(batch(1000, 101, now))
    assert count(again) == 1000
