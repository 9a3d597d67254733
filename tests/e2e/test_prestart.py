"""Pre-start: once the mesh has seen A -> B -> C, a call to a cold A starts B and C too,
before A pipes to them, so the pipeline pays one cold start instead of three."""
import re
import time

import pytest

import algomesh

from algomesh.sidecar.edges import CallGraph
from tests.conftest import write_algorithm

STAGE = """\
import time, algomesh
def load():
    time.sleep(1.0)                      # a model that takes a while to load
def apply(x):
    return {nxt} + [__name__]
"""
PIPE = "algomesh.client().algo('{to}').pipe(x).result"


@pytest.fixture(scope="module", autouse=True)
def chain(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    mesh.publish(write_algorithm(d / "c", "pre/c", "1.0.0", STAGE.format(nxt="[]")))
    mesh.publish(write_algorithm(d / "b", "pre/b", "1.0.0", STAGE.format(nxt=PIPE.format(to="pre/c")),
                                 extra_toml='[permissions]\ncan_call = ["pre/c"]\n'))
    mesh.publish(write_algorithm(d / "a", "pre/a", "1.0.0", STAGE.format(nxt=PIPE.format(to="pre/b")),
                                 extra_toml='[permissions]\ncan_call = ["pre/b"]\n'))


def _learned(mesh, timeout: float = 15.0) -> set[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        graph = CallGraph(mesh.data_dir / "edges.db")
        try:
            edges = {(e.caller, e.callee) for e in graph.successors("pre/a@1.0.0", 0.5)
                     + graph.successors("pre/b@1.0.0", 0.5)}
        finally:
            graph.close()
        if len(edges) == 2 or time.monotonic() > deadline:
            return edges
        time.sleep(0.3)


def _cold_spans(client, trace_id: str) -> list[str]:
    deadline = time.monotonic() + 15
    while True:
        try:
            spans = list(client.trace(trace_id).spans)
        except algomesh.NotFoundError:   # not stored yet: spans arrive in batches
            spans = []
        names = {s.name for s in spans}
        if names >= {"call pre/a", "pipe pre/b", "pipe pre/c", "pre/c@1.0.0"} or time.monotonic() > deadline:
            return sorted(s.name for s in spans if s.attributes.get("algomesh.cold_start") == "true")
        time.sleep(0.3)


def test_a_cold_chain_pays_one_cold_start_once_the_edges_are_learned(mesh, client):
    first = client.algo("pre/a").pipe("x")
    assert len(first.result) == 3             # every stage answered (each adds its module's name)
    # before anything is learned, every stage is a cold start of its own
    assert _cold_spans(client, first.metadata.trace_id) == ["call pre/a", "pipe pre/b", "pipe pre/c"]
    client.algo("pre/a").pipe("again").result
    assert _learned(mesh) == {("pre/a@1.0.0", "pre/b@1.0.0"), ("pre/b@1.0.0", "pre/c@1.0.0")}

    for name in ("pre/a", "pre/b", "pre/c"):   # everything idle: stop it
        client.scale(name, 0)
    assert not [i for i in client.instances() if i.algorithm.startswith("pre/")]

    resp = client.algo("pre/a").pipe("cold again")
    assert len(resp.result) == 3
    # B and C were started when A was located, before A asked for them: only A's start is
    # this call's own cold start (the pipes found their instances already starting).
    assert _cold_spans(client, resp.metadata.trace_id) == ["call pre/a"]
    log = mesh.output
    assert re.search(r"pre-start pre/b 1\.0\.0", log) and re.search(r"pre-start pre/c 1\.0\.0", log)
