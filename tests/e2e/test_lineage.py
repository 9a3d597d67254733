"""Pipelines that run away: cycles and depth are refused with the path named; deadlines
shrink along the pipeline so no stage outlives its caller."""
import time

import pytest

import algomesh
from tests.conftest import write_algorithm

PIPE_TO = "import algomesh\ndef apply(x):\n    return algomesh.client().algo('{to}').pipe(x).result\n"
COUNTDOWN = """\
import algomesh
def apply(n):
    if n == 0:
        return 0
    return algomesh.client().algo("ln/countdown").pipe(n - 1).result + 1
"""
CATCHER = """\
import time, algomesh
def apply(x):
    t0 = time.monotonic()
    try:
        algomesh.client().algo("ln/slow").pipe(x).result   # the SDK's own timeout is 300 s
        return {"reason": None}
    except algomesh.AlgomeshError as e:
        return {"reason": e.reason, "seconds": time.monotonic() - t0}
"""


@pytest.fixture(scope="module", autouse=True)
def published(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("lineage")
    mesh.publish(write_algorithm(d / "ping", "ln/ping", "1.0.0", PIPE_TO.format(to="ln/pong"),
                                 extra_toml='[permissions]\ncan_call = ["ln/pong"]\n'))
    mesh.publish(write_algorithm(d / "pong", "ln/pong", "1.0.0", PIPE_TO.format(to="ln/ping"),
                                 extra_toml='[permissions]\ncan_call = ["ln/ping"]\n'))
    # recursion holds one slot per level in the same instance: give it enough
    mesh.publish(write_algorithm(d / "countdown", "ln/countdown", "1.0.0", COUNTDOWN,
                                 extra_toml='[permissions]\ncan_call = ["ln/countdown"]\n'
                                            "[scaling]\nconcurrency = 40\nmax_in_flight = 64\n"))
    mesh.publish(write_algorithm(d / "slow", "ln/slow", "1.0.0", "import time\ndef apply(x):\n    time.sleep(20)\n"))
    mesh.publish(write_algorithm(d / "catcher", "ln/catcher", "1.0.0", CATCHER,
                                 extra_toml='[permissions]\ncan_call = ["ln/slow"]\n'))


def test_a_cycle_is_refused_with_its_path(client):
    t0 = time.monotonic()
    with pytest.raises(algomesh.PipelineError) as e:
        client.algo("ln/ping").pipe("x").result
    assert time.monotonic() - t0 < 20
    assert e.value.reason == "CALL_CYCLE"
    assert "ln/ping@1.0.0 -> ln/pong@1.0.0 -> ln/ping" in e.value.message


def test_an_algorithm_may_call_itself_within_the_depth_limit(client):
    assert client.algo("ln/countdown").pipe(10).result == 10


def test_a_pipeline_deeper_than_the_limit_is_refused(client):
    with pytest.raises(algomesh.PipelineError) as e:
        client.algo("ln/countdown").set_options(timeout=60).pipe(40).result
    assert e.value.reason == "CALL_DEPTH_EXCEEDED"
    assert "33 algorithms deep; the limit is 32" in e.value.message
    assert client.algo("ln/countdown").pipe(3).result == 3  # and it still serves


def test_a_pipe_ends_before_its_callers_deadline(client):
    # The client gives ln/catcher 4 s; catcher pipes to ln/slow (20 s of work) with the SDK's
    # default 300 s. The pipe inherits catcher's deadline, so it fails in time for catcher
    # to catch it and answer before its own deadline.
    client.scale("ln/catcher", 1)  # warm, so the 4 s are all catcher's (no cold start in them)
    client.scale("ln/slow", 1)
    out = client.algo("ln/catcher").set_options(timeout=4).pipe("x").result
    assert out["reason"] == "DEADLINE_EXCEEDED"
    assert 3.0 < out["seconds"] < 4.0
