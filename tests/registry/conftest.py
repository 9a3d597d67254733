"""The ``store`` fixture of the registry store contract suite: every test runs once per
backend, and the test id says which one ran.

- ``[sqlite]``: ``SqliteStore`` on a real SQLite file in the test's tmp_path.
- ``[consul-FAKE]``: ``ConsulStore`` talking HTTP to ``tests.fakes.consul_fake.FakeConsul``,
  a transport-level FAKE of Consul's HTTP API started for each test. It is NOT Consul.
- ``[consul-real]``: when ``CONSUL_HTTP_ADDR`` (host:port) is set, ``ConsulStore`` on that
  real agent, under a prefix unique to the test; the test's KV keys and the services it
  registered are removed afterwards. (``clear_instances`` is part of the contract and
  deregisters every algomesh service this host registered on that agent: point it at a
  throwaway agent, not at one a running control plane uses.)

The consul half is never skipped: a missing fake or an unreachable agent is an error.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from algomesh.registry.sqlite_store import SqliteStore

CONSUL_ADDR = os.environ.get("CONSUL_HTTP_ADDR", "").strip()
CONSUL_ID = "consul-real" if CONSUL_ADDR else "consul-FAKE"
BACKEND_KEY = pytest.StashKey["Backend"]()


class Backend:
    """One backend under test: opens store objects on it, and cleans up after the test."""

    kind = ""
    label = ""
    has_ttl_checks = False   # marks an instance critical by itself when its ttl lapses

    def __init__(self) -> None:
        self.token = "t" + uuid.uuid4().hex[:10]   # in instance ids, to tell ours apart
        self._opened: list = []

    def _open(self, namespace: str):
        raise NotImplementedError

    def open(self):
        """Another store object on the same backend and namespace (a second control plane)."""
        store = self._open("main")
        self._opened.append(store)
        return store

    def open_isolated(self):
        """A store on a separate namespace of the same backend (another registry)."""
        store = self._open("other")
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            try:
                store.close()
            except Exception:
                pass


class SqliteBackend(Backend):
    kind = label = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__()
        self.tmp_path = tmp_path

    def _open(self, namespace: str):
        return SqliteStore(self.tmp_path / ("registry.db" if namespace == "main" else "other.db"))


class ConsulBackend(Backend):
    kind = "consul"
    has_ttl_checks = True

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"algomesh-test-{uuid.uuid4().hex}"
        self._fake = None
        if CONSUL_ADDR:
            address = CONSUL_ADDR.removeprefix("http://")
            if "://" in address:
                raise RuntimeError(f"CONSUL_HTTP_ADDR={CONSUL_ADDR!r}: give host:port (plain HTTP)")
            self.label = f"consul (real agent at {address})"
        else:
            from tests.fakes.consul_fake import FakeConsul  # an ImportError fails the test

            self._fake = FakeConsul()
            address = self._fake.start()
            self.label = f"consul (FAKE at {address})"
        host, _, port = address.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port or 8500)
        if self._fake is None:
            self._client().agent.self()   # unreachable: an error, never a skip

    def _client(self):
        import consul

        return consul.Consul(host=self.host, port=self.port, token=os.environ.get("CONSUL_HTTP_TOKEN"))

    def _open(self, namespace: str):
        from algomesh.registry.consul_store import ConsulStore

        prefix = self.prefix if namespace == "main" else f"{self.prefix}-other"
        return ConsulStore(self.host, self.port, prefix=prefix, token=os.environ.get("CONSUL_HTTP_TOKEN"))

    def close(self) -> None:
        super().close()
        if self._fake is not None:
            self._fake.stop()
            return
        c = self._client()
        for prefix in (self.prefix, f"{self.prefix}-other"):
            c.kv.delete(f"{prefix}/", recurse=True)
        for sid in list(c.agent.services() or {}):
            if sid.startswith(self.token):
                c.agent.service.deregister(sid)


BACKENDS = dict(params=["sqlite", "consul"], ids=["sqlite", CONSUL_ID])


def make_backend(kind: str, tmp_path: Path) -> Backend:
    return SqliteBackend(tmp_path) if kind == "sqlite" else ConsulBackend()


@pytest.fixture(**BACKENDS)
def store(request, tmp_path):
    """A fresh store of each backend; ``backend`` (below) opens more on the same one."""
    backend = make_backend(request.param, tmp_path)
    request.node.stash[BACKEND_KEY] = backend
    try:
        yield backend.open()
    finally:
        backend.close()


@pytest.fixture
def backend(request, store) -> Backend:
    return request.node.stash[BACKEND_KEY]
