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

``--tls CREDS`` (a JSON file of PEM ``ca``, ``cert`` and ``key``, as the mesh's
``MeshCredentials``): the same servers with the mesh's transport security, mutual TLS
checked against ``ca`` on every hop (the listening port requires a client certificate, a
proxy presents its own upstream). That floor prices mTLS alone: nothing else is added.
``--listen unix:PATH`` serves on a Unix socket, always in plain text (as a runner serves
its sidecar; bench/_native.py); ``--upstream unix:PATH`` forwards to one.

This file imports nothing of ``bench`` (it runs as a script in its own process).
"""
from __future__ import annotations

import argparse
import asyncio
import json
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
TLS_NAME = "mesh.algomesh"
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


def channel(address: str, tls: dict | None = None) -> grpc.aio.Channel:
    """A channel to a bare server; with ``tls``, mutual TLS (``mesh.algomesh`` is the name
    every mesh certificate carries, as between sidecars)."""
    if tls is None:
        # over a Unix socket gRPC sends the socket's path as :authority, which a server that
        # checks it (hyper's, in bench/native_proxy) refuses as malformed
        unix = (("grpc.default_authority", "localhost"),) if address.startswith("unix:") else ()
        return grpc.aio.insecure_channel(address, options=(*CHANNEL_OPTIONS, *unix))
    creds = grpc.ssl_channel_credentials(root_certificates=tls["ca"], private_key=tls["key"],
                                         certificate_chain=tls["cert"])
    return grpc.aio.secure_channel(address, creds,
                                   options=(*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", TLS_NAME)))


def read_tls(path: str) -> dict:
    return {k: v.encode() for k, v in json.loads(Path(path).read_text()).items()}


def _proxy_handlers(upstream: str, tls: dict | None) -> dict:
    channel_ = channel(upstream, tls)
    forward = channel_.unary_unary(CALL_PATH)
    forward_stream = channel_.stream_stream(CALL_STREAM_PATH)

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


async def serve(kind: str, upstream: str = "", tls: dict | None = None, listen: str = f"{HOST}:0") -> None:
    """Serve ``kind`` (echo or proxy) on ``listen`` (a free port of 127.0.0.1 by default;
    ``unix:PATH`` plain) until SIGTERM."""
    handlers = _echo_handlers() if kind == "echo" else _proxy_handlers(upstream, tls)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if tls is None or listen.startswith("unix:"):
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, grpc.ssl_server_credentials(
            [(tls["key"], tls["cert"])], root_certificates=tls["ca"], require_client_auth=True))
    await server.start()
    print(f"port {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


def serve_args(kind: str, upstream: str = "", tls: str = "", listen: str = "") -> list[str]:
    """The arguments (after the interpreter) that run one bare server."""
    return [str(HERE / "_bare.py"), "--serve", kind, *(["--upstream", upstream] if upstream else []),
            *(["--tls", tls] if tls else []), *(["--listen", listen] if listen else [])]


def start_chain(length: int, children: list, timeout: float = 30.0, tls: str = "", name: str = "bare") -> list[str]:
    """An echo and ``length - 1`` proxies, each in front of the one before. Returns the
    entry addresses: ``[i]`` is the first server of an (i + 1)-process chain. Every child
    is appended to ``children`` as soon as it starts, so the caller can stop them all.
    ``tls``: a credentials file (see above); the children are named ``{name} echo 0``,
    ``{name} proxy 1``, and so on."""
    from bench._procs import Child  # only the benchmark starts chains (this file also runs alone)

    addresses: list[str] = []
    for i in range(length):
        kind = "echo" if i == 0 else "proxy"
        child = Child(f"{name} {kind} {i}", serve_args(kind, addresses[-1] if addresses else "", tls))
        children.append(child)
        addresses.append(f"{HOST}:{child.expect('port', timeout)}")
    return addresses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", choices=("echo", "proxy"), required=True)
    p.add_argument("--upstream", default="")
    p.add_argument("--tls", default="", help="mutual TLS with this credentials file (JSON: ca, cert, key PEMs)")
    p.add_argument("--listen", default=f"{HOST}:0",
                   help="where to listen: HOST:PORT (default a free port of 127.0.0.1) or unix:PATH (always plain)")
    a = p.parse_args(argv)
    if a.serve == "proxy" and not a.upstream:
        p.error("a proxy needs --upstream HOST:PORT")
    uvloop.run(serve(a.serve, a.upstream, read_tls(a.tls) if a.tls else None, a.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
