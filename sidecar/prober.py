"""The health prober: ask each instance's sidecar for its gRPC health and write the answer
to the store (passing or critical). With Consul this refreshes each instance's TTL check,
so instances go critical by themselves if the prober stops.

It probes twice per health interval with a timeout of 0.4 intervals, so an instance that
stops answering is marked critical within 0.9 intervals (then the view carries it to
every caller in milliseconds)."""
from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from algomesh._errors import AlgomeshError
from algomesh.registry.store import CRITICAL, PASSING, Store

from .meshtls import MeshTransport

log = logging.getLogger("algomesh.prober")


class HealthProber:
    def __init__(self, store: Store, interval: float = 1.0, transport: MeshTransport | None = None) -> None:
        self.store = store
        self.interval = interval
        self.transport = transport or MeshTransport(None)
        self._channels: dict[str, tuple[grpc.aio.Channel, health_pb2_grpc.HealthStub]] = {}

    async def _check(self, address: str) -> str:
        entry = self._channels.get(address)
        if entry is None:
            channel = self.transport.channel(address)
            entry = (channel, health_pb2_grpc.HealthStub(channel))
            self._channels[address] = entry
        try:
            resp = await entry[1].Check(health_pb2.HealthCheckRequest(), timeout=self.interval * 0.4)
        except grpc.aio.AioRpcError:
            return CRITICAL
        return PASSING if resp.status == health_pb2.HealthCheckResponse.SERVING else CRITICAL

    async def probe_once(self) -> None:
        instances = await asyncio.to_thread(self.store.instances)
        states = await asyncio.gather(*(self._check(i.address) for i in instances))
        for inst, state in zip(instances, states):
            if state != inst.state:
                log.warning("instance %s of %s %s is %s", inst.id, inst.algorithm, inst.version, state)
            try:
                await asyncio.to_thread(self.store.set_instance_state, inst.id, state)
            except AlgomeshError as exc:  # one instance's write failing must not skip the others
                log.debug("could not record %s for instance %s: %s", state, inst.id, exc)
        known = {i.address for i in instances}
        for address in [a for a in self._channels if a not in known]:
            await self._channels.pop(address)[0].close()

    async def run(self) -> None:
        while True:
            try:
                await self.probe_once()
            except Exception as exc:  # the store is unreachable: the view says so; try again
                log.debug("probe skipped: %s", exc)
            await asyncio.sleep(self.interval / 2)
