"""The local launcher: algorithm instances as subprocesses of the control plane.

``ensure(version)`` returns the ready instances of a version, starting one when there
is none (a cold start: sidecar + runner + the algorithm's load()). An instance is ready
when its sidecar registers with the registry. The scheduler (scheduler.py) pre-starts,
adds and stops instances through the ``Launcher`` interface (launchers.py); ``stop_all``
stops every one of them. A child never outlives the control plane: it is asked to stop
on shutdown, killed if it does not, and Linux's parent-death signal covers a control
plane that is itself killed.

Every start is a span, ``start owner/name@version``, in the trace of the call that caused
it (when one did), with the reason: cold-start, pre-start, reservation, scale-up, scale,
rotation. So a trace shows what was started for a call and whether it was ready in time.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from algomesh._errors import AlgomeshError, error
from algomesh.registry.artifacts import ArtifactStore
from algomesh.registry.manifest import MAX_INSTANCES
from algomesh.registry.service import Registry
from algomesh.v1 import registry_pb2

from opentelemetry import trace as otel

from .cache import ENV_CACHE_MB, cache_mb as result_cache_mb
from .launchers import Running, Starts
from .meshtls import MeshCredentials
from .procs import Child, child_env

log = logging.getLogger("algomesh.launcher")

STOP_GRACE = 5.0
INSTANCE_BYTES_GUESS = 160 * 1024 * 1024  # a sidecar + Python runner, before one of a version has run


@dataclass
class _Child:
    id: str
    name: str
    version: str
    info: registry_pb2.VersionInfo
    process: Child
    log_path: Path
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    instance: registry_pb2.Instance | None = None
    started: float = field(default_factory=time.monotonic)
    reason: str = "cold-start"
    stopping: bool = False


class LocalLauncher(Starts):
    name = "local"

    def __init__(self, *, registry: Registry, registry_address: str, artifacts: ArtifactStore,
                 socket_dir: Path, log_dir: Path, launch_timeout: float = 300.0,
                 max_payload: int = 10 * 1024 * 1024, max_stream: int | None = None,
                 failing: Callable[[str], bool] = lambda _id: False,
                 issue: Callable[[str], MeshCredentials] | None = None,
                 tracer: otel.Tracer | None = None,
                 on_start: Callable[[registry_pb2.VersionInfo], None] | None = None,
                 max_total: int = MAX_INSTANCES * 4, memory_reserve: int | None = None,
                 cache_mb: float | None = None) -> None:
        super().__init__(tracer=tracer, on_start=on_start)
        # a deterministic version's result cache, per instance (None: $ALGOMESH_CACHE_MB, else 64)
        self.cache_mb = result_cache_mb(os.environ.get(ENV_CACHE_MB) if cache_mb is None else cache_mb)
        self.registry = registry
        self.registry_address = registry_address
        self.artifacts = artifacts
        self.socket_dir = Path(socket_dir)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.launch_timeout = launch_timeout
        self.max_payload = max_payload
        self.max_stream = max_stream  # a streamed call's bytes (None: the sidecar's default)
        self._failing = failing  # instance id -> its health check is failing
        self._issue = issue      # identity -> a mesh certificate for it; None: --insecure
        self._children: dict[str, _Child] = {}
        self._reapers: set[asyncio.Future[None]] = set()
        self.max_total = max_total  # instances of all versions together
        self.memory_reserve = memory_reserve
        registry.on_instance(self._on_instance)

    # registry events ----------------------------------------------------------------

    def _on_instance(self, event: str, instance: registry_pb2.Instance) -> None:
        child = self._children.get(instance.id)
        if child is None:
            return
        if event == "register":
            child.instance = instance
            child.ready.set()
        else:
            child.instance = None

    # the locator --------------------------------------------------------------------

    def ready(self, name: str, version: str) -> list[registry_pb2.Instance]:
        return [c.instance for c in self._children.values()
                if c.name == name and c.version == version and c.instance is not None
                and c.process.returncode is None and not self._failing(c.id)]

    async def stop(self, instance_id: str) -> None:
        child = self._children.get(instance_id)
        if child is not None:
            await self._stop_child(child)

    def running(self) -> list[Running]:
        now, out = time.monotonic(), []
        for c in list(self._children.values()):
            if c.process.returncode is not None:
                continue
            if self._stopping or c.stopping or (c.ready.is_set() and c.instance is None):
                state = "stopping"
            else:
                state = "warm" if c.instance is not None else "starting"
            out.append(Running(c.id, c.name, c.version, state, now - c.started,
                               c.instance.metrics_address if c.instance is not None else "", c.reason))
        return out

    def fits(self, info: registry_pb2.VersionInfo) -> bool:
        """Room for one more instance: under ``max_total`` instances, and the memory
        available now, less a reserve, holds one more as large as this version's running
        ones (a guess before the first has run)."""
        live = [c for c in self._children.values() if c.process.returncode is None]
        if len(live) >= self.max_total:
            return False
        available, total = _meminfo()
        if not total:
            return True  # not Linux: no way to know; max_total still bounds it
        m = info.manifest
        sizes = [_tree_rss(c.process.pid) for c in live if (c.name, c.version) == (m.name, m.version)]
        sizes = [x for x in sizes if x]
        need = max(sizes) if sizes else INSTANCE_BYTES_GUESS
        reserve = self.memory_reserve if self.memory_reserve is not None else max(512 << 20, total // 10)
        return available - need >= reserve

    async def scale(self, info: registry_pb2.VersionInfo, count: int) -> list[registry_pb2.Instance]:
        """Run exactly ``count`` instances of this version: start the missing ones (in
        parallel), stop the newest extras. Returns the passing instances."""
        m = info.manifest
        limit = m.scaling.max_instances
        if limit and count > limit:
            raise error("INVALID_INPUT", f"{m.name} {m.version} allows at most {limit} instances "
                        "(scaling.max_instances in algomesh.toml)", algorithm=m.name, version=m.version)
        if count > MAX_INSTANCES:
            raise error("INVALID_INPUT", f"at most {MAX_INSTANCES} instances of one version run on this mesh",
                        algorithm=m.name, version=m.version)
        mine = sorted((c for c in self._children.values()
                       if c.name == m.name and c.version == m.version and c.process.returncode is None),
                      key=lambda c: c.started)
        if len(mine) < count:
            await asyncio.gather(*(self._start(info, "scale") for _ in range(count - len(mine))))
        for extra in mine[count:]:
            await self._stop_child(extra)
        return self.ready(m.name, m.version)

    async def _launch(self, info: registry_pb2.VersionInfo, reason: str) -> registry_pb2.Instance:
        """Spawn one sidecar (which starts the runner) and wait until it registers."""
        m = info.manifest
        iid = "i" + uuid.uuid4().hex[:10]
        log_path = self.log_dir / f"{m.name.replace('/', '.')}-{m.version}-{iid}.log"
        cmd = [sys.executable, "-X", "faulthandler", "-m", "algomesh.sidecar",
               "--instance-id", iid, "--algorithm", m.name, "--version", m.version,
               "--runtime", m.runtime, "--entrypoint", m.entrypoint,
               "--path", str(self.artifacts.path(info.digest)),
               "--registry", self.registry_address, "--socket-dir", str(self.socket_dir),
               "--concurrency", str(max(1, m.scaling.concurrency)),
               "--max-in-flight", str(max(m.scaling.max_in_flight, m.scaling.concurrency, 1)),
               "--max-payload", str(self.max_payload),
               *(("--max-stream", str(self.max_stream)) if self.max_stream is not None else ()),
               "--callability", m.permissions.callability or "public",
               *(arg for glob in m.permissions.can_call for arg in ("--can-call", glob)),
               *(("--deterministic", "--cache-mb", str(self.cache_mb)) if m.deterministic else ()),
               *(("--isolation", "shared") if m.isolation == "shared" else ())]
        creds = None
        if self._issue is None:
            cmd.append("--insecure")
        else:  # through a pipe: the certificate's key is never written to disk
            creds = self._issue(f"{m.name}@{m.version}").to_bytes()
        t0 = time.monotonic()
        with open(log_path, "ab") as logfile:
            proc = Child.start(
                cmd, stdout=logfile, stderr=logfile,
                new_session=True,  # Ctrl-C reaches the control plane, which stops us in order
                stdin=creds,
                # (no PYTHONPYCACHEPREFIX: with one, Python ignores the installed packages' bytecode
                # and, where writing bytecode is off, compiles every module at every start: +0.6 s each)
                env=child_env())
        child = _Child(iid, m.name, m.version, info, proc, log_path, reason=reason)
        self._children[iid] = child
        reaper = asyncio.ensure_future(self._reap(child))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        log.info("%s %s %s (instance %s, log %s)", reason, m.name, m.version, iid, log_path)

        exited = asyncio.ensure_future(proc.wait())
        ready = asyncio.ensure_future(child.ready.wait())
        done, _ = await asyncio.wait({exited, ready}, timeout=self.launch_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        if child.instance is not None and proc.returncode is None:
            log.info("%s %s ready in %.2fs at %s", m.name, m.version, time.monotonic() - t0, child.instance.address)
            return child.instance
        if proc.returncode is None:
            await self._stop_child(child)
            raise error("LAUNCH_FAILED", f"{m.name} {m.version} did not start within {self.launch_timeout:.0f}s; "
                        f"see {log_path}", algorithm=m.name, version=m.version)
        raise error("LAUNCH_FAILED", f"{m.name} {m.version} exited with code {proc.returncode} while starting: "
                    f"{_tail(log_path)}", algorithm=m.name, version=m.version)

    async def _reap(self, child: _Child) -> None:
        rc = await child.process.wait()
        self._children.pop(child.id, None)
        if not self._stopping:
            log.warning("instance %s of %s %s exited with code %s", child.id, child.name, child.version, rc)
        if child.instance is not None:  # it died without withdrawing
            try:
                await self.registry.deregister_instance(child.id)
            except AlgomeshError as exc:  # e.g. Consul unreachable: its TTL check expires instead
                log.warning("could not deregister instance %s: %s", child.id, exc)

    # certificate rotation ------------------------------------------------------------

    async def rotate(self, every: float) -> None:
        """Replace each instance once it has run ``every`` seconds (before its mesh
        certificate expires): start its successor first, then stop it, so the version
        always has a ready instance. Runs until cancelled."""
        while True:
            await asyncio.sleep(max(0.5, min(5.0, every / 8)))
            now = time.monotonic()
            await self.replace([(c.id, c.info) for c in list(self._children.values())
                                if c.instance is not None and c.process.returncode is None
                                and now - c.started > every])

    # shutdown -----------------------------------------------------------------------

    async def _stop_child(self, child: _Child) -> None:
        child.stopping = True
        proc = child.process
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except asyncio.TimeoutError:
                log.warning("instance %s did not stop in %.0fs; killing its process group", child.id, STOP_GRACE)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await proc.wait()

    async def stop_all(self) -> None:
        self._stopping = True
        await asyncio.gather(*(self._stop_child(c) for c in list(self._children.values())))
        await asyncio.gather(*list(self._reapers))  # every instance withdrawn from the registry

    def instances(self) -> list[tuple[str, str, str, int | None]]:
        return [(c.id, c.name, c.version, c.process.returncode) for c in self._children.values()]

    def states(self) -> list[tuple[str, str, str, str, float]]:
        """``(instance id, name, version, state, seconds since start)`` of every running
        child: ``starting`` (not registered yet), ``warm`` (registered), ``stopping``
        (being stopped, or withdrew and still running, or the mesh is shutting down)."""
        return [(r.id, r.name, r.version, r.state, r.age) for r in self.running()]


def _meminfo() -> tuple[int, int]:
    """(MemAvailable, MemTotal) in bytes; (0, 0) where /proc/meminfo does not exist."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024, int(fields["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (an instance: sidecar + runner)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])
