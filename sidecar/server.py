"""grpc.aio plumbing shared by every algomesh server: the raw-bytes Mesh handler,
health (grpc.health.v1) and server reflection."""
from __future__ import annotations

import time
from typing import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from algomesh import _wire
from algomesh._errors import AlgomeshError, error
from algomesh.registry.keys import Principal
from algomesh.v1 import mesh_pb2

from .meshtls import CONTROL_PLANE
from .rescue import abort
from .stack import Call, Handler
from .streaming import Chunks

MESH_SERVICE = mesh_pb2.DESCRIPTOR.services_by_name["Mesh"].full_name

SERVER_OPTIONS = (
    ("grpc.max_send_message_length", _wire.MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _wire.MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    *_wire.FLOW_OPTIONS,  # a fixed flow-control window: bounded memory per streamed call
)


def read_call(body: bytes, metadata, left: float | None, *, surface: str, own_target: str = "",
              proven: str | None = None, stream: Chunks | None = None) -> Call:
    """One request as a ``Call``, from its metadata as ``surface`` believes it (see
    ``mesh_handler``); ``left``: seconds to its deadline (None: none set); ``proven``: the
    caller's identity from its mesh certificate, if the surface checks one. The outbound
    socket's handler and an in-process pipe (embedded.py) read a pipe the same way."""
    inbound, outbound, ingress = surface == "inbound", surface == "outbound", surface == "ingress"
    target = token = path = caller = credential = key_owner = traceparent = data_access = ""
    pipelines, credentials, cache = True, 0, True
    for key, value in metadata:
        if key == _wire.TARGET_KEY:
            target = value
        elif key == _wire.TRACEPARENT_KEY:
            traceparent = value
        elif key == _wire.CACHE_KEY:  # every surface: clients, algorithms and sidecars may bypass caches
            cache = value != "off"
        elif key == _wire.CALL_KEY and outbound:
            token = value
        elif key == _wire.AUTH_KEY and ingress:
            credential, credentials = value, credentials + 1
        elif inbound:
            if key == _wire.PATH_KEY:
                path = value
            elif key == _wire.CALLER_KEY:
                caller = value
            elif key == _wire.KEY_OWNER_KEY:
                key_owner = value
            elif key == _wire.NO_PIPELINES_KEY:
                pipelines = False
            elif key == _wire.DATA_ACCESS_KEY:  # from the ingress or a sidecar (both proven on a secure mesh)
                data_access = value
    if credentials > 1:
        raise error("UNAUTHENTICATED", "send one authorization header, not several")
    if proven is not None:
        if proven == CONTROL_PLANE:
            caller = ""                      # a client's call, through the ingress
        else:
            caller, key_owner, pipelines = proven, "", True
    if inbound:
        if target and target != own_target:
            raise error("INSTANCE_UNAVAILABLE", f"this instance serves {own_target}, not {target}")
        target = ""
    elif not target:
        raise error("INVALID_TARGET", f"no {_wire.TARGET_KEY} metadata: name the algorithm to call")
    budget = _wire.DEFAULT_TIMEOUT if left is None else min(left, _wire.DEFAULT_TIMEOUT)
    return Call(body=body, target=target, deadline=time.monotonic() + budget, caller=caller,
                token=token, path=tuple(path.split(",")) if path else (),
                credential=credential, traceparent=traceparent, cache=cache, stream=stream,
                data_access=data_access,
                principal=Principal(key_owner, pipelines=pipelines) if key_owner else None)


def mesh_handler(stack: Handler, *, surface: str, own_target: str = "",
                 peer: Callable[[grpc.aio.ServicerContext], str | None] | None = None) -> grpc.GenericRpcHandler:
    """``algomesh.v1.Mesh/Call`` served by ``stack``; bytes in, bytes out (no serializers).
    ``Mesh/CallStream`` too: the same metadata and stack, chunks in and out (streaming.py).

    ``surface`` says who is on the other end, and so which headers are believed:
    ``ingress`` (clients: the target and their API key), ``outbound`` (this sidecar's own
    runner: the target and its call token), ``inbound`` (other sidecars: the calling
    sidecar's path and identity, and from the ingress the client key's owner and scope).
    ``own_target``: an inbound surface serves only its algorithm; a target naming another
    one means the caller's view is stale (INSTANCE_UNAVAILABLE). ``peer`` (inbound, on a
    secure mesh): who the caller is, from its certificate; that, not ``algomesh-caller``,
    is the caller, and only the control plane's ingress may say whose API key a call
    runs for.
    """
    if surface not in ("ingress", "outbound", "inbound"):
        raise ValueError(f"unknown surface {surface!r}")
    async def call(body: bytes, context: grpc.aio.ServicerContext, stream: Chunks | None = None) -> bytes:
        try:
            proven = None
            if peer is not None:
                proven = peer(context)
                if not proven:
                    raise error("UNAUTHENTICATED", "this sidecar answers only peers with a mesh certificate")
            reply = await stack(read_call(body, context.invocation_metadata() or (), context.time_remaining(),
                                          surface=surface, own_target=own_target, proven=proven, stream=stream))
        except AlgomeshError as exc:
            if stream is not None:  # a response chunk still being written would keep the status back
                await stream.settle(min(context.time_remaining() or 30.0, 30.0))
            await abort(context, exc)
            raise AssertionError("unreachable")  # abort raises
        if reply.trailing:
            context.set_trailing_metadata(reply.trailing)
        return reply.body

    async def call_stream(requests, context: grpc.aio.ServicerContext) -> None:
        await call(b"", context, Chunks(requests.__aiter__(), context.write))

    return grpc.method_handlers_generic_handler(
        MESH_SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(call),
                       "CallStream": grpc.stream_stream_rpc_method_handler(call_stream)}
    )


VIEW_HEALTH = "algomesh.registry-view"  # NOT_SERVING while routing from a stale registry view


class Health:
    """grpc.health.v1 for a server; ``serving()`` / ``not_serving()`` flip every service.

    ``algomesh.registry-view`` reports whether the server's view of the registry is
    current (a server with a stale view keeps serving calls from its last good view)."""

    def __init__(self, server: grpc.aio.Server, services: Iterable[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self.services = ["", *services]
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def view(self, stale: str | None) -> None:
        await self.servicer.set(VIEW_HEALTH, health_pb2.HealthCheckResponse.NOT_SERVING if stale
                                else health_pb2.HealthCheckResponse.SERVING)

    async def set(self, status: int) -> None:
        for name in self.services:
            await self.servicer.set(name, status)

    async def serving(self) -> None:
        await self.set(health_pb2.HealthCheckResponse.SERVING)

    async def not_serving(self) -> None:
        await self.set(health_pb2.HealthCheckResponse.NOT_SERVING)


def new_server(services: Iterable[str]) -> tuple[grpc.aio.Server, Health]:
    """A grpc.aio server with health and reflection for ``services`` (full names)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    names = list(services)
    h = Health(server, names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return server, h
