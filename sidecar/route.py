"""Route: find a healthy instance of the target and forward the bytes to its sidecar.

``Table`` holds the routing facts of the registry's latest ``View`` (every version, the
passing instances). A ``Directory`` resolves targets against it locally — no registry
round trip per call — and asks the control plane (``Locate``) only when there is no
instance to send to (a cold start) or its view does not know the target yet (a version
published a moment ago). Views arrive from ``Registry.Watch`` (``follow_views``) in a
sidecar, or straight from the control plane's RegistryView in the ingress; when the
stream breaks the last good view keeps serving.

``Router`` is the terminal handler of the outbound and ingress stacks: it picks one of the
instances by the power of two choices on outstanding requests (for a deterministic
algorithm, the instance the request's bytes hash to, whose result cache may hold the
answer), keeps one channel per
instance, never decodes the payload, and retries once on another instance when the one it
picked turns out to be gone (the request never reached an algorithm). A streamed call opens
a stream-stream call to the instance and pumps its chunks both ways (streaming.py); it is
retried only while nothing past its first chunk was sent.
"""
from __future__ import annotations

import asyncio
import logging
import hashlib
import random
from dataclasses import dataclass
from typing import Awaitable, Callable

import grpc
from opentelemetry import trace as otel_trace

from algomesh import _wire
from algomesh._errors import NotFoundError, error, from_rpc_error
from algomesh._refs import parse_target
from algomesh.registry.resolve import resolve_in
from algomesh.v1 import registry_pb2, registry_pb2_grpc

from .deadline import remaining
from .meshtls import MeshTransport
from .stack import Call, Reply
from .streaming import pump
from .tracing import traceparent

log = logging.getLogger("algomesh.route")

_MAX_RESOLVED = 4096  # (target, requester) pairs remembered per view
AFFINITY_SLACK = 8  # calls in flight a cache-affine instance may have beyond the least busy one


@dataclass(frozen=True)
class Location:
    name: str
    version: str
    addresses: tuple[str, ...]
    cold: bool = False


Locate = Callable[[str, str], Awaitable[Location]]  # (target, requester)


def location_from(resp: registry_pb2.LocateResponse) -> Location:
    m = resp.version.manifest
    addresses = tuple(i.address for i in resp.instances if i.address)
    if not addresses:
        raise error("INSTANCE_UNAVAILABLE", f"no ready instance of {m.name} {m.version}")
    return Location(m.name, m.version, addresses, resp.cold_start)


class Table:
    """Versions by algorithm and passing instances by (algorithm, version), from a View."""

    def __init__(self) -> None:
        self.revision = -1
        self.versions: dict[str, list[registry_pb2.VersionInfo]] = {}
        self.addresses: dict[tuple[str, str], tuple[str, ...]] = {}
        self.keys: dict[str, registry_pb2.ApiKey] = {}  # by id: a sidecar taking clients' calls checks them
        self._ejected: set[str] = set()
        self._manifests: dict[tuple[str, str], registry_pb2.Manifest] = {}
        # (target, requester) -> the version it resolves to in this view: resolving parses the
        # target, the range and every version, so a call asks once per view, not per call
        self._resolved: dict[tuple[str, str], registry_pb2.VersionInfo] = {}

    def apply(self, view: registry_pb2.View) -> None:
        versions: dict[str, list[registry_pb2.VersionInfo]] = {}
        for info in view.versions:
            versions.setdefault(info.manifest.name, []).append(info)
        addresses: dict[tuple[str, str], list[str]] = {}
        for inst in view.instances:
            addresses.setdefault((inst.algorithm, inst.version), []).append(inst.address)
        self.versions = versions
        self._manifests = {(i.manifest.name, i.manifest.version): i.manifest for i in view.versions}
        self._resolved = {}
        self.addresses = {k: tuple(v) for k, v in addresses.items()}
        self.keys = {k.id: k for k in view.keys}
        self._ejected.clear()  # the registry's word is newer than our own observations
        self.revision = view.revision

    def manifest(self, name: str, version: str) -> registry_pb2.Manifest | None:
        return self._manifests.get((name, version))

    def resolve(self, target: str, requester: str) -> registry_pb2.VersionInfo:
        """``target``'s version in this view for ``requester`` (resolve.py's rules); raises
        NotFoundError as they do. Remembered until the next view."""
        key = (target, requester)
        info = self._resolved.get(key)
        if info is None:
            info = resolve_in(target, self.versions.get(parse_target(target).name, ()), requester)
            if len(self._resolved) >= _MAX_RESOLVED:
                self._resolved.clear()
            self._resolved[key] = info
        return info

    def eject(self, address: str) -> None:
        """Stop using an instance that failed us until the next view says otherwise."""
        self._ejected.add(address)

    def healthy(self, name: str, version: str) -> tuple[str, ...]:
        found = self.addresses.get((name, version), ())
        return tuple(a for a in found if a not in self._ejected) if self._ejected else found


class Directory:
    def __init__(self, locate: Locate, *, requester: str = "",
                 on_route: Callable[[Location], None] | None = None) -> None:
        self._locate = locate
        self.requester = requester
        self.on_route = on_route  # told where each call goes (the control plane's pre-start)
        self.table = Table()
        self._pending: dict[tuple[str, str], asyncio.Future[Location]] = {}

    @property
    def has_view(self) -> bool:
        return self.table.revision >= 0

    async def locate(self, target: str, requester: str | None = None) -> Location:
        """``requester``: whose private versions resolve (default: this directory's)."""
        if requester is None:
            requester = self.requester
        if self.has_view:
            try:
                info = self.table.resolve(target, requester)
            except NotFoundError:
                info = None  # maybe published a moment ago: ask the registry itself
            if info is not None:
                m = info.manifest
                found = self.table.healthy(m.name, m.version)
                if found:
                    return self._routed(Location(m.name, m.version, found))
        return self._routed(await self._remote(target, requester))

    def _routed(self, loc: Location) -> Location:
        if self.on_route is not None:
            self.on_route(loc)
        return loc

    async def _remote(self, target: str, requester: str) -> Location:
        key = (target, requester)
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._locate(target, requester))
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        # shield: one caller giving up (its deadline) must not cancel the others' lookup
        return await asyncio.shield(pending)

    def eject(self, address: str) -> None:
        self.table.eject(address)


def remote_locator(channel: grpc.aio.Channel, *, timeout: float = 600.0) -> Locate:
    """Locate through the control plane's Registry service."""
    stub = registry_pb2_grpc.RegistryStub(channel)

    async def locate(target: str, requester: str) -> Location:
        # The call's trace goes along, so what the control plane starts for it shows in its trace.
        span = otel_trace.get_current_span()
        metadata = ((_wire.TRACEPARENT_KEY, traceparent(span)),) if span.get_span_context().is_valid else ()
        try:
            resp = await stub.Locate(registry_pb2.LocateRequest(target=target, requester=requester), timeout=timeout,
                                     metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return location_from(resp)

    return locate


async def follow_views(channel: grpc.aio.Channel, table: Table,
                       on_stale: Callable[[str | None], Awaitable[None]] | None = None) -> None:
    """Keep ``table`` fresh from Registry.Watch, for ever; on a broken stream keep the last
    good view, say so (``on_stale``, the log), and reconnect with a jittered back-off."""
    stub = registry_pb2_grpc.RegistryStub(channel)
    backoff, stale = 0.0, None
    while True:
        try:
            async for view in stub.Watch(registry_pb2.WatchRequest()):
                table.apply(view)
                backoff = 0.0
                now = f"the registry's store: {view.stale}" if view.stale else None
                if now != stale:
                    stale = now
                    if stale:
                        log.warning("registry view is stale (%s); routing from the last good view", stale)
                    else:
                        log.warning("registry view current again (revision %d)", view.revision)
                    if on_stale:
                        await on_stale(stale)
        except grpc.aio.AioRpcError as exc:
            reason = f"the control plane: {exc.code().name}: {exc.details()}"
            if reason != stale:
                stale = reason
                log.warning("registry unreachable (%s); routing from the last good view", reason)
                if on_stale:
                    await on_stale(reason)
            backoff = min(10.0, max(0.5, backoff * 2))
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))


def _stale(exc: grpc.aio.AioRpcError) -> bool:
    """The instance is gone (connection refused, or it says it serves something else):
    the request never reached an algorithm, so trying another instance is safe."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return from_rpc_error(exc).reason in ("MESH_UNAVAILABLE", "INSTANCE_UNAVAILABLE")


class Router:
    def __init__(self, directory: Directory, *, caller: str = "", transport: MeshTransport | None = None) -> None:
        self.directory = directory
        self.transport = transport or MeshTransport(None)
        self._caller = ((_wire.CALLER_KEY, caller),) if caller else ()
        self._channels: dict[str, tuple[grpc.aio.Channel, Callable, Callable]] = {}
        self._outstanding: dict[str, int] = {}

    def _stub(self, address: str, streamed: bool = False) -> Callable:
        entry = self._channels.get(address)
        if entry is None:
            channel = self.transport.channel(address, options=_wire.CHANNEL_OPTIONS)
            entry = (channel, channel.unary_unary(_wire.CALL_METHOD), channel.stream_stream(_wire.CALL_STREAM_METHOD))
            self._channels[address] = entry
        return entry[2] if streamed else entry[1]

    def _drop(self, address: str) -> None:
        self.directory.eject(address)
        entry = self._channels.pop(address, None)
        if entry is not None:
            # Calls still running on it end by themselves (a dead peer's connection fails
            # them at once); closing with no grace would cancel them, and a cancelled call
            # inside a handler looks to grpc.aio like the client's own cancellation.
            asyncio.ensure_future(entry[0].close(grace=_wire.DEFAULT_TIMEOUT))

    def _pick(self, addresses: tuple[str, ...], call: Call | None = None, loc: Location | None = None) -> str:
        if len(addresses) == 1:
            return addresses[0]
        load = self._outstanding
        if call is not None and loc is not None and call.cache and call.stream is None and self._cached(loc):
            # A deterministic algorithm keeps a result cache per instance (cache.py): the same
            # request goes to the same instance (rendezvous hashing: when one comes or goes
            # only its share moves), unless that one is far busier than the least busy.
            digest = hashlib.blake2b(call.body, digest_size=16).digest()
            chosen = max(addresses, key=lambda a: hashlib.blake2b(a.encode(), digest_size=8, key=digest).digest())
            if load.get(chosen, 0) <= min(load.get(a, 0) for a in addresses) + AFFINITY_SLACK:
                return chosen
        a, b = random.sample(addresses, 2)  # power of two choices: the less busy of two
        return a if load.get(a, 0) <= load.get(b, 0) else b

    def _cached(self, loc: Location) -> bool:
        m = self.directory.table.manifest(loc.name, loc.version)
        return m is not None and m.deterministic

    async def __call__(self, call: Call) -> Reply:
        who = call.principal
        for attempt in (1, 2, 3):
            loc = await self.directory.locate(call.target, who.owner if who is not None else None)
            address = self._pick(loc.addresses, call, loc)
            self._outstanding[address] = self._outstanding.get(address, 0) + 1
            try:
                metadata = ((_wire.TARGET_KEY, f"{loc.name}/{loc.version}"),) + self._caller
                if call.path:
                    metadata += ((_wire.PATH_KEY, ",".join(call.path)),)
                if call.traceparent:
                    metadata += ((_wire.TRACEPARENT_KEY, call.traceparent),)
                if call.data_access:  # whose data:// the stages may reach for this call (blobs.py)
                    metadata += ((_wire.DATA_ACCESS_KEY, call.data_access),)
                if not call.cache:  # the caller bypasses result caches (cache.py)
                    metadata += ((_wire.CACHE_KEY, "off"),)
                if who is not None and who.owner:  # the ingress tells the first stage whose call it is
                    metadata += ((_wire.KEY_OWNER_KEY, who.owner),)
                    if not who.pipelines:
                        metadata += ((_wire.NO_PIPELINES_KEY, "1"),)
                if call.stream is None:
                    rpc = self._stub(address)(call.body, metadata=metadata, timeout=remaining(call))
                    body = await rpc
                else:
                    rpc, body = self._stub(address, streamed=True)(metadata=metadata, timeout=remaining(call)), b""
                    await pump(rpc, call.stream)
                trailing = await rpc.trailing_metadata()
            except grpc.aio.AioRpcError as exc:
                if attempt < 3 and _stale(exc) and (call.stream is None or call.stream.rewind()):
                    self._drop(address)
                    continue
                raise from_rpc_error(exc) from None
            finally:
                self._outstanding[address] -= 1
            out = [(k, v) for k, v in trailing if k.startswith("algomesh-")]
            if loc.cold:
                out.append((_wire.COLD_START_KEY, "1"))
            return Reply(body, out)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for channel, *_ in self._channels.values():
            await channel.close()
        self._channels.clear()

