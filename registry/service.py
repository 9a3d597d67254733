"""The Registry gRPC service (algomesh.v1.Registry) over a Store and an ArtifactStore.

Store calls are synchronous (SQLite, Consul's HTTP API); the service runs them in
worker threads so the event loop keeps serving. ``Locate`` delegates the "give me a
ready instance" half to a locator supplied by the control plane (its launcher).
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


from algomesh._errors import AlgomeshError, NotFoundError, error
from algomesh._refs import check_name, parse_target
from algomesh.sidecar.rescue import rescued
from algomesh.v1 import registry_pb2, registry_pb2_grpc

from .artifacts import ArtifactStore, tree_digest
from .manifest import read_manifest
from .resolve import resolve, resolve_in
from .store import Store
from .view import RegistryView

# (version) -> (ready instances, was this a cold start)
Locator = Callable[[registry_pb2.VersionInfo], Awaitable[tuple[list[registry_pb2.Instance], bool]]]
# (version, instance count) -> passing instances
Scaler = Callable[[registry_pb2.VersionInfo, int], Awaitable[list[registry_pb2.Instance]]]


class Registry:
    """The registry's operations, callable in-process (the ingress) or over gRPC."""

    def __init__(self, store: Store, artifacts: ArtifactStore, *, instance_ttl: float = 10.0) -> None:
        self.store = store
        self.artifacts = artifacts
        self.instance_ttl = instance_ttl
        self.view: RegistryView | None = None  # set by the control plane once its view runs
        self._listeners: list[Callable[[str, registry_pb2.Instance], None]] = []

    def on_instance(self, listener: Callable[[str, registry_pb2.Instance], None]) -> None:
        """Call ``listener("register" | "deregister", instance)`` on instance changes."""
        self._listeners.append(listener)

    async def register_instance(self, instance: registry_pb2.Instance) -> None:
        await asyncio.to_thread(self.store.register_instance, instance, self.instance_ttl)
        for listener in self._listeners:
            listener("register", instance)

    async def deregister_instance(self, instance_id: str) -> None:
        await asyncio.to_thread(self.store.deregister_instance, instance_id)
        for listener in self._listeners:
            listener("deregister", registry_pb2.Instance(id=instance_id))

    async def publish(self, archive: bytes, private: bool = False) -> tuple[registry_pb2.VersionInfo, bool]:
        info, created = await asyncio.to_thread(self._publish, archive, private)
        if self.view is not None:
            # Read your writes: once publish returns, calls through this control plane see it.
            m = info.manifest
            await self.view.until(lambda: any(v.manifest.name == m.name and v.manifest.version == m.version
                                              for v in self.view.versions), timeout=5.0)
        return info, created

    def _publish(self, archive: bytes, private: bool) -> tuple[registry_pb2.VersionInfo, bool]:
        staging = self.artifacts.stage(archive)
        try:
            manifest = read_manifest(staging)
            if not (staging / manifest.entrypoint).exists():
                raise error("INVALID_MANIFEST", f"entrypoint {manifest.entrypoint!r} is not in the folder")
            digest = tree_digest(staging)
            info = registry_pb2.VersionInfo(manifest=manifest, digest=digest, published_at=int(time.time()),
                                            private=private)
            created = self.store.publish(info)
            if created:
                self.artifacts.commit(staging, digest)
            else:
                self.artifacts.discard(staging)
                info = self.store.get_version(manifest.name, manifest.version) or info
            return info, created
        except BaseException:
            self.artifacts.discard(staging)
            raise

    async def resolve(self, target: str, requester: str = "") -> registry_pb2.VersionInfo:
        """From the live view when it knows the target (no store round trip, and it keeps
        working while the store is unreachable); from the store itself otherwise."""
        if self.view is not None:
            name = parse_target(target).name
            try:
                return resolve_in(target, [i for i in self.view.versions if i.manifest.name == name], requester)
            except NotFoundError:
                pass  # published a moment ago, or truly unknown: the store decides
        return await asyncio.to_thread(resolve, self.store, target, requester)

    async def algorithms(self) -> list[registry_pb2.AlgorithmSummary]:
        def run() -> list[registry_pb2.AlgorithmSummary]:
            out = []
            for name in self.store.algorithms():
                infos = self.store.versions(name)
                try:
                    latest = resolve(self.store, name).manifest
                except AlgomeshError:  # only pre-releases
                    latest = infos[-1].manifest
                out.append(registry_pb2.AlgorithmSummary(
                    name=name, latest_version=latest.version, version_count=len(infos),
                    description=latest.description))
            return out
        return await asyncio.to_thread(run)

    async def versions(self, name: str) -> list[registry_pb2.VersionInfo]:
        check_name(name)
        infos = await asyncio.to_thread(self.store.versions, name)
        if not infos:
            raise error("ALGORITHM_NOT_FOUND", f"no algorithm named {name}", algorithm=name)
        return list(reversed(infos))


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, registry: Registry, view: RegistryView, locator: Locator | None = None,
                 scaler: Scaler | None = None) -> None:
        self.registry = registry
        self.view = view
        self.locator = locator
        self.scaler = scaler

    @rescued
    async def Publish(self, request, context):
        info, created = await self.registry.publish(request.archive, request.private)
        return registry_pb2.PublishResponse(version=info, created=created)

    @rescued
    async def Resolve(self, request, context):
        return registry_pb2.ResolveResponse(version=await self.registry.resolve(request.target, request.requester))

    @rescued
    async def ListAlgorithms(self, request, context):
        return registry_pb2.ListAlgorithmsResponse(algorithms=await self.registry.algorithms())

    @rescued
    async def ListVersions(self, request, context):
        return registry_pb2.ListVersionsResponse(versions=await self.registry.versions(request.name))

    @rescued
    async def ListInstances(self, request, context):
        found = await asyncio.to_thread(self.registry.store.instances, request.algorithm)
        return registry_pb2.ListInstancesResponse(instances=found)

    async def locate(self, target: str, requester: str = "") -> registry_pb2.LocateResponse:
        """Resolve ``target`` and return ready instances of it, cold-starting one if needed
        (the ingress calls this in-process; sidecars through the Locate RPC)."""
        if self.locator is None:
            raise error("LAUNCH_FAILED", "this registry has no launcher")
        info = await self.registry.resolve(target, requester)
        instances, cold = await self.locator(info)
        return registry_pb2.LocateResponse(version=info, instances=instances, cold_start=cold)

    @rescued
    async def Locate(self, request, context):
        return await self.locate(request.target, request.requester)

    @rescued
    async def Scale(self, request, context):
        if self.scaler is None:
            raise error("LAUNCH_FAILED", "this registry has no launcher")
        info = await self.registry.resolve(request.target)
        instances = await self.scaler(info, request.instances)
        return registry_pb2.ScaleResponse(version=info, instances=instances)

    async def Watch(self, request, context):
        revision = -1
        while True:
            view = await self.view.next(after=revision)
            revision = view.revision
            yield view

    @rescued
    async def RegisterInstance(self, request, context):
        await self.registry.register_instance(request.instance)
        return registry_pb2.RegisterInstanceResponse()

    @rescued
    async def DeregisterInstance(self, request, context):
        await self.registry.deregister_instance(request.id)
        return registry_pb2.DeregisterInstanceResponse()
