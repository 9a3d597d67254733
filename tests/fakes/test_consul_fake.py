"""Fidelity tests of the FAKE Consul HTTP API (tests/fakes/consul_fake.py).

Driven through py-consul, the client algomesh uses, and through raw HTTP (``requests``)
where status codes and headers matter.  Each expectation cites Consul's documented (or,
where the docs are silent, implemented) behaviour that the fake claims to follow.
"""
from __future__ import annotations

import base64
import json
import threading
import time

import consul
import pytest
import requests

from tests.fakes.consul_fake import FakeConsul, parse_go_duration


@pytest.fixture
def fake():
    f = FakeConsul()
    f.start()
    yield f
    f.stop()


def client(f: FakeConsul) -> consul.Consul:
    host, port = f.address.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


@pytest.fixture
def c(fake):
    return client(fake)


def url(f: FakeConsul, path: str) -> str:
    return f"http://{f.address}{path}"


def index_of(resp: requests.Response) -> int:
    return int(resp.headers["X-Consul-Index"])


class Background:
    """Runs fn in a thread; .result() joins and returns its value (or re-raises)."""

    def __init__(self, fn):
        self.value = self.error = None
        self.started = time.monotonic()
        self.elapsed = None

        def run():
            try:
                self.value = fn()
            except BaseException as e:  # noqa: BLE001 - handed back to the test
                self.error = e
            self.elapsed = time.monotonic() - self.started
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout=10.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background call did not return"
        if self.error:
            raise self.error
        return self.value


def register_ttl(c, name, sid, *, ttl="30s", status=None, tags=None, dcsa=None, port=8080):
    check = {"TTL": ttl}
    if status:
        check["Status"] = status
    if dcsa:
        check["DeregisterCriticalServiceAfter"] = dcsa
    assert c.agent.service.register(name, service_id=sid, port=port, tags=tags, check=check)


# ----------------------------------------------------------------------------- KV


def test_cas_create_only_race_has_exactly_one_winner(fake):
    clients = [client(fake) for _ in range(24)]
    barrier = threading.Barrier(len(clients))
    results = [None] * len(clients)

    def attempt(i):
        barrier.wait()
        results[i] = clients[i].kv.put("race/lock", f"owner-{i}", cas=0)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results.count(True) == 1 and results.count(False) == len(clients) - 1
    winner = results.index(True)
    _, entry = clients[0].kv.get("race/lock")
    assert entry["Value"] == f"owner-{winner}".encode()
    assert entry["CreateIndex"] == entry["ModifyIndex"]


def test_cas_on_modify_index(c):
    assert c.kv.put("cfg/a", "v1") is True
    _, e1 = c.kv.get("cfg/a")
    assert c.kv.put("cfg/a", "lost", cas=e1["ModifyIndex"] + 100) is False
    assert c.kv.put("cfg/a", "again", cas=0) is False               # cas=0: only if absent
    assert c.kv.put("cfg/a", "v2", cas=e1["ModifyIndex"]) is True
    _, e2 = c.kv.get("cfg/a")
    assert e2["Value"] == b"v2" and e2["CreateIndex"] == e1["CreateIndex"]
    assert e2["ModifyIndex"] > e1["ModifyIndex"]
    assert c.kv.put("cfg/a", "v3", cas=e1["ModifyIndex"]) is False  # stale now
    # DELETE ?cas: 0 never deletes an existing key, a stale index neither, the right one does
    assert c.kv.delete("cfg/a", cas=0) is False
    assert c.kv.delete("cfg/a", cas=e1["ModifyIndex"]) is False
    assert c.kv.delete("cfg/a", cas=e2["ModifyIndex"]) is True
    assert c.kv.get("cfg/a")[1] is None
    assert c.kv.delete("cfg/a", cas=e2["ModifyIndex"]) is True      # Consul: true for a missing key


def test_kv_flags_idempotent_put_keys_separator_raw_and_recurse(fake, c):
    assert c.kv.put("app/x", b"\x00\xffbin", flags=42)
    _, e = c.kv.get("app/x")
    assert e["Flags"] == 42 and e["Value"] == b"\x00\xffbin" and e["LockIndex"] == 0
    before = fake.index
    assert c.kv.put("app/x", b"\x00\xffbin", flags=42) is True       # same value: no new index
    assert c.kv.get("app/x")[1]["ModifyIndex"] == e["ModifyIndex"] and fake.index == before
    c.kv.put("app/y/one", "1")
    c.kv.put("app/y/two", "2")
    c.kv.put("app/z", "")                                             # empty body -> null Value
    assert c.kv.get("app/z")[1]["Value"] is None
    assert c.kv.get("app/", keys=True)[1] == ["app/x", "app/y/one", "app/y/two", "app/z"]
    assert c.kv.get("app/", keys=True, separator="/")[1] == ["app/x", "app/y/", "app/z"]
    raw = requests.get(url(fake, "/v1/kv/app/x?raw"))
    assert raw.status_code == 200 and raw.content == b"\x00\xffbin"
    assert raw.headers["Content-Type"] == "text/plain" and raw.headers["X-Content-Type-Options"] == "nosniff"
    idx, entries = c.kv.get("app/", recurse=True)
    assert [x["Key"] for x in entries] == ["app/x", "app/y/one", "app/y/two", "app/z"]
    assert int(idx) == max(x["ModifyIndex"] for x in entries)
    assert c.kv.delete("app/y/", recurse=True) is True
    assert c.kv.get("app/", keys=True)[1] == ["app/x", "app/z"]
    assert requests.get(url(fake, "/v1/kv/nothing/?keys")).status_code == 404
    assert requests.get(url(fake, "/v1/kv/?keys")).json() == ["app/x", "app/z"]   # root: [] not 404


def test_kv_read_index_rules_and_never_zero(fake, c):
    # fresh store: nothing in KV yet, still a usable (non-zero) index
    r = requests.get(url(fake, "/v1/kv/missing"))
    assert r.status_code == 404 and index_of(r) >= 1 and r.content == b""
    c.kv.put("p/a", "1")
    c.kv.put("other", "x")
    c.kv.put("p/b", "2")
    _, b = c.kv.get("p/b")
    _, a = c.kv.get("p/a")
    # a single key reads its own ModifyIndex; a prefix reads the highest ModifyIndex under it
    assert index_of(requests.get(url(fake, "/v1/kv/p/a"))) == a["ModifyIndex"]
    assert index_of(requests.get(url(fake, "/v1/kv/p/?recurse"))) == b["ModifyIndex"]
    # a missing key reads the KV table's index
    assert index_of(requests.get(url(fake, "/v1/kv/missing"))) == b["ModifyIndex"]
    # deleting the newest key moves the prefix index forward (tombstone), never backwards
    c.kv.delete("p/b")
    deleted_at = fake.index
    r = requests.get(url(fake, "/v1/kv/p/?recurse"))
    assert index_of(r) == deleted_at > b["ModifyIndex"]
    assert [x["Key"] for x in r.json()] == ["p/a"]
    c.kv.delete("p/a")
    r = requests.get(url(fake, "/v1/kv/p/?recurse"))
    assert r.status_code == 404 and index_of(r) == fake.index
    # an empty prefix nobody ever wrote reads the KV table index
    assert index_of(requests.get(url(fake, "/v1/kv/zzz/?recurse"))) == fake.index


def test_index_is_global_and_monotonic(fake, c):
    seen = [fake.index]

    def read_all():
        return [index_of(requests.get(url(fake, p))) for p in
                ("/v1/kv/?recurse", "/v1/catalog/services", "/v1/health/state/any")]

    c.kv.put("k1", "a")
    seen.append(fake.index)
    register_ttl(c, "svc", "svc1")
    seen.append(fake.index)
    c.agent.check.ttl_pass("service:svc1")
    seen.append(fake.index)
    c.kv.put("k2", "b")
    seen.append(fake.index)
    c.agent.service.deregister("svc1")
    seen.append(fake.index)
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    assert all(0 < i <= fake.index for i in read_all())
    _, k2 = c.kv.get("k2")
    assert k2["ModifyIndex"] == seen[4]                 # the index is the write's Raft index


# ----------------------------------------------------------------------------- blocking


def test_blocking_kv_query_returns_when_another_thread_writes(fake, c):
    c.kv.put("watch/key", "old")
    idx, _ = c.kv.get("watch/key")
    blocked = Background(lambda: client(fake).kv.get("watch/key", index=idx, wait="10s"))
    time.sleep(0.3)
    assert blocked.thread.is_alive()
    c.kv.put("watch/key", "new")
    new_idx, entry = blocked.result()
    assert blocked.elapsed < 3
    assert int(new_idx) > int(idx) and entry["Value"] == b"new"


def test_blocking_kv_query_times_out_after_wait_with_same_index(fake, c):
    c.kv.put("quiet/key", "v")
    idx, _ = c.kv.get("quiet/key")
    c.kv.put("elsewhere", "a write to another key does not wake this query")
    t0 = time.monotonic()
    again, entry = c.kv.get("quiet/key", index=idx, wait="1s")
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 1.0 + 1.0 / 16 + 0.5      # wait plus at most wait/16 of jitter
    assert again == idx and entry["Value"] == b"v"


def test_blocking_prefix_query_wakes_on_new_key(fake, c):
    c.kv.put("dir/a", "1")
    idx, _ = c.kv.get("dir/", recurse=True)
    blocked = Background(lambda: client(fake).kv.get("dir/", recurse=True, index=idx, wait="10s"))
    time.sleep(0.2)
    c.kv.put("elsewhere", "outside the prefix: does not wake it")
    time.sleep(0.2)
    assert blocked.thread.is_alive()
    c.kv.put("dir/b", "2")
    new_idx, entries = blocked.result()
    assert int(new_idx) > int(idx) and [e["Key"] for e in entries] == ["dir/a", "dir/b"]


def test_blocking_on_a_missing_key_follows_the_kv_table_index(fake, c):
    # Consul answers a missing key with the KV table's index, so ANY KV write wakes the
    # query (with the key still missing: "no guarantee of a change"); clients loop.
    idx, none = c.kv.get("later")
    assert none is None
    blocked = Background(lambda: client(fake).kv.get("later", index=idx, wait="10s"))
    time.sleep(0.2)
    c.kv.put("unrelated", "x")
    woke_idx, still_none = blocked.result()
    assert int(woke_idx) > int(idx) and still_none is None
    blocked = Background(lambda: client(fake).kv.get("later", index=woke_idx, wait="10s"))
    time.sleep(0.2)
    c.kv.put("later", "here")
    final_idx, entry = blocked.result()
    assert entry["Value"] == b"here" and int(final_idx) == entry["ModifyIndex"]


def test_index_below_current_answers_at_once_and_bad_params_are_rejected(fake, c):
    c.kv.put("k", "v")
    t0 = time.monotonic()
    c.kv.get("k", index=1, wait="10s")
    assert time.monotonic() - t0 < 1
    assert requests.get(url(fake, "/v1/kv/k?index=abc")).status_code == 400
    r = requests.get(url(fake, "/v1/kv/k?index=1&wait=10"))            # Go durations need a unit
    assert r.status_code == 400 and r.text == "Invalid wait time"
    assert requests.get(url(fake, "/v1/kv/k?stale&consistent")).status_code == 400
    assert requests.get(url(fake, "/v1/kv/k?stale")).headers["X-Consul-Effective-Consistency"] == "stale"
    assert parse_go_duration("1m30s") == 90 and parse_go_duration("250ms") == 0.25


def test_stop_ends_blocked_queries_promptly():
    f = FakeConsul()
    f.start()
    cc = client(f)
    cc.kv.put("k", "v")
    idx, _ = cc.kv.get("k")
    blocked = [Background(lambda: client(f).kv.get("k", index=idx, wait="5m")) for _ in range(3)]
    health = Background(lambda: client(f).health.service("none", index=f.index, wait="5m"))
    time.sleep(0.2)
    t0 = time.monotonic()
    f.stop()
    assert time.monotonic() - t0 < 5
    for b in blocked + [health]:
        b.thread.join(5)
        assert not b.thread.is_alive()
        # like an agent that goes away: no answer, the connection drops
        assert isinstance(b.error, requests.exceptions.ConnectionError), b.error
    with pytest.raises(requests.exceptions.ConnectionError):
        cc.kv.get("k")


# ----------------------------------------------------------------------------- agent, health


def test_health_blocking_query_wakes_when_ttl_check_fails(fake, c):
    register_ttl(c, "web", "web1", status="passing")
    idx, nodes = c.health.service("web", passing=True)
    assert [n["Service"]["ID"] for n in nodes] == ["web1"]
    blocked = Background(lambda: client(fake).health.service("web", index=idx, wait="10s"))
    time.sleep(0.2)
    assert blocked.thread.is_alive()
    assert c.agent.check.ttl_fail("service:web1", notes="disk full")
    new_idx, nodes = blocked.result()
    assert blocked.elapsed < 3 and int(new_idx) > int(idx)
    check = [x for x in nodes[0]["Checks"] if x["CheckID"] == "service:web1"][0]
    assert check["Status"] == "critical" and check["Output"] == "disk full"
    assert c.health.service("web", passing=True)[1] == []


def test_ttl_expiry_turns_check_critical_and_wakes_health_query(fake, c):
    register_ttl(c, "ttl", "ttl1", ttl="1s", status="passing")
    c.agent.check.ttl_pass("service:ttl1", notes="all good")
    idx, nodes = c.health.service("ttl", passing=True)
    assert len(nodes) == 1
    t0 = time.monotonic()
    new_idx, nodes = c.health.service("ttl", index=idx, wait="10s")
    assert 0.8 < time.monotonic() - t0 < 3 and int(new_idx) > int(idx)
    check = [x for x in nodes[0]["Checks"] if x["CheckID"] == "service:ttl1"][0]
    assert check["Status"] == "critical"
    assert check["Output"] == "TTL expired (last output before timeout follows): all good"
    assert c.agent.checks()["service:ttl1"]["Status"] == "critical"


def test_registration_defaults_and_fields(fake, c):
    # py-consul sends lowercase keys and a "checks" list; Consul's decoder is case-insensitive
    assert c.agent.service.register("api", service_id="api-1", address="10.0.0.5", port=9000,
                                    tags=["v1", "Primary"], meta={"version": "1.2.0"},
                                    check=consul.Check.ttl("30s"))
    svc = c.agent.services()["api-1"]
    assert svc["Service"] == "api" and svc["Port"] == 9000 and svc["Meta"] == {"version": "1.2.0"}
    assert svc["Weights"] == {"Passing": 1, "Warning": 1}
    chk = c.agent.checks()["service:api-1"]
    assert chk["Status"] == "critical"                                # Consul's default initial status
    assert chk["Name"] == "Service 'api' check" and chk["ServiceName"] == "api"
    _, nodes = c.health.service("api")
    n = nodes[0]
    assert n["Node"]["Node"] == "fake-consul" and n["Node"]["Address"] == "127.0.0.1"
    assert n["Node"]["Datacenter"] == "dc1"
    assert n["Service"]["Address"] == "10.0.0.5" and n["Service"]["Tags"] == ["v1", "Primary"]
    assert [x["CheckID"] for x in n["Checks"]] == ["serfHealth", "service:api-1"]
    _, cat = c.catalog.service("api")
    assert cat[0]["ServiceID"] == "api-1" and cat[0]["ServiceAddress"] == "10.0.0.5"
    assert cat[0]["ServicePort"] == 9000 and cat[0]["ServiceMeta"] == {"version": "1.2.0"}
    assert cat[0]["ServiceTags"] == ["v1", "Primary"] and cat[0]["Address"] == "127.0.0.1"
    # no Address given: Service.Address stays "" (clients fall back to Node.Address)
    register_ttl(c, "noaddr", "noaddr-1")
    assert c.health.service("noaddr")[1][0]["Service"]["Address"] == ""
    # several checks: ids service:<id>:<n>, custom CheckID/Name honoured
    body = {"Name": "multi", "ID": "m1", "Checks": [
        {"TTL": "30s", "Status": "passing"},
        {"TTL": "30s", "CheckID": "custom", "Name": "my check", "Status": "warning"}]}
    assert requests.put(url(fake, "/v1/agent/service/register"), json=body).status_code == 200
    checks = c.agent.checks()
    assert checks["service:m1:1"]["Status"] == "passing"
    assert checks["custom"]["Name"] == "my check" and checks["custom"]["Status"] == "warning"
    # the "consul" service of the server is in the catalog, not in the agent's services
    assert "consul" in c.catalog.services()[1] and "consul" not in c.agent.services()


def test_passing_filter(fake, c):
    register_ttl(c, "pool", "pool-ok", status="passing")
    register_ttl(c, "pool", "pool-warn", status="warning")
    register_ttl(c, "pool", "pool-crit")                              # default: critical
    register_ttl(c, "pool", "pool-nocheck-placeholder", status="passing")
    c.agent.check.ttl_fail("service:pool-nocheck-placeholder")
    _, everything = c.health.service("pool")
    assert {n["Service"]["ID"] for n in everything} == {"pool-ok", "pool-warn", "pool-crit",
                                                         "pool-nocheck-placeholder"}
    _, passing = c.health.service("pool", passing=True)
    assert [n["Service"]["ID"] for n in passing] == ["pool-ok"]      # warning is not passing
    assert requests.get(url(fake, "/v1/health/service/pool?passing=false")).json().__len__() == 4
    assert requests.get(url(fake, "/v1/health/service/pool?passing=maybe")).status_code == 400
    # a failing node-level check makes every instance non-passing
    assert requests.put(url(fake, "/v1/agent/check/register"),
                        json={"Name": "node-disk", "TTL": "30s", "Status": "passing"}).status_code == 200
    assert len(c.health.service("pool", passing=True)[1]) == 1
    c.agent.check.ttl_fail("node-disk")
    assert c.health.service("pool", passing=True)[1] == []
    checks = [x["CheckID"] for x in c.health.service("pool")[1][0]["Checks"]]
    assert checks == ["serfHealth", "node-disk", "service:pool-crit"]


def test_tag_filtering(fake, c):
    register_ttl(c, "tagged", "t1", tags=["blue", "v1"], status="passing")
    register_ttl(c, "tagged", "t2", tags=["green", "v1"], status="passing")
    register_ttl(c, "tagged", "t3", tags=[], status="passing")
    ids = lambda nodes: sorted(n["Service"]["ID"] for n in nodes)  # noqa: E731
    assert ids(c.health.service("tagged", tag="v1")[1]) == ["t1", "t2"]
    assert ids(c.health.service("tagged", tag=["v1", "blue"])[1]) == ["t1"]     # all must match
    assert ids(c.health.service("tagged", tag="BLUE")[1]) == ["t1"]             # case-insensitive
    assert c.health.service("tagged", tag="red")[1] == []
    assert sorted(x["ServiceID"] for x in c.catalog.service("tagged", tag="green")[1]) == ["t2"]
    r = requests.get(url(fake, "/v1/catalog/service/tagged?tag=v1&tag=green"))
    assert [x["ServiceID"] for x in r.json()] == ["t2"]
    assert c.catalog.services()[1]["tagged"] == ["blue", "green", "v1"]


def test_deregistration(fake, c):
    register_ttl(c, "gone", "gone-1", status="passing")
    register_ttl(c, "gone", "gone-2", status="passing")
    idx, _ = c.health.service("gone")
    blocked = Background(lambda: client(fake).health.service("gone", index=idx, wait="10s"))
    time.sleep(0.2)
    assert c.agent.service.deregister("gone-1") is True
    new_idx, nodes = blocked.result()
    assert int(new_idx) > int(idx) and [n["Service"]["ID"] for n in nodes] == ["gone-2"]
    assert "service:gone-1" not in c.agent.checks()
    c.agent.service.deregister("gone-2")
    assert c.health.service("gone")[1] == [] and "gone" not in c.catalog.services()[1]
    # an unknown id: Consul answers 404 "Unknown service ID"; py-consul turns that into False
    assert c.agent.service.deregister("gone-2") is False
    r = requests.put(url(fake, "/v1/agent/service/deregister/nope"))
    assert r.status_code == 404 and "Unknown service ID" in r.text
    r = requests.put(url(fake, "/v1/agent/check/pass/nope"))
    assert r.status_code == 404 and "Unknown check ID" in r.text
    # the index of a service with no instances is the extinction index, and stays > 0
    assert index_of(requests.get(url(fake, "/v1/health/service/gone"))) == fake.index


def test_deregister_critical_service_after():
    with FakeConsul(check_reap_interval=0.1, check_deregister_interval_min=0) as f:
        c = client(f)
        register_ttl(c, "flaky", "flaky-1", ttl="0.5s", dcsa="0.5s", status="passing")
        register_ttl(c, "flaky", "steady-1", ttl="30s", status="passing")
        idx, _ = c.health.service("flaky")
        deadline = time.monotonic() + 5
        while "flaky-1" in c.agent.services() and time.monotonic() < deadline:
            idx, nodes = c.health.service("flaky", index=idx, wait="2s")
        assert "flaky-1" not in c.agent.services()
        assert [n["Service"]["ID"] for n in c.health.service("flaky")[1]] == ["steady-1"]
        assert "service:flaky-1" not in c.agent.checks()
    # with Consul's own settings (check_deregister_interval_min = 1m) a shorter value is raised
    parsed = FakeConsul()._parse_check_def({"TTL": "1s", "DeregisterCriticalServiceAfter": "1s"}, "Check")
    assert parsed["reap_after"] == 60


def test_ttl_update_endpoint_and_output_only_updates_are_deferred(fake, c):
    register_ttl(c, "upd", "upd-1")
    r = requests.put(url(fake, "/v1/agent/check/update/service:upd-1"),
                     json={"Status": "passing", "Output": "first"})
    assert r.status_code == 200
    idx, nodes = c.health.service("upd")
    assert nodes[0]["Checks"][1]["Output"] == "first"
    # same status, new output: the agent sees it at once, the catalog after check_update_interval
    c.agent.check.ttl_pass("service:upd-1", notes="second")
    assert c.agent.checks()["service:upd-1"]["Output"] == "second"
    idx2, nodes = c.health.service("upd")
    assert idx2 == idx and nodes[0]["Checks"][1]["Output"] == "first"
    # identical update: nothing is written
    c.agent.check.ttl_pass("service:upd-1", notes="second")
    assert c.health.service("upd")[0] == idx
    # a status change is written at once, output included
    c.agent.check.ttl_warn("service:upd-1", notes="third")
    idx3, nodes = c.health.service("upd")
    assert int(idx3) > int(idx) and nodes[0]["Checks"][1]["Status"] == "warning"
    assert nodes[0]["Checks"][1]["Output"] == "third"
    r = requests.put(url(fake, "/v1/agent/check/update/service:upd-1"), json={"Status": "bogus"})
    assert r.status_code == 400
    big = "x" * 5000
    requests.put(url(fake, "/v1/agent/check/update/service:upd-1"), json={"Status": "critical", "Output": big})
    assert c.agent.checks()["service:upd-1"]["Output"].endswith("... (captured 4096 of 5000 bytes)")


def test_reregistration_keeps_check_state_and_changes_nothing_when_identical(fake, c):
    register_ttl(c, "re", "re-1")
    c.agent.check.ttl_pass("service:re-1", notes="ok")
    before = fake.index
    register_ttl(c, "re", "re-1")
    assert fake.index == before                                         # nothing changed, no write
    assert c.agent.checks()["service:re-1"]["Status"] == "passing"      # snapshot kept the status
    register_ttl(c, "re", "re-1", tags=["new"])
    assert fake.index == before + 1
    assert c.health.service("re")[1][0]["Service"]["Tags"] == ["new"]


def test_non_ttl_checks_are_refused_not_faked(fake, c):
    with pytest.raises(consul.ConsulException):
        c.agent.service.register("h", check=consul.Check.http("http://127.0.0.1:1/", "10s"))
    r = requests.put(url(fake, "/v1/agent/service/register"), json={"Name": "h", "Check": {"Name": "n"}})
    assert r.status_code == 400


# ----------------------------------------------------------------------------- txn


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_txn_is_atomic_and_a_failing_cas_rolls_everything_back(fake, c):
    c.kv.put("t/existing", "v0")
    _, existing = c.kv.get("t/existing")
    before = fake.index
    ops = [{"KV": {"Verb": "set", "Key": "t/a", "Value": b64("A")}},
           {"KV": {"Verb": "delete", "Key": "t/existing"}},
           {"KV": {"Verb": "cas", "Key": "t/c", "Value": b64("C"), "Index": 999}},
           {"KV": {"Verb": "check-index", "Key": "t/existing", "Index": 1}}]
    r = requests.put(url(fake, "/v1/txn"), data=json.dumps(ops))
    assert r.status_code == 409
    body = r.json()
    assert body["Results"] is None
    assert [e["OpIndex"] for e in body["Errors"]] == [2, 3]
    assert body["Errors"][0]["What"] == 'failed to set key "t/c", index is stale'
    assert fake.index == before                                          # nothing committed
    assert c.kv.get("t/a")[1] is None and c.kv.get("t/existing")[1]["Value"] == b"v0"
    # py-consul raises on 409
    with pytest.raises(consul.ConsulException):
        c.txn.put(ops)
    # the same intent, correct: one commit, one index for every key
    ok = c.txn.put([{"KV": {"Verb": "check-index", "Key": "t/existing", "Index": existing["ModifyIndex"]}},
                    {"KV": {"Verb": "set", "Key": "t/a", "Value": b64("A"), "Flags": 7}},
                    {"KV": {"Verb": "cas", "Key": "t/c", "Value": b64("C"), "Index": 0}},
                    {"KV": {"Verb": "delete", "Key": "t/existing"}},
                    {"KV": {"Verb": "get", "Key": "t/a"}}])
    assert ok["Errors"] is None
    assert [r["KV"]["Key"] for r in ok["Results"]] == ["t/existing", "t/a", "t/c", "t/a"]
    assert ok["Results"][1]["KV"]["Value"] is None                       # only get returns values
    assert base64.b64decode(ok["Results"][3]["KV"]["Value"]) == b"A"
    assert fake.index == before + 1
    _, a = c.kv.get("t/a")
    _, cc = c.kv.get("t/c")
    assert a["ModifyIndex"] == cc["ModifyIndex"] == fake.index and a["Flags"] == 7
    assert c.kv.get("t/existing")[1] is None


def test_txn_read_only_limits_and_errors(fake, c):
    c.kv.put("r/1", "x")
    r = requests.put(url(fake, "/v1/txn"), json=[{"KV": {"Verb": "get-tree", "Key": "r/"}},
                                                 {"KV": {"Verb": "check-not-exists", "Key": "r/2"}}])
    assert r.status_code == 200 and r.headers["X-Consul-KnownLeader"] == "true"
    assert [x["KV"]["Key"] for x in r.json()["Results"]] == ["r/1"]
    r = requests.put(url(fake, "/v1/txn"), json=[{"KV": {"Verb": "get", "Key": "nope"}}])
    assert r.status_code == 409 and r.json()["Errors"][0]["What"] == 'key "nope" doesn\'t exist'
    r = requests.put(url(fake, "/v1/txn"), json=[{"KV": {"Verb": "set", "Key": f"k{i}"}} for i in range(129)])
    assert r.status_code == 413
    r = requests.put(url(fake, "/v1/txn"), json=[{"KV": {"Verb": "set", "Key": "k", "Value": "%%%"}}])
    assert r.status_code == 400
    r = requests.put(url(fake, "/v1/txn"), json=[{"Node": {"Verb": "get", "Node": {"Node": "n"}}}])
    assert r.status_code == 400


# ----------------------------------------------------------------------------- HTTP surface


def test_every_blocking_read_carries_a_positive_index_and_leader_headers(fake, c):
    register_ttl(c, "hdr", "hdr-1", status="passing")
    c.kv.put("h/k", "v")
    paths = ["/v1/kv/h/k", "/v1/kv/h/missing", "/v1/kv/h/?recurse", "/v1/kv/h/?keys",
             "/v1/kv/none/?recurse", "/v1/health/service/hdr", "/v1/health/service/unknown",
             "/v1/health/checks/hdr", "/v1/health/node/fake-consul", "/v1/health/state/any",
             "/v1/catalog/service/hdr", "/v1/catalog/service/unknown", "/v1/catalog/services",
             "/v1/catalog/nodes"]
    for p in paths:
        r = requests.get(url(fake, p))
        assert r.status_code in (200, 404), p
        assert index_of(r) > 0, p
        assert r.headers["X-Consul-KnownLeader"] == "true", p
        assert r.headers["X-Consul-LastContact"] == "0", p
    # as in Consul, the agent and status endpoints are not blocking reads and carry no index
    for p in ("/v1/agent/services", "/v1/agent/checks", "/v1/status/leader"):
        r = requests.get(url(fake, p))
        assert r.status_code == 200 and "X-Consul-Index" not in r.headers, p
    # on a fresh fake too
    with FakeConsul() as f2:
        for p in paths:
            assert index_of(requests.get(url(f2, p))) > 0, p


def test_status_endpoints(c):
    assert c.status.leader() == "127.0.0.1:8300"
    assert c.status.peers() == ["127.0.0.1:8300"]


def test_unsupported_endpoints_and_methods_answer_like_consul(fake):
    assert requests.get(url(fake, "/v1/session/list")).status_code == 404
    assert requests.get(url(fake, "/v1/acl/tokens")).status_code == 404
    assert requests.get(url(fake, "/v1/nope")).status_code == 404
    r = requests.post(url(fake, "/v1/kv/x"), data="v")
    assert r.status_code == 405 and r.text == "method POST not allowed"
    assert r.headers["Allow"] == "OPTIONS,GET,PUT,DELETE"
    assert requests.put(url(fake, "/v1/agent/services")).status_code == 405
    assert requests.get(url(fake, "/v1/agent/check/pass/x")).status_code == 405
    assert requests.options(url(fake, "/v1/txn")).headers["Allow"] == "OPTIONS,PUT"
    r = requests.get(url(fake, "/v1/kv/k?dc=dc9"))
    assert r.status_code == 500 and r.text == "No path to datacenter"
    assert requests.get(url(fake, "/v1/catalog/services?filter=x")).status_code == 400
    r = requests.put(url(fake, "/v1/kv/x?acquire=some-session"), data="v")
    assert r.status_code == 500 and "invalid session" in r.text
    r = requests.get(url(fake, "/v1/kv/a//b"), allow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"] == "/v1/kv/a/b"
    assert requests.put(url(fake, "/v1/kv/"), data="v").status_code == 400    # Missing key name
    assert requests.put(url(fake, "/v1/kv/big"), data=b"x" * (512 * 1024 + 1)).status_code == 413
