"""The scheduler's parts that need no mesh: which followers a pre-start reaches (a real
call graph on SQLite), and reading a sidecar's activity from a real /metrics server.

``RecordingLauncher`` stands in for a launcher here (labelled: it starts nothing, it only
records what it was asked to start); the end-to-end tests (tests/e2e/test_scheduler.py)
run the real launcher."""
import asyncio
import json

import pytest

from algomesh.sidecar.edges import CallGraph
from algomesh.sidecar.measure import MeshMetrics
from algomesh.sidecar.metrics import serve_metrics
from algomesh.sidecar.prestart import PreStarter
from algomesh.sidecar.scheduler import scrape
from algomesh.v1 import registry_pb2


def span(callee: str, caller: str) -> tuple:
    return ("t" * 32, "s" * 16, "", callee, 2, callee, 0, 1_000_000, 0, "", json.dumps({"algomesh.caller": caller}))


def info(node: str) -> registry_pb2.VersionInfo:
    name, _, version = node.rpartition("@")
    return registry_pb2.VersionInfo(manifest=registry_pb2.Manifest(name=name, version=version))


class RecordingLauncher:
    """NOT a launcher: records pre-starts; ``running`` ones are refused, as a launcher does."""

    def __init__(self, running=()):
        self.running = set(running)
        self.asked: list[str] = []

    def prestart(self, target, reason="pre-start"):
        node = f"{target.manifest.name}@{target.manifest.version}"
        self.asked.append(node)
        if node in self.running:
            return False
        self.running.add(node)
        return True


@pytest.fixture
def graph(tmp_path):
    g = CallGraph(tmp_path / "edges.db")
    # a calls b and c every time (a fan-out), b calls d every time (a chain),
    # a calls e once in five calls (too weak to pre-start), f is never called by a
    rows = []
    for i in range(5):
        rows += [span("x/a@1.0.0", "client"), span("x/b@1.0.0", "x/a@1.0.0"), span("x/c@1.0.0", "x/a@1.0.0"),
                 span("x/d@1.0.0", "x/b@1.0.0")]
    rows.append(span("x/e@1.0.0", "x/a@1.0.0"))
    rows.append(span("x/f@1.0.0", "client"))
    g.observe(rows)
    yield g
    g.close()


def test_a_prestart_follows_chains_and_fan_outs_above_the_threshold(graph):
    launcher = RecordingLauncher()
    pre = PreStarter(graph, launcher, lambda n, v: info(f"{n}@{v}"), threshold=0.5)
    started = pre.follow(info("x/a@1.0.0"))
    assert sorted(started) == ["x/b@1.0.0", "x/c@1.0.0", "x/d@1.0.0"]
    assert "x/e@1.0.0" not in launcher.asked and "x/f@1.0.0" not in launcher.asked


def test_running_followers_are_not_started_again_but_the_chain_goes_on(graph):
    launcher = RecordingLauncher(running={"x/b@1.0.0"})
    pre = PreStarter(graph, launcher, lambda n, v: info(f"{n}@{v}"), threshold=0.5)
    assert sorted(pre.follow(info("x/a@1.0.0"))) == ["x/c@1.0.0", "x/d@1.0.0"]
    # a call reaching warm a: only what is not running starts (nothing, now)
    pre.called("x/a", "1.0.0")
    assert sorted(set(launcher.asked)) == ["x/b@1.0.0", "x/c@1.0.0", "x/d@1.0.0"]


def test_a_threshold_above_one_turns_prestart_off(graph):
    launcher = RecordingLauncher()
    pre = PreStarter(graph, launcher, lambda n, v: info(f"{n}@{v}"), threshold=2.0)
    assert pre.follow(info("x/a@1.0.0")) == [] and launcher.asked == []


def test_an_unknown_version_is_not_started(graph):
    launcher = RecordingLauncher()
    pre = PreStarter(graph, launcher, lambda n, v: None if n == "x/b" else info(f"{n}@{v}"), threshold=0.5)
    assert sorted(pre.follow(info("x/a@1.0.0"))) == ["x/c@1.0.0", "x/d@1.0.0"]  # b's follower still learned


def test_scrape_reads_a_sidecars_inbound_activity():
    async def run():
        metrics = MeshMetrics()
        metrics.calls.labels("inbound", "x/a", "1.0.0").inc(3)
        metrics.errors.labels("inbound", "x/a", "ALGORITHM_ERROR").inc(2)
        metrics.calls.labels("outbound", "x/b", "1.0.0").inc(7)  # its pipes: not its own activity
        metrics.in_flight["inbound"] = 4
        metrics.in_flight["outbound"] = 9
        server, port = await serve_metrics(metrics.registry, "127.0.0.1", 0)
        try:
            got = await scrape(f"127.0.0.1:{port}")
            nothing = await scrape("127.0.0.1:1")  # nobody there: None, promptly
        finally:
            server.close()
        return got, nothing
    got, nothing = asyncio.run(run())
    assert got == (4, 5.0) and nothing is None
