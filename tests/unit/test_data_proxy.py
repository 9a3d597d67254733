"""The sidecar's Data proxy (data_proxy.py) between an algorithm and the blob store: real
grpc.aio servers on Unix sockets, the algorithm's side a real blocking gRPC client."""
from __future__ import annotations

import grpc

from algomesh import _wire
from algomesh._errors import PermissionError_, error, from_rpc_error, to_status
from algomesh.sidecar.data_proxy import data_proxy
from algomesh.sidecar.lineage import Contexts
from algomesh.v1 import data_pb2
from tests.conftest import LoopThread

PUT = f"/{_wire.DATA_SERVICE}/Put"


def test_a_store_that_refuses_a_put_mid_upload_is_heard_as_it_refused(tmp_path):
    # The store refuses while the algorithm's chunks are still on their way (the real one
    # at the first message; here after three, so that the proxy is surely writing): the
    # algorithm hears PERMISSION_DENIED every time (grpc.aio's own request iterator in the
    # proxy made some of them a bare INTERNAL, "Internal error from Core").
    store_address, proxy_address = f"unix://{tmp_path}/store.sock", f"unix://{tmp_path}/out.sock"
    taken: list[int] = []

    async def store_put(requests, context):
        first = None
        async for raw in requests:
            first = first or data_pb2.PutChunk.FromString(raw)
            taken.append(1)
            if first.uri.startswith("data://other/") and len(taken) == 3:  # mid-upload
                taken.clear()
                await context.abort(*to_status(error("PERMISSION_DENIED", "not yours")))
        return data_pb2.DataObject(uri=first.uri).SerializeToString()

    async def serve():
        store = grpc.aio.server()
        store.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            _wire.DATA_SERVICE, {"Put": grpc.stream_unary_rpc_method_handler(store_put)}),))
        store.add_insecure_port(store_address)
        await store.start()
        proxy = grpc.aio.server()
        proxy.add_generic_rpc_handlers((data_proxy(grpc.aio.insecure_channel(store_address), Contexts()),))
        proxy.add_insecure_port(proxy_address)
        await proxy.start()
        return store, proxy

    def chunks(uri: str):
        yield data_pb2.PutChunk(uri=uri).SerializeToString()
        for i in range(200):
            yield data_pb2.PutChunk(data=bytes([i % 256]) * 65536).SerializeToString()
        yield data_pb2.PutChunk(last=True).SerializeToString()

    with LoopThread() as lp:
        servers = lp.run(serve())
        with grpc.insecure_channel(proxy_address) as channel:
            put = channel.stream_unary(PUT)
            for _ in range(50):
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
        for server in servers:
            lp.run(server.stop(None))
