"""The scheduler: what runs where, and when it stops.

Three duties, on top of a launcher (launchers.py):

- **Pre-start** (prestart.py): when an algorithm starts, or a call reaches it through the
  ingress while something that usually follows it is not running, its followers start
  in the background.
- **Scale-to-zero and reservations**: an instance with no call for its version's
  ``scaling.idle_seconds`` stops, as long as ``min_instances`` stay; the latest release of
  an algorithm with ``min_instances`` keeps that many running (restarted if one dies).
- **Scale-up**: when the calls in flight per ready instance of a version stay above its
  threshold (``scaling.scale_up_in_flight``, default ``scaling.concurrency``: calls have
  started to queue) for ``scale_up_after`` seconds (a burst is not load), one more
  instance starts — never past ``max_instances`` nor past
  what the machine holds (``launcher.fits``) — and, once ready, the next decision is made.

What an instance is doing is read from its sidecar's own ``/metrics`` (calls answered and
calls in flight on its inbound side), scraped every ``interval`` seconds, so the control
plane sees calls between sidecars too, not only the ones its ingress routes. An instance
whose metrics cannot be read is left alone (the health prober deals with hung ones).
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable

from algomesh._errors import AlgomeshError
from algomesh.registry.manifest import MAX_INSTANCES
from algomesh.registry.resolve import resolve_in
from algomesh.registry.view import RegistryView
from algomesh.v1 import registry_pb2

from .launchers import Launcher, Running

log = logging.getLogger("algomesh.scheduler")

SCRAPE_TIMEOUT = 1.0
RESERVATION_RETRY = 30.0  # seconds before starting a reservation that failed to start again
_SERIES = re.compile(rb'^(algomesh_in_flight|algomesh_calls_total|algomesh_errors_total)\{([^}]*)\} ([0-9.eE+-]+)$',
                     re.MULTILINE)


@dataclass
class Activity:
    """What the scheduler knows of one instance."""
    calls: float = -1.0          # inbound calls answered + failed, at the last scrape
    in_flight: int = 0
    last_active: float = 0.0     # monotonic time of the last sign of a call
    scraped: bool = False        # the last scrape worked


async def scrape(address: str, timeout: float = SCRAPE_TIMEOUT) -> tuple[int, float] | None:
    """(inbound calls in flight, inbound calls so far) from a sidecar's /metrics; None if
    it cannot be read in time."""
    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, ValueError, asyncio.TimeoutError):
        return None
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        body = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        writer.close()
    if not body.startswith(b"HTTP/1.1 200"):
        return None
    in_flight, calls = 0, 0.0
    for name, labels, value in _SERIES.findall(body):
        if b'surface="inbound"' not in labels:
            continue
        if name == b"algomesh_in_flight":
            in_flight = int(float(value))
        else:
            calls += float(value)
    return in_flight, calls


class Scheduler:
    def __init__(self, launcher: Launcher, view: RegistryView, *, interval: float = 1.0,
                 scale_up_after: float = 3.0, clock: Callable[[], float] = time.monotonic,
                 on_stop: Callable[[Running], None] | None = None,
                 on_scale_up: Callable[[str, str], None] | None = None) -> None:
        self.launcher = launcher
        self.view = view
        self.interval = interval
        self.scale_up_after = scale_up_after
        self._busy_since: dict[tuple[str, str], float] = {}  # version -> when its queueing began
        self._no_room: set[tuple[str, str]] = set()
        self.clock = clock
        self.activity: dict[str, Activity] = {}
        self.on_stop = on_stop
        self.on_scale_up = on_scale_up
        self._adding: set[tuple[str, str]] = set()
        self._retry_at: dict[tuple[str, str], float] = {}  # a reservation that failed to start waits
        self._tasks: set[asyncio.Future] = set()

    # the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        running = [r for r in self.launcher.running() if r.state != "stopping"]
        await self._observe(running)
        versions = {(i.manifest.name, i.manifest.version): i for i in self.view.versions}
        by_version: dict[tuple[str, str], list[Running]] = {}
        for r in running:
            by_version.setdefault((r.name, r.version), []).append(r)
        for key, instances in by_version.items():
            info = versions.get(key)
            if info is not None:
                await self._scale_down_idle(info, instances)
                self._scale_up(info, instances)
        self._reserve(by_version)

    async def _observe(self, running: list[Running]) -> None:
        now = self.clock()
        for stale in set(self.activity) - {r.id for r in running}:
            del self.activity[stale]
        warm = [r for r in running if r.state == "warm" and r.metrics_address]
        results = await asyncio.gather(*(scrape(r.metrics_address) for r in warm))
        for r in running:
            self.activity.setdefault(r.id, Activity(last_active=now))  # a new instance counts as active
        for r, got in zip(warm, results):
            a = self.activity[r.id]
            a.scraped = got is not None
            if got is None:
                continue
            in_flight, calls = got
            if in_flight > 0 or calls != a.calls:
                a.last_active = now
            a.in_flight, a.calls = in_flight, calls

    async def _scale_down_idle(self, info: registry_pb2.VersionInfo, instances: list[Running]) -> None:
        m = info.manifest
        idle_after = m.scaling.idle_seconds
        keep = self._reserved(info)
        now = self.clock()
        idle = sorted((r for r in instances if r.state == "warm" and self.activity[r.id].scraped
                       and self.activity[r.id].in_flight == 0
                       and now - self.activity[r.id].last_active >= idle_after),
                      key=lambda r: self.activity[r.id].last_active)
        count = len(instances)
        for r in idle:
            if count <= keep:
                break
            count -= 1
            log.info("stopping idle instance %s of %s %s (no call for %.0fs)", r.id, r.name, r.version,
                     now - self.activity[r.id].last_active)
            self.activity.pop(r.id, None)
            if self.on_stop is not None:
                self.on_stop(r)
            self._spawn(self.launcher.stop(r.id))

    def _scale_up(self, info: registry_pb2.VersionInfo, instances: list[Running]) -> None:
        m = info.manifest
        key = (m.name, m.version)
        if key in self._adding or any(r.state == "starting" for r in instances):
            return  # one at a time: decide again once it is ready
        warm = [r for r in instances if r.state == "warm" and self.activity.get(r.id, Activity()).scraped]
        if not warm:
            return
        threshold = m.scaling.scale_up_in_flight or max(1, m.scaling.concurrency)
        load = sum(self.activity[r.id].in_flight for r in warm) / len(warm)
        limit = min(m.scaling.max_instances or MAX_INSTANCES, MAX_INSTANCES)
        if load <= threshold:
            self._busy_since.pop(key, None)
            return
        now = self.clock()
        if now - self._busy_since.setdefault(key, now) < self.scale_up_after or len(instances) >= limit:
            return
        if not self.launcher.fits(info):
            if key not in self._no_room:  # said once per episode, not every tick
                self._no_room.add(key)
                log.info("not scaling up %s %s: the machine has no room for another instance", m.name, m.version)
            return
        self._no_room.discard(key)
        log.info("scale up %s %s: %.1f calls in flight per instance (threshold %d), %d -> %d instances",
                 m.name, m.version, load, threshold, len(instances), len(instances) + 1)
        if self.on_scale_up is not None:
            self.on_scale_up(m.name, m.version)
        self._adding.add(key)
        self._busy_since.pop(key, None)
        task = self._spawn(self.launcher.add(info, "scale-up"))
        task.add_done_callback(lambda _t: self._adding.discard(key))

    # reservations ---------------------------------------------------------------------

    def _latest(self) -> dict[str, registry_pb2.VersionInfo]:
        by_name: dict[str, list[registry_pb2.VersionInfo]] = {}
        for info in self.view.versions:
            by_name.setdefault(info.manifest.name, []).append(info)
        latest = {}
        for name, infos in by_name.items():
            try:
                latest[name] = resolve_in(name, infos)
            except AlgomeshError:  # only pre-releases
                continue
        return latest

    def _reserved(self, info: registry_pb2.VersionInfo) -> int:
        """Instances kept whatever the load: min_instances, for an algorithm's latest release."""
        m = info.manifest
        if not m.scaling.min_instances:
            return 0
        latest = self._latest().get(m.name)
        return m.scaling.min_instances if latest is not None and latest.manifest.version == m.version else 0

    def _reserve(self, by_version: dict[tuple[str, str], list[Running]]) -> None:
        for info in self._latest().values():
            m = info.manifest
            key = (m.name, m.version)
            have = len(by_version.get(key, ()))
            if m.scaling.min_instances > have and key not in self._adding \
                    and self.clock() >= self._retry_at.get(key, 0.0):
                log.info("reservation: %s %s keeps %d instances (has %d)", m.name, m.version,
                         m.scaling.min_instances, have)
                self._adding.add(key)
                task = self._spawn(self._add_many(info, m.scaling.min_instances - have, key))
                task.add_done_callback(lambda _t, key=key: self._adding.discard(key))

    async def _add_many(self, info: registry_pb2.VersionInfo, count: int, key: tuple[str, str]) -> None:
        results = await asyncio.gather(*(self.launcher.add(info, "reservation") for _ in range(count)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                self._retry_at[key] = self.clock() + RESERVATION_RETRY
                log.error("could not start a reserved instance of %s %s: %s", info.manifest.name,
                          info.manifest.version, r)

    def _spawn(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("scheduler action failed: %s", task.exception())
