"""The Registry gRPC service (algomesh.v1.Registry) over a Store and an ArtifactStore.

Store calls are synchronous (SQLite, Consul's HTTP API); the service runs them in
worker threads so the event loop keeps serving. ``Locate`` delegates the "give me a
ready instance" half to a locator supplied by the control plane (its launcher).

Every RPC starts by asking ``identify(context)`` who is calling (a ``Principal``: an API
key's on the public port, a sidecar's proven identity on the mesh port) and answers only
what that principal may see or do:

    Publish                 the algorithm's owner, or an admin
    Resolve, List*, Locate  what the key may call (its globs), private versions to their owner
    Scale                   the algorithm's owner, or an admin
    CreateKey               an admin;  ListKeys, RevokeKey: the key's owner, or an admin
    IssueCertificate        an admin (a mesh certificate for an operator's tools)
    RegisterInstance, DeregisterInstance, Watch    the mesh (sidecars), or an admin
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


import grpc
from google.protobuf.message import DecodeError
from opentelemetry import context as context_api

from algomesh._errors import AlgomeshError, NotFoundError, error
from algomesh._refs import check_name, parse_target
from algomesh._wire import TRACEPARENT_KEY
from algomesh.sidecar.rescue import abort, rescued
from algomesh.sidecar.tracing import parse_traceparent
from algomesh.v1 import registry_pb2, registry_pb2_grpc

from .artifacts import ArtifactStore, tree_digest
from .build import run_build
from .keys import Principal, new_key, public
from .manifest import read_manifest
from .resolve import owner_of, resolve, resolve_in, visible
from .store import Store
from .view import RegistryView

# Who is calling: reads the request's credentials, raises UNAUTHENTICATED.
Identify = Callable[[object], Principal]

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

    async def publish(self, archive: bytes, private: bool = False,
                      authorize: Callable[[str], None] = lambda _name: None) -> tuple[registry_pb2.VersionInfo, bool]:
        """``authorize(name)`` may refuse once the manifest says which algorithm this is."""
        info, created = await asyncio.to_thread(self._publish, archive, private, authorize)
        if self.view is not None:
            # Read your writes: once publish returns, calls through this control plane see it.
            m = info.manifest
            await self.view.until(lambda: any(v.manifest.name == m.name and v.manifest.version == m.version
                                              for v in self.view.versions), timeout=5.0)
        return info, created

    def _publish(self, archive: bytes, private: bool,
                 authorize: Callable[[str], None]) -> tuple[registry_pb2.VersionInfo, bool]:
        staging = self.artifacts.stage(archive)
        try:
            manifest = read_manifest(staging)
            authorize(manifest.name)
            digest = tree_digest(staging)  # of what was published, before the build adds to it
            # A version published already is not built again: the same content is a no-op
            # (store.publish below), other content VERSION_EXISTS.
            if self.store.get_version(manifest.name, manifest.version) is None:
                run_build(staging, manifest.build, name=manifest.name, version=manifest.version)
                if not (staging / manifest.entrypoint).exists():
                    raise error("INVALID_MANIFEST", f"entrypoint {manifest.entrypoint!r} is not in the folder"
                                + (" after the build step" if manifest.build else ""))
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

    async def algorithms(self, who: Principal) -> list[registry_pb2.AlgorithmSummary]:
        def run() -> list[registry_pb2.AlgorithmSummary]:
            out = []
            for name in self.store.algorithms():
                if not who.may_call(name):
                    continue
                infos = [i for i in self.store.versions(name) if who.admin or visible(i, who.owner)]
                if not infos:
                    continue
                try:
                    latest = resolve_in(name, infos, owner_of(name)).manifest  # infos: visible ones
                except AlgomeshError:  # only pre-releases
                    latest = infos[-1].manifest
                out.append(registry_pb2.AlgorithmSummary(
                    name=name, latest_version=latest.version, version_count=len(infos),
                    description=latest.description))
            return out
        return await asyncio.to_thread(run)

    async def versions(self, name: str, who: Principal) -> list[registry_pb2.VersionInfo]:
        check_name(name)
        who.check_call(name)
        infos = [i for i in await asyncio.to_thread(self.store.versions, name) if who.admin or visible(i, who.owner)]
        if not infos:
            raise error("ALGORITHM_NOT_FOUND", f"no algorithm named {name}", algorithm=name)
        return list(reversed(infos))

    # API keys -----------------------------------------------------------------------

    async def create_key(self, owner: str, **scopes) -> tuple[str, registry_pb2.ApiKey]:
        secret, record = new_key(owner, **scopes)
        await asyncio.to_thread(self.store.add_key, record)
        if self.view is not None:  # read your writes: the key works once this returns
            await self.view.until_keys(lambda keys: record.id in keys, timeout=5.0)
        return secret, record

    async def revoke_key(self, key_id: str) -> bool:
        removed = await asyncio.to_thread(self.store.remove_key, key_id)
        if removed and self.view is not None:  # refused from the moment this returns
            await self.view.until_keys(lambda keys: key_id not in keys, timeout=5.0)
        return removed


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    """One per port: ``identify`` says who calls (API keys on the public port, mesh
    identities on the mesh port)."""

    def __init__(self, registry: Registry, view: RegistryView, identify: Identify, locator: Locator | None = None,
                 scaler: Scaler | None = None, issue: Callable[[str, float], tuple[bytes, bytes, bytes]] | None = None,
                 reserved: tuple[str, ...] = (), on_locate: Callable[[registry_pb2.VersionInfo], object] | None = None,
                 mesh_ca: str = "") -> None:
        self.registry = registry
        self.view = view
        self.identify = identify
        self.locator = locator
        self.scaler = scaler
        self.issue = issue        # (identity, lifetime) -> (ca, cert, key) PEMs; None: no mesh CA
        self.reserved = reserved  # identities no one may get a certificate for
        self.on_locate = on_locate  # told each version located (the scheduler pre-starts what follows)
        self.mesh_ca = mesh_ca      # PEM: clients check instances' client_address with it

    @rescued
    async def Publish(self, request, context):
        who = self.identify(context)
        info, created = await self.registry.publish(
            request.archive, request.private, lambda name: who.check_owns(name, "publish"))
        return registry_pb2.PublishResponse(version=info, created=created)

    @staticmethod
    def _requester(who: Principal, asked: str) -> str:
        """Whose private versions resolve: the principal's owner (an admin may ask for anyone's)."""
        return asked if who.admin and asked else who.owner

    @staticmethod
    def _manager(who: Principal, name: str) -> str:
        """Whose private versions resolve for a lookup or a change: the owner's, for an admin."""
        return owner_of(name) if who.admin else who.owner

    @rescued
    async def Resolve(self, request, context):
        who = self.identify(context)
        name = parse_target(request.target).name
        who.check_call(name)
        requester = request.requester if who.admin and request.requester else self._manager(who, name)
        return registry_pb2.ResolveResponse(version=await self.registry.resolve(request.target, requester))

    @rescued
    async def ListAlgorithms(self, request, context):
        return registry_pb2.ListAlgorithmsResponse(algorithms=await self.registry.algorithms(self.identify(context)))

    @rescued
    async def ListVersions(self, request, context):
        return registry_pb2.ListVersionsResponse(
            versions=await self.registry.versions(request.name, self.identify(context)))

    @rescued
    async def ListInstances(self, request, context):
        who = self.identify(context)
        found = await asyncio.to_thread(self.registry.store.instances, request.algorithm)
        if not who.admin:
            seen = {(i.manifest.name, i.manifest.version) for i in self.view.versions
                    if who.may_call(i.manifest.name) and visible(i, who.owner)}
            found = [i for i in found if (i.algorithm, i.version) in seen]
        return registry_pb2.ListInstancesResponse(instances=found)

    async def locate(self, target: str, requester: str = "") -> registry_pb2.LocateResponse:
        """Resolve ``target`` and return ready instances of it, cold-starting one if needed
        (the ingress calls this in-process; sidecars through the Locate RPC)."""
        if self.locator is None:
            raise error("LAUNCH_FAILED", "this registry has no launcher")
        info = await self.registry.resolve(target, requester)
        if self.on_locate is not None:
            self.on_locate(info)
        instances, cold = await self.locator(info)
        return registry_pb2.LocateResponse(version=info, instances=instances, cold_start=cold, mesh_ca=self.mesh_ca)

    @rescued
    async def Locate(self, request, context):
        who = self.identify(context)
        who.check_call(parse_target(request.target).name)
        # Instances started for this call are spans in the caller's trace (its traceparent).
        parent = next((parse_traceparent(v) for k, v in context.invocation_metadata() if k == TRACEPARENT_KEY), None)
        token = context_api.attach(parent) if parent is not None else None
        try:
            return await self.locate(request.target, self._requester(who, request.requester))
        finally:
            if token is not None:
                context_api.detach(token)

    @rescued
    async def Scale(self, request, context):
        who = self.identify(context)
        if self.scaler is None:
            raise error("LAUNCH_FAILED", "this registry has no launcher")
        name = parse_target(request.target).name
        who.check_owns(name, "scale")
        info = await self.registry.resolve(request.target, self._manager(who, name))
        instances = await self.scaler(info, request.instances)
        return registry_pb2.ScaleResponse(version=info, instances=instances)

    async def Watch(self, request, context):
        try:
            self._mesh_only(context, "watch the registry")
        except AlgomeshError as exc:
            await abort(context, exc)
        revision = -1
        while True:
            view = await self.view.next(after=revision)
            revision = view.revision
            yield view

    def _mesh_only(self, context, action: str) -> Principal:
        who = self.identify(context)
        if not who.algorithm:
            who.check_admin(action)
        return who

    @rescued
    async def RegisterInstance(self, request, context):
        who = self._mesh_only(context, "register instances")
        inst = request.instance
        if who.algorithm and who.algorithm != f"{inst.algorithm}@{inst.version}":
            raise error("PERMISSION_DENIED", f"{who.algorithm} may not register an instance of "
                        f"{inst.algorithm}@{inst.version}", permission=f"mesh:{inst.algorithm}@{inst.version}")
        await self.registry.register_instance(inst)
        return registry_pb2.RegisterInstanceResponse()

    @rescued
    async def DeregisterInstance(self, request, context):
        who = self._mesh_only(context, "deregister instances")
        if who.algorithm and not any(i.id == request.id and f"{i.algorithm}@{i.version}" == who.algorithm
                                     for i in self.view.instances):
            raise error("PERMISSION_DENIED", f"{who.algorithm} may deregister only its own instances",
                        permission=f"mesh:{who.algorithm}")
        await self.registry.deregister_instance(request.id)
        return registry_pb2.DeregisterInstanceResponse()

    # API keys -----------------------------------------------------------------------

    @rescued
    async def CreateKey(self, request, context):
        self.identify(context).check_admin("create API keys")
        secret, record = await self.registry.create_key(
            request.owner, algorithms=tuple(request.algorithms), no_pipelines=request.no_pipelines,
            data=request.data, admin=request.admin)
        return registry_pb2.CreateKeyResponse(key=public(record), secret=secret)

    @rescued
    async def ListKeys(self, request, context):
        who = self.identify(context)
        owner = request.owner if who.admin else who.owner
        return registry_pb2.ListKeysResponse(
            keys=[public(k) for k in self.view.keys.values() if not owner or k.owner == owner])

    @rescued
    async def RevokeKey(self, request, context):
        who = self.identify(context)
        record = self.view.keys.get(request.id)
        # another owner's key answers as unknown: ids are not for probing
        if record is None or not (who.admin or record.owner == who.owner) \
                or not await self.registry.revoke_key(request.id):
            raise error("KEY_NOT_FOUND", f"no API key with id {request.id!r}")
        return registry_pb2.RevokeKeyResponse()

    @rescued
    async def IssueCertificate(self, request, context):
        self.identify(context).check_admin("issue mesh certificates")
        if self.issue is None:
            raise error("INVALID_INPUT", "this mesh runs --insecure: it has no mesh CA")
        identity = request.identity.strip()
        if not identity or len(identity) > 200 or identity in self.reserved or not identity.isprintable():
            raise error("INVALID_INPUT", f"{request.identity!r} cannot be a certificate's identity")
        lifetime = request.lifetime_seconds or 3600
        ca, cert, key = await asyncio.to_thread(self.issue, identity, float(min(lifetime, 7 * 86400)))
        return registry_pb2.IssueCertificateResponse(ca=ca.decode(), cert=cert.decode(), key=key.decode())


# What sidecars use; the mesh port serves nothing else.
MESH_METHODS = frozenset({"Locate", "Resolve", "Watch", "RegisterInstance", "DeregisterInstance"})


def registry_handler(servicer: RegistryServicer, only: frozenset[str] | None = None) -> grpc.GenericRpcHandler:
    """The Registry service with requests parsed here rather than by grpc, so that an
    undecodable request is a typed INVALID_INPUT (grpc's own answer is an untyped UNKNOWN,
    and a logged traceback per request, before any key is checked). ``only``: the methods
    served; the others are refused (PERMISSION_DENIED) on this port."""
    service = registry_pb2.DESCRIPTOR.services_by_name["Registry"]
    handlers = {}
    for method in service.methods:
        cls = getattr(registry_pb2, method.input_type.name)
        impl = getattr(servicer, method.name) if only is None or method.name in only else _refused(method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _streaming(impl, cls), response_serializer=_serialize)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(impl, cls), response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _refused(name: str):
    async def refuse(request, context):
        await abort(context, error("PERMISSION_DENIED", f"Registry.{name} is not served on the mesh port; use the "
                                   "public port with an API key", permission="mesh-port"))
    return refuse


def _serialize(message) -> bytes:
    return message.SerializeToString()


def _parse(cls, body: bytes):
    try:
        return cls.FromString(body)
    except DecodeError as exc:
        raise error("INVALID_INPUT", f"the request is not a valid {cls.DESCRIPTOR.full_name}: {exc}") from None


def _unary(impl, cls):
    async def handle(body: bytes, context):
        try:
            request = _parse(cls, body)
        except AlgomeshError as exc:
            await abort(context, exc)
        return await impl(request, context)
    return handle


def _streaming(impl, cls):
    async def handle(body: bytes, context):
        try:
            request = _parse(cls, body)
        except AlgomeshError as exc:
            await abort(context, exc)
        async for item in impl(request, context):
            yield item
    return handle
