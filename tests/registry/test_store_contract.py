"""The registry store contract: every backend of ``algomesh.registry.store.Store`` runs
through the same tests with the same assertions.

Backends (the test id says which one ran, see conftest.py):

- ``[sqlite]``: ``SqliteStore`` on a real SQLite file.
- ``[consul-FAKE]``: ``ConsulStore`` against a labelled FAKE of Consul's HTTP API
  (``tests/fakes/consul_fake.py``), unless ``CONSUL_HTTP_ADDR`` points at a real agent;
  then the id is ``[consul-real]`` and the tests run against that agent, under a prefix
  unique to each test. A pass on the FAKE shows ConsulStore agrees with the fake's model
  of Consul, not with Consul itself.

The consul half is never skipped. The one place the backends are allowed to differ is a
declared capability: ``backend.has_ttl_checks`` (Consul marks an instance critical by
itself when its TTL lapses; the embedded store leaves that to the control plane's prober).
"""
from __future__ import annotations

import hashlib
import threading
import time

import pytest

import algomesh
from algomesh.registry.keys import authenticate, new_key
from algomesh.registry.resolve import resolve
from algomesh.registry.store import CRITICAL, PASSING, WARNING
from algomesh.v1 import registry_pb2
from tests.registry.conftest import BACKENDS, make_backend

# helpers ------------------------------------------------------------------------------


def digest(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def info(name: str, version: str, *, content: str = "", private: bool = False,
         published_at: int = 1_700_000_000) -> registry_pb2.VersionInfo:
    return registry_pb2.VersionInfo(
        manifest=registry_pb2.Manifest(name=name, version=version, runtime="python", entrypoint="main.py"),
        digest=digest(name, version, content), published_at=published_at, private=private)


def full_info(name: str, version: str, *, private: bool) -> registry_pb2.VersionInfo:
    """A version with every manifest field set, to check nothing is lost on the way."""
    manifest = registry_pb2.Manifest(
        name=name, version=version, runtime="rust", entrypoint="target/release/algo",
        description="Sorts things; the description has unicode: ✓ and \"quotes\"",
        permissions=registry_pb2.Permissions(can_call=["t/*", "other/tokenize"], callability="private"),
        deterministic=True,
        scaling=registry_pb2.Scaling(min_instances=1, max_instances=7, idle_seconds=300, concurrency=4),
        build="cargo build --release")
    return registry_pb2.VersionInfo(manifest=manifest, digest=digest(name, version, "full"),
                                    published_at=1_712_345_678, private=private)


def instance(backend, n: int, name: str = "t/a", version: str = "1.0.0") -> registry_pb2.Instance:
    return registry_pb2.Instance(id=f"{backend.token}-{n}", algorithm=name, version=version,
                                 address=f"127.0.0.1:{41000 + n}", started_at=1_700_000_000 + n,
                                 metrics_address=f"127.0.0.1:{42000 + n}")


def mine(backend, instances) -> list[registry_pb2.Instance]:
    """Our instances (a real Consul agent may hold others), sorted by id."""
    return sorted((i for i in instances if i.id.startswith(backend.token)), key=lambda i: i.id)


def listed(inst: registry_pb2.Instance, state: str = PASSING) -> registry_pb2.Instance:
    """``inst`` as ``instances()`` should list it: the same fields, in ``state``."""
    out = registry_pb2.Instance()
    out.CopyFrom(inst)
    out.state = state
    return out


def state_of(store, instance_id: str) -> str | None:
    found = [i.state for i in store.instances() if i.id == instance_id]
    return found[0] if found else None


def race(n: int, fn) -> list:
    """Run fn(i) for i in range(n) on n threads released at once; results or exceptions."""
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - the caller checks what came back
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a publisher hung"
    return results


def one_winner(results: list) -> None:
    winners = [r for r in results if r is True]
    losers = [r for r in results if isinstance(r, algomesh.VersionExistsError)]
    others = [r for r in results if r is not True and not isinstance(r, algomesh.VersionExistsError)]
    assert not others, f"unexpected results: {others!r}"
    assert len(winners) == 1 and len(losers) == len(results) - 1, results
    assert all(e.reason == "VERSION_EXISTS" for e in losers)


class later:
    """Call fn on another thread after ``delay`` seconds; ``join`` re-raises its error."""

    def __init__(self, delay: float, fn) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the test in join()
                self.error = exc

        self._timer = threading.Timer(delay, run)
        self._timer.start()

    def join(self, timeout: float) -> None:
        self._timer.join(timeout)
        assert not self._timer.is_alive(), "the change on the other thread hung"
        if self.error is not None:
            raise self.error


def timed(fn, *args):
    start = time.monotonic()
    value = fn(*args)
    return value, time.monotonic() - start


# versions -----------------------------------------------------------------------------


def test_publish_creates_then_same_digest_is_a_noop(store):
    v = info("t/a", "1.0.0")
    assert store.publish(v) is True
    assert store.publish(v) is False
    again = info("t/a", "1.0.0", published_at=1_800_000_000)  # same content, later
    assert store.publish(again) is False
    assert list(store.versions("t/a")) == [v]


def test_other_digest_for_a_published_version_raises_version_exists(store):
    v = info("t/a", "1.0.0")
    store.publish(v)
    with pytest.raises(algomesh.VersionExistsError) as e:
        store.publish(info("t/a", "1.0.0", content="other"))
    assert e.value.reason == "VERSION_EXISTS"
    assert e.value.algorithm == "t/a" and e.value.version == "1.0.0"
    assert store.get_version("t/a", "1.0.0") == v
    assert list(store.versions("t/a")) == [v]


def test_racing_publishes_from_many_threads_have_one_winner(store):
    n = 16
    one_winner(race(n, lambda i: store.publish(info("t/race", "1.0.0", content=i))))
    stored = store.versions("t/race")
    assert len(stored) == 1
    assert stored[0].digest in {digest("t/race", "1.0.0", i) for i in range(n)}
    assert store.get_version("t/race", "1.0.0") == stored[0]


def test_racing_publishes_from_two_control_planes_have_one_winner(backend, store):
    other = backend.open()  # a second store object on the same backend
    stores = [store, other]
    n = 16
    one_winner(race(n, lambda i: stores[i % 2].publish(info("t/race", "2.0.0", content=i))))
    for s in stores:
        assert len(s.versions("t/race")) == 1
    assert store.get_version("t/race", "2.0.0") == other.get_version("t/race", "2.0.0")


def test_racing_publishes_of_the_same_content_create_once(backend, store):
    other = backend.open()
    stores = [store, other]
    results = race(8, lambda i: stores[i % 2].publish(info("t/same", "1.0.0")))
    assert sorted(results, key=repr) == [False] * 7 + [True], results
    assert len(store.versions("t/same")) == 1


def test_get_version(store):
    v = info("t/a", "1.0.0")
    store.publish(v)
    assert store.get_version("t/a", "1.0.0") == v
    assert store.get_version("t/a", "1.0.1") is None
    assert store.get_version("t/nothing", "1.0.0") is None
    assert store.get_version("t/a", "1.0") is None


def test_versions_are_listed_in_publish_order(store):
    order = ["2.0.0", "1.0.0", "1.10.0", "1.2.0", "0.1.0-rc.1"]
    published = [info("t/a", v) for v in order]
    for v in published:
        store.publish(v)
        store.publish(info("t/other", v.manifest.version))  # interleaved with another algorithm
    store.publish(info("t/a.b", "9.9.9"))  # shares a prefix with t/a's name
    assert list(store.versions("t/a")) == published
    assert store.versions("t/nothing") == []


def test_all_versions_and_algorithms(store):
    assert list(store.all_versions()) == [] and list(store.algorithms()) == []
    published = [info("zed/b", "1.0.0"), info("ann/z", "1.0.0"), info("ann/a", "1.0.0"),
                 info("ann/a", "1.1.0"), info("zed/a", "0.1.0")]
    for v in published:
        store.publish(v)
    got = store.all_versions()
    assert len(got) == len(published)
    key = lambda i: (i.manifest.name, i.manifest.version)  # noqa: E731
    assert sorted(got, key=key) == sorted(published, key=key)
    assert store.algorithms() == ["ann/a", "ann/z", "zed/a", "zed/b"]


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
def test_manifest_and_private_flag_round_trip(store, private):
    v = full_info("t/full", "3.1.4", private=private)
    assert store.publish(v) is True
    for got in (store.get_version("t/full", "3.1.4"), store.versions("t/full")[0],
                [i for i in store.all_versions() if i.manifest.name == "t/full"][0]):
        assert got == v
        assert got.private is private
        m = got.manifest
        assert (m.name, m.version, m.runtime, m.entrypoint) == ("t/full", "3.1.4", "rust", "target/release/algo")
        assert list(m.permissions.can_call) == ["t/*", "other/tokenize"]
        assert m.permissions.callability == "private"
        assert (m.scaling.min_instances, m.scaling.max_instances, m.scaling.idle_seconds,
                m.scaling.concurrency) == (1, 7, 300, 4)


# resolution (algomesh.registry.resolve over each store) --------------------------------

# t/a in publish order; 3.0.0 is private to its owner "t".
_PUBLISHED = [("1.2.10", False), ("1.0.0", False), ("1.2.3", False), ("1.9.0", False),
              ("2.0.0-rc.1", False), ("0.9.0", False), ("3.0.0", True), ("1.10.0-beta", False)]


@pytest.fixture(scope="module", **BACKENDS)
def published(request, tmp_path_factory):
    """A store of each backend holding t/a's versions, shared by the resolution tests
    (they only read)."""
    backend = make_backend(request.param, tmp_path_factory.mktemp("resolve"))
    try:
        store = backend.open()
        for version, private in _PUBLISHED:
            store.publish(info("t/a", version, private=private))
        store.publish(info("u/only-private", "1.0.0", private=True))
        yield store
    finally:
        backend.close()


@pytest.mark.parametrize("target, requester, expected", [
    ("t/a", "", "1.9.0"),                      # latest release: no pre-release, no private
    ("t/a/latest", "", "1.9.0"),
    ("t/a", "other", "1.9.0"),
    ("t/a", "t", "3.0.0"),                     # the owner sees its private version
    ("t/a/1.2.3", "", "1.2.3"),                # exact
    ("t/a/1.2.*", "", "1.2.10"),               # newest in range, by semver not by text
    ("t/a/1.*", "", "1.9.0"),                  # 1.10.0-beta is a pre-release: not in a range
    ("t/a/2.0.0-rc.1", "", "2.0.0-rc.1"),      # pre-releases only when asked exactly
    ("t/a/1.10.0-beta", "", "1.10.0-beta"),
    ("t/a/3.0.0", "t", "3.0.0"),
    ("t/a/3.*", "t", "3.0.0"),
    ("u/only-private", "u", "1.0.0"),
])
def test_resolve(published, target, requester, expected):
    got = resolve(published, target, requester)
    assert got.manifest.name == "/".join(target.split("/")[:2])
    assert got.manifest.version == expected
    assert got == published.get_version(got.manifest.name, expected)


@pytest.mark.parametrize("target, requester, reason", [
    ("t/nothing", "", "ALGORITHM_NOT_FOUND"),
    ("t/nothing/1.0.0", "t", "ALGORITHM_NOT_FOUND"),
    ("t/a/9.9.9", "", "VERSION_NOT_FOUND"),
    ("t/a/4.*", "t", "VERSION_NOT_FOUND"),
    ("t/a/2.*", "", "VERSION_NOT_FOUND"),      # 2.x has only a pre-release
    ("t/a/3.0.0", "", "VERSION_NOT_FOUND"),    # private: not for anonymous callers
    ("t/a/3.0.0", "other", "VERSION_NOT_FOUND"),
    ("t/a/3.*", "tt", "VERSION_NOT_FOUND"),    # an owner whose name starts alike is not the owner
    ("u/only-private", "other", "ALGORITHM_NOT_FOUND"),  # all private: indistinguishable from unknown
    ("t/a/1.2", "", "INVALID_VERSION"),
    ("t/a/v1.2.3", "", "INVALID_VERSION"),
    ("t/a/banana", "", "INVALID_VERSION"),
    ("t/a/1.*.3", "", "INVALID_VERSION"),
])
def test_resolve_refuses(published, target, requester, reason):
    with pytest.raises(algomesh.AlgomeshError) as e:
        resolve(published, target, requester)
    assert e.value.reason == reason, e.value
    expected_class = algomesh.InvalidError if reason == "INVALID_VERSION" else algomesh.NotFoundError
    assert isinstance(e.value, expected_class)


# instances ----------------------------------------------------------------------------


def test_registered_instances_are_listed_passing(backend, store):
    a1 = instance(backend, 1, "t/a", "1.0.0")
    a2 = instance(backend, 2, "t/a", "2.0.0")
    b1 = instance(backend, 3, "t/b", "1.0.0")
    for inst in (a1, a2, b1):
        assert store.register_instance(inst, ttl=30) is None
    assert mine(backend, store.instances()) == [listed(a1), listed(a2), listed(b1)]
    assert mine(backend, store.instances("t/a")) == [listed(a1), listed(a2)]
    assert mine(backend, store.instances("t/a", "2.0.0")) == [listed(a2)]
    assert mine(backend, store.instances("t/b", "1.0.0")) == [listed(b1)]
    assert mine(backend, store.instances("t/b", "2.0.0")) == []
    assert mine(backend, store.instances("t/nothing")) == []
    assert mine(backend, store.instances("t/a.b")) == []
    # another store object on the same backend sees them too
    assert mine(backend, backend.open().instances("t/a")) == [listed(a1), listed(a2)]


def test_instance_state_changes(backend, store):
    a1, a2 = instance(backend, 1), instance(backend, 2)
    store.register_instance(a1, ttl=30)
    store.register_instance(a2, ttl=30)
    for state in (CRITICAL, PASSING, WARNING, CRITICAL, PASSING):
        store.set_instance_state(a1.id, state)
        assert mine(backend, store.instances("t/a")) == [listed(a1, state), listed(a2)]
        assert mine(backend, store.instances("t/a", "1.0.0")) == [listed(a1, state), listed(a2)]


def test_deregister_removes_the_instance(backend, store):
    a1, a2 = instance(backend, 1), instance(backend, 2)
    store.register_instance(a1, ttl=30)
    store.register_instance(a2, ttl=30)
    store.deregister_instance(a1.id)
    assert mine(backend, store.instances()) == [listed(a2)]
    assert mine(backend, store.instances("t/a")) == [listed(a2)]
    store.deregister_instance(a2.id)
    assert mine(backend, store.instances()) == []


def test_unknown_instance_ids_are_ignored(backend, store):
    """Deregistering twice, or a prober's late state write for an instance that just went
    away, is not an error."""
    a1 = instance(backend, 1)
    store.register_instance(a1, ttl=30)
    store.deregister_instance(a1.id)
    store.deregister_instance(a1.id)
    store.set_instance_state(a1.id, CRITICAL)
    store.set_instance_state(f"{backend.token}-never", PASSING)
    assert mine(backend, store.instances()) == []


def test_registering_again_replaces_the_instance_and_it_is_passing(backend, store):
    """Store.register_instance: "Register (or replace) an instance, passing at first"."""
    a1 = instance(backend, 1)
    store.register_instance(a1, ttl=30)
    store.set_instance_state(a1.id, CRITICAL)
    moved = registry_pb2.Instance(id=a1.id, algorithm="t/a", version="1.0.0",
                                  address="127.0.0.1:42999", started_at=a1.started_at + 5)
    store.register_instance(moved, ttl=30)
    assert mine(backend, store.instances()) == [listed(moved)]


def test_clear_instances_forgets_this_hosts_instances(backend, store):
    first_run = backend.open()  # a previous run of the control plane
    for n in (1, 2, 3):
        first_run.register_instance(instance(backend, n, "t/a" if n < 3 else "t/b"), ttl=30)
    first_run.set_instance_state(f"{backend.token}-2", CRITICAL)
    first_run.close()
    assert len(mine(backend, store.instances())) == 3
    store.clear_instances()
    assert mine(backend, store.instances()) == []
    # and the store works on afterwards
    a4 = instance(backend, 4)
    store.register_instance(a4, ttl=30)
    assert mine(backend, store.instances()) == [listed(a4)]


def test_an_instance_not_refreshed_within_its_ttl(backend, store):
    """With TTL checks (Consul) it goes critical by itself, and a refresh brings it back;
    the embedded store has none (the control plane's prober keeps states), so it stays."""
    ttl = 1.0
    a1 = instance(backend, 1)
    start = time.monotonic()
    store.register_instance(a1, ttl=ttl)
    assert state_of(store, a1.id) == PASSING
    if backend.has_ttl_checks:
        deadline = start + 3 * ttl + 1
        while state_of(store, a1.id) != CRITICAL and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - start
        assert state_of(store, a1.id) == CRITICAL, f"still not critical {took:.1f}s after a {ttl}s ttl"
        assert took >= 0.8 * ttl, f"critical after {took:.2f}s, before its {ttl}s ttl"
    else:
        time.sleep(1.5 * ttl)
        assert state_of(store, a1.id) == PASSING
    store.set_instance_state(a1.id, PASSING)
    assert state_of(store, a1.id) == PASSING


def test_an_instance_is_not_marked_critical_before_its_ttl(backend, store):
    """A state refreshed at least every ``ttl`` seconds keeps the instance passing (the
    Store docstring), so no backend may expire it sooner, whatever the ttl's fraction."""
    ttl = 1.45
    a1 = instance(backend, 1)
    start = time.monotonic()
    store.register_instance(a1, ttl=ttl)
    time.sleep(max(0.0, start + 1.2 - time.monotonic()))  # still 0.25 s inside the ttl
    assert state_of(store, a1.id) == PASSING, f"critical {time.monotonic() - start:.2f}s into a {ttl}s ttl"


def test_namespaces_are_isolated(backend, store):
    """Two registries on one backend (sqlite: two files; consul: two prefixes on one
    agent) see neither the other's versions nor its instances, and clearing one's
    instances leaves the other's alone."""
    other = backend.open_isolated()
    store.publish(info("t/a", "1.0.0"))
    other.publish(info("t/a", "1.0.0", content="other"))  # no clash: another registry
    other.publish(info("t/only-other", "1.0.0"))
    assert [v.digest for v in store.versions("t/a")] == [digest("t/a", "1.0.0", "")]
    assert store.algorithms() == ["t/a"]
    ours, theirs = instance(backend, 1), instance(backend, 2)
    store.register_instance(ours, ttl=30)
    other.register_instance(theirs, ttl=30)
    assert mine(backend, store.instances()) == [listed(ours)]
    assert mine(backend, other.instances()) == [listed(theirs)]
    store.clear_instances()
    assert mine(backend, other.instances()) == [listed(theirs)]


# change feeds -------------------------------------------------------------------------

_FEEDS = ["versions", "instances", "keys"]


def _wait(store, feed: str):
    return getattr(store, f"wait_{feed}")


@pytest.mark.parametrize("feed", _FEEDS)
def test_wait_with_index_0_returns_the_current_index_at_once(store, feed):
    index, took = timed(_wait(store, feed), 0, 10.0)
    assert isinstance(index, int) and index != 0
    assert took < 0.5, f"wait_{feed}(0, 10) took {took:.2f}s"


@pytest.mark.parametrize("feed", _FEEDS)
def test_wait_returns_after_the_timeout_when_nothing_changes(store, feed):
    timeout = 1.0
    current = _wait(store, feed)(0, timeout)
    index, took = timed(_wait(store, feed), current, timeout)
    assert 0.5 * timeout <= took <= 3 * timeout, f"wait_{feed}(current, {timeout}) took {took:.2f}s"
    assert index == current


@pytest.mark.parametrize("feed", _FEEDS)
def test_wait_honours_a_subsecond_timeout(store, feed):
    timeout = 0.3
    current = _wait(store, feed)(0, timeout)
    index, took = timed(_wait(store, feed), current, timeout)
    assert 0.5 * timeout <= took <= 3 * timeout, f"wait_{feed}(current, {timeout}) took {took:.2f}s"
    assert index == current


def _assert_wakes(wait, current: int, change, what: str) -> int:
    t = later(0.3, change)
    try:
        index, took = timed(wait, current, 5.0)
    finally:
        t.join(10)
    assert index != current, f"{what}: the index did not move"
    assert took < 2.5, f"{what}: returned after {took:.2f}s, not soon after the change"
    return index


def test_wait_versions_returns_early_on_publish(store):
    store.publish(info("t/a", "1.0.0"))
    current = store.wait_versions(0, 1.0)
    _assert_wakes(store.wait_versions, current, lambda: store.publish(info("t/a", "1.1.0")), "publish")
    assert [v.manifest.version for v in store.versions("t/a")] == ["1.0.0", "1.1.0"]


def test_wait_versions_sees_another_control_planes_publish(backend, store):
    other = backend.open()
    current = store.wait_versions(0, 1.0)
    new = _assert_wakes(store.wait_versions, current, lambda: other.publish(info("t/b", "1.0.0")),
                        "publish from another store object")
    assert store.get_version("t/b", "1.0.0") is not None
    # publishing the same content again changes nothing, so it wakes nobody
    t = later(0.2, lambda: other.publish(info("t/b", "1.0.0")))
    try:
        index, took = timed(store.wait_versions, new, 1.0)
    finally:
        t.join(10)
    assert index == new and took >= 0.5, f"a no-op publish woke the versions feed after {took:.2f}s"


def test_wait_instances_returns_early_on_register_state_change_and_deregister(backend, store):
    a1 = instance(backend, 1)
    current = store.wait_instances(0, 1.0)
    current = _assert_wakes(store.wait_instances, current,
                            lambda: store.register_instance(a1, ttl=30), "register")
    assert state_of(store, a1.id) == PASSING
    current = _assert_wakes(store.wait_instances, current,
                            lambda: store.set_instance_state(a1.id, CRITICAL), "passing -> critical")
    assert state_of(store, a1.id) == CRITICAL
    current = _assert_wakes(store.wait_instances, current,
                            lambda: store.set_instance_state(a1.id, PASSING), "critical -> passing")
    assert state_of(store, a1.id) == PASSING
    _assert_wakes(store.wait_instances, current,
                  lambda: store.deregister_instance(a1.id), "deregister")
    assert state_of(store, a1.id) is None


def test_the_feeds_are_separate(backend, store):
    """An instance change does not wake a versions wait, nor a publish an instances wait,
    nor either of them a keys wait. (A Consul KV prefix with no keys at all answers the
    whole KV table's index, so any KV write wakes it: that spurious wake is allowed, and
    the test starts with a key under each prefix.)"""
    store.add_key(new_key("t")[1])
    for wait, change, what in (
        (store.wait_versions, lambda: store.register_instance(instance(backend, 1), ttl=30), "register"),
        (store.wait_instances, lambda: store.publish(info("t/a", "1.0.0")), "publish"),
        (store.wait_keys, lambda: store.publish(info("t/a", "1.1.0")), "publish"),
        (store.wait_versions, lambda: store.add_key(new_key("t")[1]), "new key"),
    ):
        current = wait(0, 1.0)
        t = later(0.2, change)
        try:
            index, took = timed(wait, current, 1.0)
        finally:
            t.join(10)
        assert index == current and took >= 0.5, f"{wait.__name__} woke after {took:.2f}s on a {what}"


# API keys -------------------------------------------------------------------------------

def test_keys_round_trip_with_their_hash_and_never_their_secret(store):
    secret, record = new_key("alice", algorithms=["alice/*", "demo/clean"], no_pipelines=True, data="write")
    store.add_key(record)
    [stored] = store.keys()
    assert stored == record
    assert stored.hash and stored.salt and secret.split("_", 2)[2].encode() not in stored.SerializeToString()
    assert authenticate(f"Simple {secret}", {k.id: k for k in store.keys()}).owner == "alice"


def test_keys_are_listed_in_creation_order(store):
    records = [new_key(f"o{i}")[1] for i in range(4)]
    for r in records:
        store.add_key(r)
    assert [k.id for k in store.keys()] == [r.id for r in records]


def test_remove_key(store):
    a, b = new_key("alice")[1], new_key("bob")[1]
    store.add_key(a)
    store.add_key(b)
    assert store.remove_key(a.id) is True
    assert [k.id for k in store.keys()] == [b.id]
    assert store.remove_key(a.id) is False
    assert store.remove_key("0123456789abcdef") is False


def test_wait_keys_returns_early_on_add_and_remove(store):
    record = new_key("alice")[1]
    current = store.wait_keys(0, 1.0)
    current = _assert_wakes(store.wait_keys, current, lambda: store.add_key(record), "add_key")
    _assert_wakes(store.wait_keys, current, lambda: store.remove_key(record.id), "remove_key")


def test_keys_seen_by_another_control_plane(backend, store):
    other = backend.open()
    record = new_key("alice")[1]
    current = store.wait_keys(0, 1.0)
    _assert_wakes(store.wait_keys, current, lambda: other.add_key(record), "add_key from another store object")
    assert [k.id for k in store.keys()] == [record.id]
