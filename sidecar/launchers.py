"""The launcher seam: how the control plane gets instances of an algorithm version.

One small interface, two backends chosen by name (``algomesh up --launcher NAME``):

- ``local`` (``launcher.LocalLauncher``, the embedded default): each instance is a sidecar
  subprocess of the control plane, with its runner as the sidecar's child.
- ``kubernetes`` (``kubernetes_launcher.KubernetesLauncher``): each algorithm version is a
  Deployment whose pods run the sidecar and runner containers described in deploy/; the
  launcher scales it.

An instance is *ready* once its sidecar registers with the registry (either backend: the
sidecar registers itself over the mesh port). The scheduler (``scheduler.py``) drives a
launcher: it pre-starts, stops idle instances and adds instances under load.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from algomesh.v1 import registry_pb2


@dataclass(frozen=True)
class Running:
    """One instance a launcher runs, as the scheduler sees it."""
    id: str
    name: str
    version: str
    state: str                 # "starting" | "warm" | "stopping"
    age: float                 # seconds since it was started
    metrics_address: str = ""  # host:port of its sidecar's /metrics, once registered
    reason: str = ""           # why it was started: cold-start, pre-start, reservation, scale-up, rotation


class Launcher(Protocol):
    async def ensure(self, info: registry_pb2.VersionInfo) -> tuple[list[registry_pb2.Instance], bool]:
        """Ready instances of this version, starting one if there is none; the flag says
        whether this call started it (a cold start)."""

    def prestart(self, info: registry_pb2.VersionInfo, reason: str = "pre-start") -> bool:
        """Start one instance in the background unless one is ready or starting."""

    async def add(self, info: registry_pb2.VersionInfo, reason: str) -> registry_pb2.Instance:
        """Start one more instance and wait until it is ready."""

    async def scale(self, info: registry_pb2.VersionInfo, count: int) -> list[registry_pb2.Instance]:
        """Run exactly ``count`` instances of this version."""

    async def stop(self, instance_id: str) -> None:
        """Stop one instance (it withdraws from the registry first)."""

    def ready(self, name: str, version: str) -> list[registry_pb2.Instance]:
        """The registered, live, passing instances of a version."""

    def running(self) -> list[Running]:
        """Every instance this launcher runs, in any state."""

    def fits(self, info: registry_pb2.VersionInfo) -> bool:
        """Whether the machine (or cluster) can hold one more instance of this version."""

    async def stop_all(self) -> None:
        """Shutdown: stop every instance."""


LAUNCHERS = ("local", "kubernetes")
