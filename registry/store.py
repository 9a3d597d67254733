"""The store interface every registry backend implements, and the factory by name.

Stores keep versions (immutable, keyed by owner/name and exact version) and instances
(the running sidecars). Resolution of version ranges happens above the store
(``algomesh.registry.resolve``), so every backend resolves the same way.
"""
from __future__ import annotations

from typing import Callable, Protocol
from urllib.parse import urlparse

from algomesh.v1 import registry_pb2


class Store(Protocol):
    def publish(self, info: registry_pb2.VersionInfo) -> bool:
        """Store a version atomically. True if created, False if the same digest was
        already there; raises VersionExistsError for a different digest."""

    def get_version(self, name: str, version: str) -> registry_pb2.VersionInfo | None: ...

    def versions(self, name: str) -> list[registry_pb2.VersionInfo]:
        """Every version of ``name``, in publish order."""

    def algorithms(self) -> list[str]: ...

    def register_instance(self, instance: registry_pb2.Instance) -> None: ...

    def deregister_instance(self, instance_id: str) -> None: ...

    def instances(self, name: str = "", version: str = "") -> list[registry_pb2.Instance]: ...

    def clear_instances(self) -> None:
        """Forget every instance (a control plane starting fresh)."""

    def close(self) -> None: ...


_FACTORIES: dict[str, Callable[[str], Store]] = {}


def register_backend(scheme: str):
    def deco(factory: Callable[[str], Store]) -> Callable[[str], Store]:
        _FACTORIES[scheme] = factory
        return factory
    return deco


def open_store(url: str) -> Store:
    """``sqlite:///path/to/registry.db`` (more backends register themselves by scheme)."""
    from . import sqlite_store  # noqa: F401  (registers "sqlite")

    scheme = urlparse(url).scheme
    if scheme not in _FACTORIES:
        raise ValueError(f"unknown registry backend {scheme!r} in {url!r}; known: {sorted(_FACTORIES)}")
    return _FACTORIES[scheme](url)
