"""The registry as callers live with it: versions appear while calls run, instances come and
go under load, private versions stay private, reservations stay warm."""
import os
import signal
import threading
import time

import pytest

import algomesh
from tests.conftest import descendants, write_algorithm

VERSIONED = """\
import os
VERSION = "{v}"
def apply(x):
    return {{"version": VERSION, "pid": os.getpid()}}
"""

# Exactly the instances a test scales to: the scheduler adds none under these tests' load.
FIXED = "[scaling]\nscale_up_in_flight = 1000\n"


class Load:
    """Callers in background threads; every outcome is recorded with its time."""

    def __init__(self, client: algomesh.Client, ref: str, threads: int = 4) -> None:
        self.algo = client.algo(ref).set_options(timeout=30)
        self.results: list[tuple[float, object]] = []   # (finished at, outcome)
        self.started: list[tuple[float, object]] = []   # (started at, outcome)
        self.spans: list[tuple[float, float, object]] = []  # (started at, finished at, outcome)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                out = self.algo.pipe("x").result
            except algomesh.AlgomeshError as exc:
                out = exc
            finished = time.monotonic()
            self.results.append((finished, out))
            self.started.append((started, out))
            self.spans.append((started, finished, out))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def failures(self, after: float = 0.0) -> list:
        return [r for t, r in self.results if t >= after and isinstance(r, Exception)]

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(r) for _, r in self.results[-20:] if not isinstance(r, Exception)):
                return True
            time.sleep(0.05)
        return False


def test_a_new_version_is_picked_up_while_calls_run_with_no_failed_call(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "120", "live/x", "1.2.0", VERSIONED.format(v="1.2.0")))
    assert client.algo("live/x/1.*").pipe("warm").result["version"] == "1.2.0"
    with Load(client, "live/x/1.*") as load:
        assert load.wait_for(lambda r: r["version"] == "1.2.0", 10)
        published = time.monotonic()
        mesh.publish(write_algorithm(tmp_path / "130", "live/x", "1.3.0", VERSIONED.format(v="1.3.0")))
        assert load.wait_for(lambda r: r["version"] == "1.3.0", 30), "never switched to 1.3.0"
        switched = next(t for t, r in load.results if isinstance(r, dict) and r["version"] == "1.3.0")
        time.sleep(0.5)
    assert load.failures() == []
    # within one watch cycle (plus 1.3.0's cold start): no restart, no polling interval to wait out
    assert switched - published < 15
    assert {r["version"] for t, r in load.results if t > switched + 0.1} == {"1.3.0"}


def _slowest(mesh, n: int = 12) -> str:
    """The slowest spans the control plane kept (to see where a hung call waited)."""
    import sqlite3

    time.sleep(1.5)  # the sidecars' last batches
    db = sqlite3.connect(mesh.data_dir / "traces.db")
    try:
        rows = db.execute("SELECT trace_id, name, service, (end_ns - start_ns) / 1e6, message FROM spans "
                          "ORDER BY end_ns - start_ns DESC LIMIT ?", (n,)).fetchall()
    finally:
        db.close()
    return "\n".join(f"{t[:12]} {name} [{svc}] {ms:.1f} ms {msg}" for t, name, svc, ms, msg in rows)


def _ingress_counts(mesh) -> str:
    """The control plane's own count of ingress calls (answered, failed, in flight)."""
    import re as _re
    import urllib.request

    port = _re.search(r"metrics   http://[^:]+:(\d+)/metrics", mesh.output).group(1)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return "\n".join(line for line in text.splitlines()
                     if 'surface="ingress"' in line and not line.startswith("algomesh_call_seconds"))


def test_calls_balance_over_instances_and_survive_one_being_killed(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "pair", "live/pair", "1.0.0", VERSIONED.format(v="1.0.0"), extra_toml=FIXED))
    scaled = client.scale("live/pair", 2)
    assert len(scaled.instances) == 2
    sidecars = {i.address for i in client.instances("live/pair")}
    assert len(sidecars) == 2
    interval = 1.0  # algomesh up's default health interval
    with Load(client, "live/pair", threads=4) as load:
        time.sleep(2)
        pids = {r["pid"] for _, r in load.results if isinstance(r, dict)}
        assert len(pids) == 2, "calls did not spread over both instances"
        victim = next(p for p in descendants(mesh.process.pid) if _is_sidecar_of(p, "live/pair"))
        os.killpg(victim, signal.SIGKILL)  # the sidecar and its runner, without a goodbye
        killed = time.monotonic()
        time.sleep(3 * interval)
    # Calls started a health interval after the kill all succeed; calls in flight on the
    # killed instance may fail, but promptly (a dead peer's connection closes), not at their deadline.
    failed = [(round(s - killed, 2), round(f - killed, 2), r) for s, f, r in load.spans if isinstance(r, Exception)]
    late = [x for x in failed if x[0] > interval or x[1] - x[0] > 10]
    assert late == [], (f"(started, finished, error) after the kill: {late[:3]}; all failures: {failed[:8]}; "
                        f"the mesh said:\n{mesh.output[-4000:]}\nslowest spans:\n{_slowest(mesh)}\n"
                        f"calls made: {len(load.spans)}; the ingress counted:\n{_ingress_counts(mesh)}")
    after = [r for t, r in load.results if t > killed + interval and isinstance(r, dict)]
    assert len(after) > 20 and len({r["pid"] for r in after}) == 1
    assert len(load.failures()) <= 8  # at most the calls in flight on the killed instance
    assert len(client.instances("live/pair")) == 1


def test_a_hung_instance_stops_receiving_calls_within_one_health_interval(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "hung", "live/hung", "1.0.0", VERSIONED.format(v="1.0.0"), extra_toml=FIXED))
    assert len(client.scale("live/hung", 2).instances) == 2
    interval = 1.0  # algomesh up's default health interval
    load = Load(client, "live/hung", threads=4)
    load.algo.set_options(timeout=4)
    victim = next(p for p in descendants(mesh.process.pid) if _is_sidecar_of(p, "live/hung"))
    try:
        with load:
            time.sleep(1.5)
            os.kill(victim, signal.SIGSTOP)  # alive, connections open, answering nothing
            stopped = time.monotonic()
            time.sleep(6)
    finally:
        os.kill(victim, signal.SIGCONT)
    # The calls in flight on the frozen instance when it froze hang until their deadline (new
    # calls mostly avoid it even before the prober acts: the power of two choices sees its
    # outstanding calls pile up). They show that the hang was real.
    early = [r for t, r in load.started if stopped - 1.0 <= t <= stopped + interval and isinstance(r, Exception)]
    assert early and all(isinstance(r, algomesh.DeadlineExceededError) for r in early), \
        f"the hang never reached a caller, so the test would prove nothing: {early[:3]}"
    late = [r for t, r in load.started if t > stopped + interval and isinstance(r, Exception)]
    assert late == [], f"calls started more than one health interval after the hang failed: {late[:3]}"
    ok_after = [r for t, r in load.started if t > stopped + interval and isinstance(r, dict)]
    assert len(ok_after) > 20
    states = {i.id: i.state for i in client.instances("live/hung")}
    assert sorted(states.values()) in (["critical", "passing"], ["passing", "passing"])  # it may be back


def _is_sidecar_of(pid: int, name: str) -> bool:
    try:
        cmd = open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        return False
    return "algomesh.sidecar" in cmd and name in cmd


def test_private_versions_resolve_only_for_their_owner(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "p1", "priv/model", "1.0.0", VERSIONED.format(v="1.0.0")))
    with mesh.client() as c:
        c.publish(write_algorithm(tmp_path / "p2", "priv/model", "1.1.0", VERSIONED.format(v="1.1.0")), private=True)
    # the same owner's algorithm sees the private version; another owner's does not
    caller = "import algomesh\ndef apply(x):\n    return algomesh.client().algo('priv/model/1.*').pipe(x).result['version']\n"
    may = '[permissions]\ncan_call = ["priv/model"]\n'
    mesh.publish(write_algorithm(tmp_path / "mine", "priv/caller", "1.0.0", caller, extra_toml=may))
    mesh.publish(write_algorithm(tmp_path / "theirs", "other/caller", "1.0.0", caller, extra_toml=may))
    assert client.algo("priv/caller").pipe("x").result == "1.1.0"
    assert client.algo("other/caller").pipe("x").result == "1.0.0"
    assert client.algo("priv/model").pipe("x").result["version"] == "1.0.0"  # no key, no owner yet
    with pytest.raises(algomesh.NotFoundError):
        client.algo("priv/model/1.1.0").pipe("x").result
    listing = mesh.cli("versions", "priv/model").stdout.decode().splitlines()
    assert [line.split()[:2] for line in listing] == [["1.1.0", "private"], ["1.0.0", "public"]]


def test_min_instances_are_kept_running_without_a_call(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "res", "live/reserved", "1.0.0", VERSIONED.format(v="1.0.0"),
                                 extra_toml="[scaling]\nmin_instances = 2\n"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(client.instances("live/reserved")) < 2:
        time.sleep(0.2)
    assert [i.state for i in client.instances("live/reserved")] == ["passing", "passing"]
    assert client.algo("live/reserved").pipe("x").metadata.cold_start is False


def test_scale_beyond_max_instances_is_refused(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "cap", "live/capped", "1.0.0", VERSIONED.format(v="1.0.0"),
                                 extra_toml="[scaling]\nmax_instances = 1\n"))
    with pytest.raises(algomesh.InvalidError, match="at most 1"):
        client.scale("live/capped", 3)
    out = mesh.cli("scale", "live/capped", "1")
    assert out.returncode == 0 and "1 instance(s) passing" in out.stdout.decode()
