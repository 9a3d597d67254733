"""The floor: bare grpc.aio servers that do as little as a server can.

    python bench/_bare.py --serve echo                     answers what it is sent
    python bench/_bare.py --serve proxy --upstream H:P     forwards to the next server

Both serve the mesh's two methods as raw bytes (generic handlers, no serializers), so the
same client code calls them and the mesh:

- ``/algomesh.v1.Mesh/Call``: the echo decodes the ``CallRequest`` and answers a
  ``CallResponse`` with its input (what a no-op runner does); a proxy forwards the bytes
  over one persistent channel and answers the upstream's bytes (or its status).
- ``/algomesh.v1.Mesh/CallStream``: the echo sends every ``CallChunk`` back as it arrives;
  a proxy opens one stream upstream per call and passes chunks both ways as they come.

Plain gRPC, gRPC's default options (no TLS, no metadata checks): what one would write to
forward bytes as cheaply as grpc.aio can. A chain is started with ``start_chain``: an echo
and proxies in front of it, each proxy forwarding to the one before, so the k-th address
is the entry of a k-process chain. Prints ``port N`` once listening; stops on SIGTERM.

This file imports nothing of ``bench`` (it runs as a script in its own process).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import grpc
import uvloop

from algomesh.v1 import payload_pb2

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
SERVICE = "algomesh.v1.Mesh"
CALL, CALL_STREAM = "Call", "CallStream"
CALL_PATH, CALL_STREAM_PATH = f"/{SERVICE}/{CALL}", f"/{SERVICE}/{CALL_STREAM}"
CHANNEL_OPTIONS = (("grpc.enable_retries", 0),)
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


def _echo_handlers() -> dict:
    async def call(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = payload_pb2.CallRequest.FromString(body)
        return payload_pb2.CallResponse(output=request.input).SerializeToString()

    async def call_stream(requests, context: grpc.aio.ServicerContext):
        async for chunk in requests:
            yield chunk

    return {CALL: grpc.unary_unary_rpc_method_handler(call),
            CALL_STREAM: grpc.stream_stream_rpc_method_handler(call_stream)}


def _proxy_handlers(upstream: str) -> dict:
    channel = grpc.aio.insecure_channel(upstream, options=CHANNEL_OPTIONS)
    forward = channel.unary_unary(CALL_PATH)
    forward_stream = channel.stream_stream(CALL_STREAM_PATH)

    async def call(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await forward(body, timeout=context.time_remaining())
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
            raise  # unreachable: abort raises

    async def call_stream(requests, context: grpc.aio.ServicerContext):
        up = forward_stream(requests, timeout=context.time_remaining())  # grpc.aio pumps requests upstream
        try:
            async for chunk in up:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")

    return {CALL: grpc.unary_unary_rpc_method_handler(call),
            CALL_STREAM: grpc.stream_stream_rpc_method_handler(call_stream)}


async def serve(kind: str, upstream: str = "") -> None:
    """Serve ``kind`` (echo or proxy) on a free port of 127.0.0.1 until SIGTERM."""
    handlers = _echo_handlers() if kind == "echo" else _proxy_handlers(upstream)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    print(f"port {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


def serve_args(kind: str, upstream: str = "") -> list[str]:
    """The arguments (after the interpreter) that run one bare server."""
    return [str(HERE / "_bare.py"), "--serve", kind, *(["--upstream", upstream] if upstream else [])]


def start_chain(length: int, children: list, timeout: float = 30.0) -> list[str]:
    """An echo and ``length - 1`` proxies, each in front of the one before. Returns the
    entry addresses: ``[i]`` is the first server of an (i + 1)-process chain. Every child
    is appended to ``children`` as soon as it starts, so the caller can stop them all."""
    from bench._procs import Child  # only the benchmark starts chains (this file also runs alone)

    addresses: list[str] = []
    for i in range(length):
        kind = "echo" if i == 0 else "proxy"
        child = Child(f"bare {kind} {i}", serve_args(kind, addresses[-1] if addresses else ""))
        children.append(child)
        addresses.append(f"{HOST}:{child.expect('port', timeout)}")
    return addresses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", choices=("echo", "proxy"), required=True)
    p.add_argument("--upstream", default="")
    a = p.parse_args(argv)
    if a.serve == "proxy" and not a.upstream:
        p.error("a proxy needs --upstream HOST:PORT")
    uvloop.run(serve(a.serve, a.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
