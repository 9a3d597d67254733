"""Consul's documented rules for a blocking loop's index (the "Blocking Queries" page)."""
from algomesh.registry.consul_store import ConsulStore


def test_index_rules():
    nxt = ConsulStore._next_index
    assert nxt(0, 42) == 42          # first query
    assert nxt(42, 43) == 43         # moved on
    assert nxt(42, 42) == 42         # the wait timed out, nothing changed
    assert nxt(42, 7) == 0           # went backwards: reset the loop
    assert nxt(0, 0) == 1            # never block on 0
    assert nxt(0, None) == 1         # no X-Consul-Index at all
