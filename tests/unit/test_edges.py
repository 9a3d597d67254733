"""The call graph learned from spans: counts, shares, decay, persistence (real SQLite)."""
import json

import pytest

from algomesh.sidecar.edges import CLIENT, CallGraph

T0 = 1_800_000_000.0


def span(name: str, caller: str, ms: float = 2.0, error: bool = False, kind: int = 2) -> tuple:
    """A row as traces.rows_and_attributes makes it."""
    return ("t" * 32, "s" * 16, "", name, kind, name, 0, int(ms * 1e6), 2 if error else 0, "",
            json.dumps({"algomesh.caller": caller}))


@pytest.fixture
def graph(tmp_path):
    g = CallGraph(tmp_path / "edges.db", half_life=3600)
    yield g
    g.close()


def by_pair(edges):
    return {(e.caller, e.callee): e for e in edges}


def test_inbound_spans_become_edges_with_counts_shares_errors_and_latency(graph):
    rows = []
    for i in range(10):                                   # ten client calls to A
        rows.append(span("a/a@1.0.0", CLIENT, ms=10))
        rows.append(span("b/b@2.0.0", "a/a@1.0.0", ms=4, error=(i == 0)))   # A always calls B
        if i % 2:
            rows.append(span("c/c@1.0.0", "a/a@1.0.0", ms=1))              # and C half the time
    rows += [span("apply a/a@1.0.0", "", kind=1), span("call a/a", CLIENT)]  # not calls on edges
    assert graph.observe(rows, now=T0) == 25
    e = by_pair(graph.edges(now=T0))
    assert set(e) == {(CLIENT, "a/a@1.0.0"), ("a/a@1.0.0", "b/b@2.0.0"), ("a/a@1.0.0", "c/c@1.0.0")}
    assert e[CLIENT, "a/a@1.0.0"].calls == 10 and e[CLIENT, "a/a@1.0.0"].share == 1.0
    ab, ac = e["a/a@1.0.0", "b/b@2.0.0"], e["a/a@1.0.0", "c/c@1.0.0"]
    assert ab.share == 1.0 and ac.share == 0.5
    assert ab.errors == 1 and ab.error_rate == pytest.approx(0.1)
    assert 3.9 < ab.latency_ms < 4.1 and ab.last_seen == T0
    assert [x.callee for x in graph.successors("a/a@1.0.0", threshold=0.8, now=T0)] == ["b/b@2.0.0"]
    assert [x.callee for x in graph.successors("a/a@1.0.0", threshold=0.5, now=T0)] == ["b/b@2.0.0", "c/c@1.0.0"]


def test_old_habits_fade(graph):
    graph.observe([span("b/b@1.0.0", "a/a@1.0.0")] * 8, now=T0)
    assert by_pair(graph.edges(now=T0 + 3600))["a/a@1.0.0", "b/b@1.0.0"].calls == pytest.approx(4)
    graph.observe([span("b/b@1.0.0", "a/a@1.0.0")], now=T0 + 7200)     # 8 → 2 after two half-lives, + 1
    assert by_pair(graph.edges(now=T0 + 7200))["a/a@1.0.0", "b/b@1.0.0"].calls == pytest.approx(3)


def test_the_graph_survives_a_restart(tmp_path):
    g = CallGraph(tmp_path / "edges.db")
    g.observe([span("b/b@1.0.0", "a/a@1.0.0"), span("a/a@1.0.0", CLIENT)], now=T0)
    g.close()
    again = CallGraph(tmp_path / "edges.db")
    try:
        assert set(by_pair(again.edges(now=T0))) == {("a/a@1.0.0", "b/b@1.0.0"), (CLIENT, "a/a@1.0.0")}
    finally:
        again.close()


def test_a_batch_learns_what_its_calls_one_by_one_would(tmp_path):
    rows = [span("b/b@1.0.0", "a/a@1.0.0", ms=ms, error=ms > 6) for ms in (1, 9, 3, 7, 2)]
    rows += [span("a/a@1.0.0", CLIENT, ms=12)] * 3
    together, apart = CallGraph(tmp_path / "1.db"), CallGraph(tmp_path / "2.db")
    together.observe([span("b/b@1.0.0", "a/a@1.0.0", ms=5)], now=T0 - 1800)   # an edge already known
    apart.observe([span("b/b@1.0.0", "a/a@1.0.0", ms=5)], now=T0 - 1800)
    assert together.observe(rows, now=T0) == 8
    for row in rows:
        apart.observe([row], now=T0)
    one, other = by_pair(together.edges(now=T0)), by_pair(apart.edges(now=T0))
    assert set(one) == set(other) == {("a/a@1.0.0", "b/b@1.0.0"), (CLIENT, "a/a@1.0.0")}
    for pair in one:
        assert one[pair].calls == pytest.approx(other[pair].calls)
        assert one[pair].errors == pytest.approx(other[pair].errors)
        assert one[pair].latency_ms == pytest.approx(other[pair].latency_ms)
    assert one["a/a@1.0.0", "b/b@1.0.0"].errors == pytest.approx(2)
    together.close(); apart.close()
