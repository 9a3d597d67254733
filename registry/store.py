"""The store interface every registry backend implements, and the factory by name.

Stores keep versions (immutable, keyed by owner/name and exact version) and instances
(the running sidecars, each with a health state), and API keys. Resolution of version ranges happens
above the store (``algomesh.registry.resolve``), so every backend resolves alike.

Each part has a change feed shaped like Consul's blocking queries: ``wait_*(index,
timeout)`` returns the current index once it differs from ``index`` or the timeout
passes. Indexes only mean something to the store that issued them; 0 asks for "now".
Backends: ``sqlite:///path/registry.db`` (embedded default), ``consul://host:8500[/prefix]``.
"""
from __future__ import annotations

from typing import Callable, Protocol
from urllib.parse import urlparse

from algomesh.v1 import registry_pb2

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"


class Store(Protocol):
    # versions ------------------------------------------------------------------------
    def publish(self, info: registry_pb2.VersionInfo) -> bool:
        """Store a version atomically. True if created, False if the same digest was
        already there; raises VersionExistsError for a different digest."""

    def get_version(self, name: str, version: str) -> registry_pb2.VersionInfo | None: ...

    def versions(self, name: str) -> list[registry_pb2.VersionInfo]:
        """Every version of ``name``, in publish order."""

    def all_versions(self) -> list[registry_pb2.VersionInfo]:
        """Every version of every algorithm."""

    def algorithms(self) -> list[str]: ...

    # instances -----------------------------------------------------------------------
    def register_instance(self, instance: registry_pb2.Instance, ttl: float) -> None:
        """Register (or replace) an instance, passing at first. Its state is kept
        fresh by ``set_instance_state`` at least every ``ttl`` seconds (a backend
        with TTL checks, like Consul, marks it critical when that stops)."""

    def set_instance_state(self, instance_id: str, state: str) -> None:
        """passing, warning or critical."""

    def deregister_instance(self, instance_id: str) -> None: ...

    def instances(self, name: str = "", version: str = "") -> list[registry_pb2.Instance]:
        """Instances in every state, each with its current ``state``."""

    def clear_instances(self) -> None:
        """Forget the instances a previous run of this control plane left registered."""

    # API keys (salted hashes only; see algomesh.registry.keys) ------------------------
    def add_key(self, key: registry_pb2.ApiKey) -> None: ...

    def remove_key(self, key_id: str) -> bool:
        """True if the key existed."""

    def keys(self) -> list[registry_pb2.ApiKey]: ...

    # change feeds --------------------------------------------------------------------
    def wait_versions(self, index: int, timeout: float) -> int: ...

    def wait_instances(self, index: int, timeout: float) -> int: ...

    def wait_keys(self, index: int, timeout: float) -> int: ...

    def close(self) -> None: ...


_FACTORIES: dict[str, Callable[[str], Store]] = {}


def register_backend(scheme: str):
    def deco(factory: Callable[[str], Store]) -> Callable[[str], Store]:
        _FACTORIES[scheme] = factory
        return factory
    return deco


def open_store(url: str) -> Store:
    """A store by URL; each backend lives in its own module and registers its scheme."""
    from . import consul_store, sqlite_store  # noqa: F401  (register "consul", "sqlite")

    scheme = urlparse(url).scheme
    if scheme not in _FACTORIES:
        raise ValueError(f"unknown registry backend {scheme!r} in {url!r}; known: {sorted(_FACTORIES)}")
    return _FACTORIES[scheme](url)
