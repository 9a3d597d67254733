"""Route: find a ready instance of the target and forward the bytes to its sidecar.

``Directory`` caches "target -> location" (single-flight per target, a short TTL so a
newly published version is picked up); where a location comes from is a ``Locate``
function: in-process in the control plane, ``Registry.Locate`` over gRPC in a sidecar.
``Router`` is the terminal handler of the outbound and ingress stacks. It keeps one
channel per instance and never decodes the payload.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import grpc

from algomesh import _wire
from algomesh._errors import error, from_rpc_error
from algomesh.v1 import registry_pb2, registry_pb2_grpc

from .deadline import remaining
from .stack import Call, Reply


@dataclass(frozen=True)
class Location:
    name: str
    version: str
    addresses: tuple[str, ...]
    cold: bool = False


Locate = Callable[[str], Awaitable[Location]]


def location_from(resp: registry_pb2.LocateResponse) -> Location:
    m = resp.version.manifest
    addresses = tuple(i.address for i in resp.instances if i.address)
    if not addresses:
        raise error("INSTANCE_UNAVAILABLE", f"no ready instance of {m.name} {m.version}")
    return Location(m.name, m.version, addresses, resp.cold_start)


class Directory:
    def __init__(self, locate: Locate, ttl: float = 2.0) -> None:
        self._locate = locate
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Location]] = {}
        self._pending: dict[str, asyncio.Future[Location]] = {}

    async def locate(self, target: str) -> Location:
        hit = self._cache.get(target)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._pending.get(target)
        if pending is None:
            pending = asyncio.ensure_future(self._fill(target))
            self._pending[target] = pending
        # shield: one caller giving up (its deadline) must not cancel the others' lookup
        return await asyncio.shield(pending)

    async def _fill(self, target: str) -> Location:
        try:
            loc = await self._locate(target)
            warm = Location(loc.name, loc.version, loc.addresses, cold=False)
            self._cache[target] = (time.monotonic() + self._ttl, warm)
            return loc
        finally:
            self._pending.pop(target, None)

    def forget(self, target: str) -> None:
        self._cache.pop(target, None)


def remote_locator(channel: grpc.aio.Channel, timeout: float = 600.0) -> Locate:
    """Locate through the control plane's Registry service."""
    stub = registry_pb2_grpc.RegistryStub(channel)

    async def locate(target: str) -> Location:
        try:
            resp = await stub.Locate(registry_pb2.LocateRequest(target=target), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return location_from(resp)

    return locate


def _stale(exc: grpc.aio.AioRpcError) -> bool:
    """The instance is gone (connection refused, or it says it serves something else):
    the request never reached an algorithm, so locating again and retrying is safe."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    typed = from_rpc_error(exc)
    return typed.reason in ("MESH_UNAVAILABLE", "INSTANCE_UNAVAILABLE")


class Router:
    def __init__(self, directory: Directory, *, caller: str = "") -> None:
        self.directory = directory
        self._caller = ((_wire.CALLER_KEY, caller),) if caller else ()
        self._channels: dict[str, tuple[grpc.aio.Channel, Callable]] = {}
        self._rr = itertools.count()

    def _stub(self, address: str) -> Callable:
        entry = self._channels.get(address)
        if entry is None:
            channel = grpc.aio.insecure_channel(address, options=_wire.CHANNEL_OPTIONS)
            entry = (channel, channel.unary_unary(_wire.CALL_METHOD))
            self._channels[address] = entry
        return entry[1]

    def _drop(self, address: str) -> None:
        entry = self._channels.pop(address, None)
        if entry is not None:
            asyncio.ensure_future(entry[0].close())

    async def __call__(self, call: Call) -> Reply:
        for attempt in (1, 2):
            loc = await self.directory.locate(call.target)
            address = loc.addresses[next(self._rr) % len(loc.addresses)]
            rpc = self._stub(address)(
                call.body,
                metadata=((_wire.TARGET_KEY, f"{loc.name}/{loc.version}"),) + self._caller,
                timeout=remaining(call),
            )
            try:
                body = await rpc
                trailing = await rpc.trailing_metadata()
            except grpc.aio.AioRpcError as exc:
                if attempt == 1 and _stale(exc):
                    self.directory.forget(call.target)
                    self._drop(address)
                    continue
                raise from_rpc_error(exc) from None
            out = [(k, v) for k, v in trailing if k.startswith("algomesh-")]
            if loc.cold:
                out.append((_wire.COLD_START_KEY, "1"))
            return Reply(body, out)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for channel, _ in self._channels.values():
            await channel.close()
        self._channels.clear()
