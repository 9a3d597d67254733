"""An algorithm's way to its data: ``algomesh.v1.Data`` on the sidecar's outbound socket.

The algorithm's SDK calls Data (put, get, list, ...) on the same Unix socket it pipes
through; the sidecar forwards each request, bytes untouched and chunk by chunk, to the
control plane's blob store over its own mesh connection (mTLS: the store knows which
algorithm asks). With it goes ``algomesh-data-access``, the grant of the API key the call
runs for, looked up from the call's token (lineage.py) and never taken from the
algorithm, so an algorithm reaches its own owner's data and, within that key's scope,
its caller's (blobs.py).
"""
from __future__ import annotations

import asyncio

import grpc

from algomesh import _wire
from algomesh._stream import send_chunks

from .lineage import Contexts

_UNARY = ("Stat", "List", "Delete")


def _method(name: str) -> str:
    return f"/{_wire.DATA_SERVICE}/{name}"


def data_proxy(channel: grpc.aio.Channel, contexts: Contexts) -> grpc.GenericRpcHandler:
    """Forward Data to the control plane on ``channel`` (the sidecar's registry channel)."""

    def metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
        token, md = "", []
        for key, value in context.invocation_metadata() or ():
            if key == _wire.CALL_KEY:
                token = value
            elif key in (_wire.TRACEPARENT_KEY, "tracestate"):
                md.append((key, value))
        ctx = contexts.get(token)
        if ctx is not None and ctx.data_access:
            md.append((_wire.DATA_ACCESS_KEY, ctx.data_access))
        return tuple(md)

    async def relay_error(context: grpc.aio.ServicerContext, exc: grpc.aio.AioRpcError) -> None:
        # the store's status (code, message, ErrorInfo) reaches the algorithm as it was
        await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))

    def unary(name: str):
        forward = channel.unary_unary(_method(name))

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await forward(request, metadata=metadata(context), timeout=context.time_remaining())
            except grpc.aio.AioRpcError as exc:
                await relay_error(context, exc)
        return grpc.unary_unary_rpc_method_handler(handle)

    put_forward = channel.stream_unary(_method("Put"))

    async def put(requests, context: grpc.aio.ServicerContext) -> bytes:
        # The algorithm's chunks go on as the store takes them (flow control end to end),
        # written with send_chunks, not by grpc.aio from a request iterator: a store that
        # refuses the object (PERMISSION_DENIED at its first message) while chunks are on
        # their way must reach the algorithm as that, not as grpc.aio's bare INTERNAL.
        call = put_forward(metadata=metadata(context), timeout=context.time_remaining())
        sender = asyncio.ensure_future(send_chunks(call, requests))
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            await relay_error(context, exc)
        finally:
            sender.cancel()  # the store has answered: no more of the algorithm's chunks

    get_forward = channel.unary_stream(_method("Get"))

    async def get(request: bytes, context: grpc.aio.ServicerContext):
        call = get_forward(request, metadata=metadata(context), timeout=context.time_remaining())
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            await relay_error(context, exc)
        finally:
            call.cancel()

    handlers = {name: unary(name) for name in _UNARY}
    handlers["Put"] = grpc.stream_unary_rpc_method_handler(put)
    handlers["Get"] = grpc.unary_stream_rpc_method_handler(get)
    return grpc.method_handlers_generic_handler(_wire.DATA_SERVICE, handlers)
