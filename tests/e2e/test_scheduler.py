"""The scheduler, as a user sees it: idle instances stop by themselves, a cold chain pays
one cold start because its followers are pre-started (and the trace shows them starting
before they were piped to), reservations stay, and load adds instances within bounds."""
import concurrent.futures
import re
import threading
import time
import urllib.request

import pytest

import algomesh
from algomesh.sidecar.edges import CallGraph
from tests.conftest import start_mesh, stop_mesh, write_algorithm

STAGE = """\
import time, algomesh
def load():
    time.sleep(1.0)                      # a model that takes a while to load
def apply(x):
    return {nxt} + [__name__]
"""
PIPE = "algomesh.client().algo('{to}').pipe(x).result"
IDLE = 3  # seconds: the chain's scaling.idle_seconds


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = start_mesh(tmp_path_factory.mktemp("sched"), "--scale-interval", "0.5")
    yield m
    stop_mesh(m)


@pytest.fixture(scope="module", autouse=True)
def chain(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    scaling = f"[scaling]\nidle_seconds = {IDLE}\n"
    mesh.publish(write_algorithm(d / "c", "sch/c", "1.0.0", STAGE.format(nxt="[]"), extra_toml=scaling))
    mesh.publish(write_algorithm(d / "b", "sch/b", "1.0.0", STAGE.format(nxt=PIPE.format(to="sch/c")),
                                 extra_toml='[permissions]\ncan_call = ["sch/c"]\n' + scaling))
    mesh.publish(write_algorithm(d / "a", "sch/a", "1.0.0", STAGE.format(nxt=PIPE.format(to="sch/b")),
                                 extra_toml='[permissions]\ncan_call = ["sch/b"]\n' + scaling))


def _running(client, prefix: str) -> list:
    return [i for i in client.instances() if i.algorithm.startswith(prefix)]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def _learned(mesh) -> bool:
    graph = CallGraph(mesh.data_dir / "edges.db")
    try:
        return bool(graph.successors("sch/a@1.0.0", 0.5)) and bool(graph.successors("sch/b@1.0.0", 0.5))
    finally:
        graph.close()


def _spans(client, trace_id: str, *, until) -> list:
    """The trace's spans once ``until(spans)`` holds (spans arrive in batches)."""
    def got():
        try:
            spans = list(client.trace(trace_id).spans)
        except algomesh.NotFoundError:
            return None
        return spans if until(spans) else None
    return _wait(got, 15, f"the spans of trace {trace_id}")


def _metric(mesh, name: str) -> float:
    port = re.search(r"metrics   http://[^:]+:(\d+)/metrics", mesh.output).group(1)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_idle_chain_stops_then_a_call_pays_one_cold_start(mesh, client):
    first = client.algo("sch/a").pipe("learn")
    assert len(first.result) == 3
    # Nothing learned yet: each stage was a cold start, and each start is in the call's trace
    # (B's and C's were asked for by the sidecars' Locate calls, which carry the trace).
    spans = _spans(client, first.metadata.trace_id,
                   until=lambda s: {f"start sch/{n}@1.0.0" for n in "abc"} <= {x.name for x in s})
    assert {s.name: s.attributes["algomesh.start.reason"] for s in spans if s.name.startswith("start ")} == \
        {f"start sch/{n}@1.0.0": "cold-start" for n in "abc"}
    assert len(client.algo("sch/a").pipe("learn again").result) == 3
    _wait(lambda: _learned(mesh), 15, "the edges A -> B -> C to be learned")

    # Nobody calls: after idle_seconds every instance stops by itself.
    t0 = time.monotonic()
    _wait(lambda: not _running(client, "sch/"), IDLE + 10, "the idle chain to stop")
    assert time.monotonic() - t0 >= IDLE - 1.5  # not before its idle time (the last call was just before t0)

    resp = client.algo("sch/a").pipe("cold again")
    assert len(resp.result) == 3
    spans = _spans(client, resp.metadata.trace_id,
                   until=lambda s: {x.name for x in s} >= {"call sch/a", "start sch/a@1.0.0", "start sch/b@1.0.0",
                                                           "start sch/c@1.0.0", "sch/c@1.0.0", "pipe sch/b",
                                                           "pipe sch/c"})
    by_name = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    reasons = {n: by_name[f"start sch/{n}@1.0.0"][0].attributes["algomesh.start.reason"] for n in "abc"}
    assert reasons == {"a": "cold-start", "b": "pre-start", "c": "pre-start"}
    # B and C began starting before A piped to them (A's load alone takes a second).
    for follower, pipe in (("b", "pipe sch/b"), ("c", "pipe sch/c")):
        started = by_name[f"start sch/{follower}@1.0.0"][0].start_unix_nano
        piped = by_name[pipe][0].start_unix_nano
        assert started < piped, f"{follower} started {(started - piped) / 1e9:.3f}s after it was piped to"
    cold = sorted(s.name for s in spans if s.attributes.get("algomesh.cold_start") == "true")
    assert cold == ["call sch/a"], cold  # one cold start, not three


def test_a_warm_caller_starts_its_stopped_followers(mesh, client, tmp_path):
    # A keeps warm (long idle time); B and C scale to zero. A call to A starts them at once.
    mesh.publish(write_algorithm(tmp_path / "a2", "sch/a", "1.1.0", STAGE.format(nxt=PIPE.format(to="sch/b")),
                                 extra_toml='[permissions]\ncan_call = ["sch/b"]\n[scaling]\nidle_seconds = 600\n'))
    for x in ("learn", "learn again"):
        assert len(client.algo("sch/a/1.1.0").pipe(x).result) == 3
    graph = CallGraph(mesh.data_dir / "edges.db")
    try:
        _wait(lambda: graph.successors("sch/a@1.1.0", 0.5), 15, "the edge A@1.1.0 -> B")
    finally:
        graph.close()
    _wait(lambda: {i.algorithm for i in _running(client, "sch/")} == {"sch/a"}, IDLE + 10, "B and C to stop")

    resp = client.algo("sch/a/1.1.0").pipe("b and c are cold")
    assert len(resp.result) == 3
    spans = _spans(client, resp.metadata.trace_id,
                   until=lambda s: {x.name for x in s} >= {"call sch/a/1.1.0", "start sch/b@1.0.0",
                                                           "start sch/c@1.0.0", "sch/c@1.0.0", "pipe sch/b"})
    starts = {s.name: s for s in spans if s.name.startswith("start ")}
    assert set(starts) == {"start sch/b@1.0.0", "start sch/c@1.0.0"}  # A was warm
    assert {s.attributes["algomesh.start.reason"] for s in starts.values()} == {"pre-start"}
    ingress = next(s for s in spans if s.name == "call sch/a/1.1.0")
    assert ingress.attributes.get("algomesh.cold_start") != "true"
    assert starts["start sch/b@1.0.0"].start_unix_nano < next(s for s in spans if s.name == "pipe sch/b").start_unix_nano
    assert _metric(mesh, "algomesh_prestarts_total") >= 4
    assert _metric(mesh, "algomesh_idle_stops_total") >= 5


def test_reservations_stay_warm_and_come_back(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "r", "sch/reserved", "1.0.0", "def apply(x):\n    return x\n",
                                 extra_toml="[scaling]\nmin_instances = 1\nidle_seconds = 1\n"))
    first = _wait(lambda: _running(client, "sch/reserved"), 30, "the reservation to start")
    time.sleep(4)  # well past its idle time, with no call
    assert [i.id for i in _running(client, "sch/reserved")] == [first[0].id]
    # A reservation that dies is started again.
    from tests.conftest import descendants
    import os, signal
    victim = next(p for p in descendants(mesh.process.pid)
                  if f"--instance-id {first[0].id}" in open(f"/proc/{p}/cmdline").read().replace("\0", " "))
    os.killpg(victim, signal.SIGKILL)
    back = _wait(lambda: [i for i in _running(client, "sch/reserved") if i.id != first[0].id], 30,
                 "the reservation to come back")
    assert len(back) == 1


SLOW = """\
import time
def apply(x):
    time.sleep(0.4)
    return x
"""


def _load(client, ref: str, threads: int, seconds: float) -> list:
    stop = time.monotonic() + seconds
    seen: list[int] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.append(len(_running(client, ref)))
            time.sleep(0.2)

    def call(_):
        n = 0
        while time.monotonic() < stop:
            client.algo(ref).pipe(n).result
            n += 1
        return n
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            assert sum(pool.map(call, range(threads))) > threads
    finally:
        done.set()
        watcher.join()
    return seen


def test_queued_calls_add_instances_up_to_max_instances(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "s", "sch/slow", "1.0.0", SLOW,
                                 extra_toml="[scaling]\nmax_instances = 2\nidle_seconds = 2\n"))
    client.algo("sch/slow").pipe(0).result
    seen = _load(client, "sch/slow", threads=5, seconds=8)
    assert max(seen) == 2, f"instances seen under load: {seen}"  # added, and never past max_instances
    assert _metric(mesh, 'algomesh_scale_ups_total{algorithm="sch/slow"') >= 1
    _wait(lambda: not _running(client, "sch/slow"), 15, "the extra instances to stop once idle")


def test_never_more_instances_than_the_machine_holds(tmp_path):
    small = start_mesh(tmp_path / "small", "--scale-interval", "0.5", "--max-instances", "2")
    try:
        with small.client() as client:
            small.publish(write_algorithm(tmp_path / "s", "cap/slow", "1.0.0", SLOW,
                                          extra_toml="[scaling]\nmax_instances = 8\n"))
            small.publish(write_algorithm(tmp_path / "o", "cap/other", "1.0.0", "def apply(x):\n    return x\n"))
            client.algo("cap/other").pipe(0).result  # holds one of the two
            seen = _load(client, "cap/slow", threads=6, seconds=10)
            assert max(seen) == 1, f"instances of cap/slow seen under load: {seen}"
            # it wanted one (the calls queued), but the machine (--max-instances 2) had no room
            assert "not scaling up cap/slow 1.0.0: the machine has no room" in small.output
    finally:
        stop_mesh(small)


def test_calls_while_reservations_start_wait_for_them_instead_of_starting_more(mesh, client, tmp_path):
    # Found with the video example: calls that arrived while min_instances were still
    # loading each started one more instance, past max_instances.
    code = "import time\ndef load():\n    time.sleep(2)\ndef apply(x):\n    return x\n"
    mesh.publish(write_algorithm(tmp_path / "rs", "sch/reserving", "1.0.0", code,
                                 extra_toml="[scaling]\nmin_instances = 2\nmax_instances = 2\n"))
    _wait(lambda: "reservation: sch/reserving 1.0.0" in mesh.output, 10, "the reservations to start")
    algo = client.algo("sch/reserving")
    responses = [algo.pipe(i) for i in range(6)]  # at once, while the two reservations load
    assert [r.result for r in responses] == list(range(6))
    assert not any(r.metadata.cold_start for r in responses), "a call started an instance of its own"
    time.sleep(1)
    assert len(_running(client, "sch/reserving")) == 2
