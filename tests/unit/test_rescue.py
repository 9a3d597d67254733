"""rescue: a CancelledError that is not the handler's own cancellation becomes a typed error.

The bug it guards against: the router closed a dead instance's channel while other calls
ran on it; those calls' awaits raised CancelledError, grpc.aio took that for the client
cancelling and answered nothing, and the client waited for its deadline."""
import asyncio

import grpc
import pytest

from algomesh._errors import AlgomeshError
from algomesh.sidecar.rescue import rescue
from algomesh.sidecar.stack import Call, Reply


def test_a_call_cancelled_under_the_handler_is_answered_as_the_instance_going_away():
    async def main():
        async def slow(request, context):
            await asyncio.sleep(30)
            return b""

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "x.Y", {"Z": grpc.unary_unary_rpc_method_handler(slow)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

        async def inner(call: Call) -> Reply:
            rpc = channel.unary_unary("/x.Y/Z")(b"", wait_for_ready=True, timeout=30)
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(channel.close()))
            return Reply(await rpc)

        try:
            with pytest.raises(AlgomeshError) as caught:
                await rescue(inner)(Call(body=b"", target="a/b", deadline=0))
        finally:
            await server.stop(None)
        return caught.value

    exc = asyncio.run(main())
    assert exc.reason == "INSTANCE_UNAVAILABLE", exc


def test_the_handlers_own_cancellation_still_cancels():
    async def main():
        async def inner(call: Call) -> Reply:
            await asyncio.sleep(10)
            return Reply(b"")

        task = asyncio.ensure_future(rescue(inner)(Call(body=b"", target="a/b", deadline=0)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
