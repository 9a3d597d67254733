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

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Protocol

from opentelemetry import trace as otel

from algomesh._errors import AlgomeshError, error
from algomesh.v1 import registry_pb2

log = logging.getLogger("algomesh.launcher")


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


class Starts:
    """What both launchers do the same way around starting an instance: one start per
    version at a time for cold starts and pre-starts (a call that finds one starting waits
    for it and is no cold start), the ``on_start`` hook (the scheduler pre-starts the
    followers), and the ``start owner/name@version`` span with its reason. A launcher
    provides ``_launch(info, reason)`` (start one instance, wait until it registered),
    ``ready`` and ``fits``."""

    name = ""

    def __init__(self, *, tracer: otel.Tracer | None = None,
                 on_start: Callable[[registry_pb2.VersionInfo], None] | None = None) -> None:
        self._tracer = tracer or otel.get_tracer("algomesh.launcher")
        self.on_start = on_start  # told before every start
        self._starting: dict[tuple[str, str], asyncio.Future[registry_pb2.Instance]] = {}
        # every start on its way, whatever asked for it (a reservation, a scale, a rotation):
        # each a future that resolves when it ends, to its instance or None
        self._launching: dict[tuple[str, str], set[asyncio.Future]] = {}
        self._stopping = False

    async def _launch(self, info: registry_pb2.VersionInfo, reason: str) -> registry_pb2.Instance:
        raise NotImplementedError

    def ready(self, name: str, version: str) -> list[registry_pb2.Instance]:
        raise NotImplementedError

    def fits(self, info: registry_pb2.VersionInfo) -> bool:
        raise NotImplementedError

    async def ensure(self, info: registry_pb2.VersionInfo) -> tuple[list[registry_pb2.Instance], bool]:
        """Ready instances of this version, starting one if there is none. The flag says
        whether this call started it (a cold start); a call that finds an instance already
        starting (another call's, or a pre-start) waits for it but did not start it."""
        m = info.manifest
        found = self.ready(m.name, m.version)
        if found:
            return found, False
        key = (m.name, m.version)
        while key not in self._starting and self._launching.get(key):
            # a start some other path asked for (min_instances, scale) is on its way: this
            # call waits for it rather than start one more (which could pass max_instances)
            await asyncio.wait(list(self._launching[key]), return_when=asyncio.FIRST_COMPLETED)
            found = self.ready(m.name, m.version)
            if found:
                return found, False
        pending, started = self._starting_future(info, "cold-start")
        await asyncio.shield(pending)
        return self.ready(m.name, m.version) or [pending.result()], started

    def starting(self, name: str, version: str) -> bool:
        return (name, version) in self._starting or bool(self._launching.get((name, version)))

    def _starting_future(self, info: registry_pb2.VersionInfo, reason: str) -> tuple[asyncio.Future, bool]:
        key = (info.manifest.name, info.manifest.version)
        pending = self._starting.get(key)
        if pending is not None:
            return pending, False
        pending = asyncio.ensure_future(self._start(info, reason))
        self._starting[key] = pending
        pending.add_done_callback(lambda _f: self._starting.pop(key, None))
        return pending, True

    def prestart(self, info: registry_pb2.VersionInfo, reason: str = "pre-start") -> bool:
        """Start an instance in the background unless one is ready or starting, or there
        is no room for one more (the scheduler's pre-start). True if it started one."""
        m = info.manifest
        if self._stopping or self.ready(m.name, m.version) or self.starting(m.name, m.version):
            return False
        if not self.fits(info):
            log.info("not pre-starting %s %s: no room for another instance", m.name, m.version)
            return False
        pending, started = self._starting_future(info, reason)
        if started:
            pending.add_done_callback(_log_failure)
        return started

    async def add(self, info: registry_pb2.VersionInfo, reason: str) -> registry_pb2.Instance:
        """Start one more instance of this version and wait until it is ready."""
        return await self._start(info, reason)

    async def replace(self, due: list[tuple[str, registry_pb2.VersionInfo]]) -> None:
        """Rotation: replace each ``(instance id, version)``, its successor started first, so
        the version always has a ready instance; one whose successor fails to start stays."""
        for instance_id, info in due:
            if self._stopping:
                return
            m = info.manifest
            log.info("rotating instance %s of %s %s (its certificate ages)", instance_id, m.name, m.version)
            try:
                await self.add(info, "rotation")
            except AlgomeshError as exc:
                log.error("could not start a successor to %s: %s", instance_id, exc)
                continue
            await self.stop(instance_id)

    async def stop(self, instance_id: str) -> None:
        raise NotImplementedError

    async def _start(self, info: registry_pb2.VersionInfo, reason: str) -> registry_pb2.Instance:
        if self._stopping:
            raise error("LAUNCH_FAILED", "the mesh is shutting down")
        m = info.manifest
        if self.on_start is not None:
            try:
                self.on_start(info)  # its followers start alongside it
            except Exception:
                log.exception("the on_start hook failed for %s %s", m.name, m.version)
        key = (m.name, m.version)
        ended: asyncio.Future = asyncio.get_running_loop().create_future()
        self._launching.setdefault(key, set()).add(ended)
        instance = None
        try:
            with self._tracer.start_as_current_span(
                    f"start {m.name}@{m.version}", kind=otel.SpanKind.INTERNAL,
                    attributes={"algomesh.algorithm": m.name, "algomesh.version": m.version,
                                "algomesh.start.reason": reason, "algomesh.launcher": self.name}) as span:
                instance = await self._launch(info, reason)
                span.set_attribute("algomesh.instance", instance.id)
                return instance
        finally:
            ended.set_result(instance)
            waiting = self._launching.get(key)
            if waiting is not None:
                waiting.discard(ended)
                if not waiting:
                    del self._launching[key]


def _log_failure(f: asyncio.Future) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.warning("a pre-start failed: %s", f.exception())
