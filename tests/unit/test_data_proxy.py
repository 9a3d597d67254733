"""The sidecar's Data proxy (data_proxy.py) between an algorithm and the blob store: real
grpc.aio servers on Unix sockets, the algorithm's side a real blocking gRPC client."""
from __future__ import annotations

import asyncio
import threading

import grpc

from algomesh import _wire
from algomesh._errors import PermissionError_, error, from_rpc_error, to_status
from algomesh.sidecar.data_proxy import data_proxy
from algomesh.sidecar.lineage import Contexts
from algomesh.v1 import data_pb2

PUT = f"/{_wire.DATA_SERVICE}/Put"


def test_a_store_that_refuses_a_put_mid_upload_is_heard_as_it_refused(tmp_path):
    # The store refuses at the first message while the algorithm's chunks are still on
    # their way: the algorithm hears PERMISSION_DENIED every time (grpc.aio's own request
    # iterator in the proxy made some of them a bare INTERNAL, "Internal error from Core").
    store_address, proxy_address = f"unix://{tmp_path}/store.sock", f"unix://{tmp_path}/out.sock"
    taken: list[int] = []

    async def store_put(requests, context):
        async for raw in requests:
            first = data_pb2.PutChunk.FromString(raw)
            if first.uri.startswith("data://other/"):
                await context.abort(*to_status(error("PERMISSION_DENIED", "not yours")))
            taken.append(1)
            async for _ in requests:
                taken.append(1)
            return data_pb2.DataObject(uri=first.uri).SerializeToString()

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    servers = []

    async def serve():
        store = grpc.aio.server()
        store.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            _wire.DATA_SERVICE, {"Put": grpc.stream_unary_rpc_method_handler(store_put)}),))
        store.add_insecure_port(store_address)
        await store.start()
        channel = grpc.aio.insecure_channel(store_address)
        proxy = grpc.aio.server()
        proxy.add_generic_rpc_handlers((data_proxy(channel, Contexts()),))
        proxy.add_insecure_port(proxy_address)
        await proxy.start()
        servers.extend((store, proxy))
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        with grpc.insecure_channel(proxy_address) as channel:
            put = channel.stream_unary(PUT)

            def chunks(uri: str):
                yield data_pb2.PutChunk(uri=uri).SerializeToString()
                for i in range(200):
                    yield data_pb2.PutChunk(data=bytes([i % 256]) * 65536).SerializeToString()
                yield data_pb2.PutChunk(last=True).SerializeToString()

            for _ in range(20):
                try:
                    put(chunks("data://other/videos/out.mp4"), timeout=20)
                    raise AssertionError("the store's refusal was lost")
                except grpc.RpcError as exc:
                    got = from_rpc_error(exc)
                assert isinstance(got, PermissionError_), repr(got)
                assert (got.reason, got.message) == ("PERMISSION_DENIED", "not yours")
            # and an upload it takes goes through whole
            answer = data_pb2.DataObject.FromString(put(chunks("data://me/videos/out.mp4"), timeout=20))
            assert answer.uri == "data://me/videos/out.mp4" and len(taken) == 202
    finally:
        async def stop():
            for server in servers:
                await server.stop(None)
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
