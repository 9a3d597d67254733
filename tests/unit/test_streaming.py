"""The stream machinery on real grpc.aio servers in this process: sidecar/streaming.py's
pump (both ways, bounded, typed to the end, cancelled with its caller), the stream limit,
and the SDK's chunking (sdk/_stream.py) and algomesh.Stream."""
from __future__ import annotations

import asyncio
import io
import socket
import time
from typing import AsyncIterator

import grpc
import pytest

from algomesh import Stream
from algomesh._errors import AlgomeshError, error, from_rpc_error, to_status
from algomesh._stream import (CHUNK_BYTES, AsyncReplay, AsyncStreamResponse, Replay, StreamResponse,
                              arequest_chunks, check_source, request_chunks, start)
from algomesh._wire import CHANNEL_OPTIONS
from algomesh.sidecar.limits import payload_limit
from algomesh.sidecar.route import Directory, Location, Router
from algomesh.sidecar.server import new_server
from algomesh.sidecar.stack import Call, Reply
from algomesh.sidecar.streaming import Chunks, pump
from algomesh.v1 import payload_pb2
from tests.conftest import LoopThread

KiB = 1024


class Downstream:
    """The next hop, as a real server: echoes each chunk upper-cased; ``fail_after`` chunks
    in, it answers with a typed error while the caller is still sending."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.seen = 0
        self.cancelled = asyncio.Event()
        self.max_unanswered = 0

    async def handle(self, requests, context) -> None:
        try:
            async for chunk in requests:
                self.seen += 1
                if self.fail_after is not None and self.seen > self.fail_after:
                    await context.abort(*to_status(error("ALGORITHM_ERROR", "failed half-way",
                                                         stacktrace="Traceback: ValueError")))
                await context.write(chunk.upper())
        except BaseException:  # cancelled: CancelledError, or its next write fails
            self.cancelled.set()
            raise

    async def __aenter__(self):
        self.server, _ = new_server(["test.Hop"])
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "test.Hop", {"S": grpc.stream_stream_rpc_method_handler(self.handle)}),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        return self

    def open(self) -> grpc.aio.StreamStreamCall:
        return self.channel.stream_stream("/test.Hop/S")(timeout=20)

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()
        await self.server.stop(None)


async def source(n: int, size: int = 64 * KiB, pulled: list | None = None):
    for i in range(n):
        if pulled is not None:
            pulled.append(i)
        yield bytes([97 + i % 26]) * size


def test_pump_passes_every_chunk_both_ways_and_counts_them():
    async def main():
        async with Downstream() as hop:
            out: list[bytes] = []

            async def write(chunk: bytes) -> None:
                out.append(chunk)

            chunks = Chunks(source(40), write)
            await pump(hop.open(), chunks)
            return out, chunks

    out, chunks = asyncio.run(main())
    assert out == [bytes([65 + i % 26]) * 64 * KiB for i in range(40)]
    assert chunks.received == chunks.sent == 40 * 64 * KiB and chunks.pulled == 40


def test_pump_reads_no_further_ahead_than_its_writes():
    """A reader that stops stops the writer: the request is pulled only as the hop below
    takes it (flow control), not into a queue."""
    async def main():
        async with Downstream() as hop:
            pulled: list[int] = []
            gate = asyncio.Event()

            async def write(chunk: bytes) -> None:
                await gate.wait()  # the caller above reads nothing for now

            task = asyncio.ensure_future(pump(hop.open(), Chunks(source(1000, 256 * KiB, pulled), write)))
            await asyncio.sleep(1.0)
            held = len(pulled)
            gate.set()
            await task
            return held, len(pulled)

    held, total = asyncio.run(main())
    assert total == 1000
    assert held < 40, f"{held} chunks of 256 KiB pulled while nobody read the answer"


def test_a_typed_error_mid_stream_arrives_typed_even_while_chunks_are_being_written():
    """The hop below fails while this one is sending (the race where grpc.aio would report
    a bare INTERNAL); its own status arrives, every time."""
    async def main():
        reasons = []
        async with Downstream(fail_after=3) as hop:
            for _ in range(25):
                async def write(chunk: bytes) -> None:
                    pass
                try:
                    await pump(hop.open(), Chunks(source(200, 128 * KiB), write))
                except grpc.aio.AioRpcError as exc:
                    typed = from_rpc_error(exc)
                    reasons.append((typed.reason, typed.message, typed.stacktrace))
                hop.seen = 0
        return reasons

    reasons = asyncio.run(main())
    assert reasons == [("ALGORITHM_ERROR", "failed half-way", "Traceback: ValueError")] * 25


def test_the_stream_limit_ends_the_stream_typed_and_cancels_the_hop_below():
    async def main():
        async with Downstream() as hop:
            async def write(chunk: bytes) -> None:
                pass

            async def terminal(call: Call) -> Reply:
                await pump(hop.open(), call.stream)
                return Reply(b"")

            async def started() -> AsyncIterator[bytes]:
                # The hop below must be at work before the limit is reached: 1 MiB fits in
                # the flow-control window, and a call cancelled before its server's handler
                # ran never reaches that handler (a race that failed this test under load).
                async for chunk in source(100):
                    yield chunk
                    while hop.seen == 0:
                        await asyncio.sleep(0.01)

            handler = payload_limit(10 * KiB, max_stream=1000 * KiB)(terminal)
            call = Call(body=b"", target="", deadline=0.0, stream=Chunks(started(), write))
            with pytest.raises(AlgomeshError) as e:
                await handler(call)
            await asyncio.wait_for(hop.cancelled.wait(), 5)
            return e.value, call.stream.received

    exc, received = asyncio.run(main())
    assert exc.reason == "PAYLOAD_TOO_LARGE" and exc.metadata["limit"] == str(1000 * KiB)
    assert received <= 1000 * KiB + 64 * KiB  # it stopped at the chunk that went over


def test_a_caller_that_gives_up_cancels_the_hop_below():
    async def main():
        async with Downstream() as hop:
            async def write(chunk: bytes) -> None:
                await asyncio.sleep(3600)  # a caller that never reads again

            task = asyncio.ensure_future(pump(hop.open(), Chunks(source(100), write)))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(hop.cancelled.wait(), 5)

    asyncio.run(main())


def test_rewind_only_while_nothing_past_the_first_chunk_went():
    async def main():
        async def write(chunk: bytes) -> None:
            pass

        fresh = Chunks(source(3), write)
        assert fresh.rewind()
        one = Chunks(source(3), write)
        first = await one.__anext__()
        assert one.rewind() and await one.__anext__() == first  # sent again
        assert [len(c) for c in [await one.__anext__(), await one.__anext__()]] == [64 * KiB] * 2
        assert not one.rewind()
        answered = Chunks(source(3), write)
        await answered.__anext__()
        await answered.write(b"x")
        assert not answered.rewind()

    asyncio.run(main())


def test_a_direct_streams_replay_sends_what_it_holds_again_then_the_rest():
    # the SDK's side of the same idea (sdk/_stream.py): a direct stream whose instance went
    # away is sent again through the ingress, from its first chunk, while it holds them all
    parts = [bytes([i]) * 100 for i in range(6)]
    replay = Replay(iter(parts), limit=350)
    first = replay.view()
    assert [next(first), next(first)] == parts[:2]
    again = replay.view()                        # the first attempt failed: from the start
    assert list(again) == parts and replay.whole is False  # 600 bytes read: no longer held
    assert list(first) == []                     # the earlier attempt sends nothing more

    held = Replay(iter(parts[:3]), limit=350)
    assert list(held.view()) == parts[:3] and held.whole
    assert list(held.view()) == parts[:3]        # all of it, again

    async def main():
        async def source():
            for p in parts:
                yield p

        areplay = AsyncReplay(source(), limit=10_000)
        first = areplay.aview()
        assert [await anext(first), await anext(first)] == parts[:2]
        assert [c async for c in areplay.aview()] == parts and areplay.whole
        assert [c async for c in first] == []

    asyncio.run(main())


def test_an_in_process_stream_ends_even_while_its_answer_is_unread():
    # sdk/_local.py: a shared algorithm's streamed pipe. The stack below ends (here: its
    # deadline) with a chunk still unread: the call is over at once, not when someone reads,
    # and a reader later gets that chunk, then the stack's typed error.
    from algomesh._local import LocalStreamCall

    async def stack(source, write, metadata, timeout):
        await write(b"first")
        raise error("DEADLINE_EXCEEDED", "the pipe's deadline passed")

    async def main():
        call = LocalStreamCall(stack, (), 1.0)
        for _ in range(5):
            await asyncio.sleep(0)
        assert call.done()
        assert await call.read() == b"first"
        with pytest.raises(AlgomeshError) as e:
            await call.read()
        assert e.value.reason == "DEADLINE_EXCEEDED"

    asyncio.run(main())


def _chunks(raw: list[bytes]) -> list[payload_pb2.CallChunk]:
    return [payload_pb2.CallChunk.FromString(r) for r in raw]


def test_request_chunks_name_the_content_type_once_and_cut_big_pieces():
    big = _chunks(list(request_chunks(b"x" * (CHUNK_BYTES * 2 + 5), None, True)))
    assert [len(c.data) for c in big] == [CHUNK_BYTES, CHUNK_BYTES, 5]
    assert big[0].content_type == payload_pb2.CONTENT_TYPE_BINARY and big[0].capture_stdout
    assert all(c.content_type == 0 and not c.capture_stdout for c in big[1:])
    assert _chunks(list(request_chunks("héllo", None, False)))[0].content_type == payload_pb2.CONTENT_TYPE_TEXT
    assert _chunks(list(request_chunks(io.StringIO("a\nb"), None, False)))[0].data == b"a\nb"
    text_file = _chunks(list(request_chunks(io.TextIOWrapper(io.BytesIO(b"abc")), None, False)))
    assert text_file[0].content_type == payload_pb2.CONTENT_TYPE_TEXT
    as_json = _chunks(list(request_chunks([b'{"a":', b"", b" 1}"], "json", False)))
    assert as_json[0].content_type == payload_pb2.CONTENT_TYPE_JSON and b"".join(c.data for c in as_json) == b'{"a": 1}'
    assert len(as_json) == 2  # an empty piece sends nothing
    empty = _chunks(list(request_chunks(iter(()), None, False)))
    assert len(empty) == 1 and empty[0].content_type == payload_pb2.CONTENT_TYPE_BINARY and not empty[0].data


def test_what_cannot_be_streamed_is_invalid_input():
    with pytest.raises(AlgomeshError) as e:
        check_source(42, None)
    assert e.value.reason == "INVALID_INPUT"
    with pytest.raises(AlgomeshError):
        check_source(b"x", "yaml")
    with pytest.raises(AlgomeshError) as e:
        list(request_chunks([b"ok", 3.5], None, False))
    assert e.value.reason == "INVALID_INPUT" and "float" in e.value.message


def test_stream_reads_like_a_file_and_iterates_chunks():
    def make(pieces):
        it = iter(pieces)
        return Stream(lambda: next(it, None), "text")

    s = make([b"hello ", b"", b"wor", b"ld\nsecond line\n", b"tail"])
    assert s.content_type == "text" and s.readable()
    assert s.read(3) == b"hel"
    assert s.read(5) == b"lo wo"
    assert s.readline() == b"rld\n"
    buf = bytearray(7)
    assert s.readinto(buf) == 7 and bytes(buf) == b"second "
    assert list(s) == [b"line\n", b"tail"]  # the rest, chunk by chunk
    assert s.read() == b"" and s.read(10) == b""
    assert make([b"a", b"b", b"c"]).read() == b"abc"
    assert list(io.BufferedReader(make([b"x\n" * 3, b"y"]))) == [b"x\n", b"x\n", b"x\n", b"y"]


def test_stream_async_iteration_for_async_applies():
    async def main():
        pieces = iter([b"a", b"", b"bc"])

        async def apull():
            return next(pieces, None)

        s = Stream(lambda: None, "binary", apull=apull)
        return [c async for c in s]

    assert asyncio.run(main()) == [b"a", b"bc"]


def _passing_stream(rest: list[bytes]) -> Stream:
    """An algorithm's input as the runner makes it: the first chunk's data, then the rest
    as they came (serialized chunks), decoded by pull and passed on as they are by raw."""
    it = iter(rest)

    def pull():
        raw = next(it, None)
        return None if raw is None else payload_pb2.CallChunk.FromString(raw).data

    async def araw():
        return next(it, None)

    return Stream(pull, "text", first=b"head", raw=lambda: next(it, None), araw=araw)


def test_a_stream_passed_on_goes_on_as_it_came_after_a_first_chunk_of_its_own():
    rest = [payload_pb2.CallChunk(data=b"x" * 1000).SerializeToString(), b"\xff never decoded here"]
    sent = list(request_chunks(_passing_stream(rest), None, True))
    first = payload_pb2.CallChunk.FromString(sent[0])
    assert (first.content_type, first.data, first.capture_stdout) == (payload_pb2.CONTENT_TYPE_TEXT, b"head", True)
    assert sent[1] is rest[0] and sent[2] is rest[1] and len(sent) == 3  # the very objects: no copy
    partly = _passing_stream(rest)
    assert partly.read(2) == b"he"  # what the algorithm read is not sent; the rest of the head is
    sent = list(request_chunks(partly, "json", False))
    assert payload_pb2.CallChunk.FromString(sent[0]).data == b"ad" and sent[1:] == rest
    assert payload_pb2.CallChunk.FromString(sent[0]).content_type == payload_pb2.CONTENT_TYPE_JSON

    async def main():
        return [c async for c in arequest_chunks(_passing_stream(rest), None, False)]

    sent = asyncio.run(main())
    assert payload_pb2.CallChunk.FromString(sent[0]).data == b"head" and sent[1] is rest[0] and sent[2] is rest[1]
    # a stream without raw pulls (or read to its end) is framed again, piece by piece
    it = iter([b"a", b"b"])
    plain = [payload_pb2.CallChunk.FromString(c).data
             for c in request_chunks(Stream(lambda: next(it, None), "binary"), None, False)]
    assert plain == [b"a", b"b"]


class _Rpc:
    """What a sync or async answer reads: serialized answer chunks, then its end."""

    def __init__(self, raws: list[bytes]) -> None:
        self._it = iter(raws)

    def __next__(self) -> bytes:
        return next(self._it)

    async def read(self):
        return next(self._it, grpc.aio.EOF)

    def trailing_metadata(self):
        return ()

    def cancel(self) -> None:
        pass


class _AioRpc(_Rpc):
    async def trailing_metadata(self):
        return ()


def test_an_answer_passed_on_goes_as_it_came_unless_it_carries_printing_or_was_read():
    raws = [payload_pb2.CallChunk(content_type=payload_pb2.CONTENT_TYPE_TEXT, data=b"a").SerializeToString(),
            payload_pb2.CallChunk(data=b"b", duration=0.5).SerializeToString()]
    passed = list(StreamResponse(_Rpc(raws), [])._passing())
    assert passed == raws and passed[0] is raws[0] and passed[1] is raws[1]  # the very objects: no copy
    assert StreamResponse(_Rpc(raws), [], stdout=True)._passing() is None  # its printing is not the caller's
    read = StreamResponse(_Rpc(raws), [])
    assert read.content_type == "text" and read._passing() is None  # its first chunk was decoded already
    assert read.read() == b"ab"

    async def main():
        async def rpc_for(raws, stdout=False):
            rpc = _AioRpc(raws)
            answer = AsyncStreamResponse(lambda **_: rpc, b"", None, stdout, (), 5.0)
            answer._sender.cancel()  # nothing to send in this test
            return answer

        passed = [r async for r in (await rpc_for(raws))._passing()]
        refused = (await rpc_for(raws, True))._passing()
        answer = await rpc_for(raws)
        read = await answer.read()
        return passed, refused, read, answer._passing()

    passed, refused, read, again = asyncio.run(main())
    assert passed == raws and refused is None and read == b"ab" and again is None


def test_a_blocking_apply_passing_an_in_process_stream_on_moves_its_chunks_on_the_loop():
    # sdk/_local.py + _stream.start: a blocking apply in a shared algorithm returns
    # `client.algo(x).stream(stream)`. The request's chunks go from the runner's stream to
    # the pipe, and the answer's from the pipe to the runner, on the sidecar's loop: the
    # blocking pulls are never called, and the very chunk objects go on.
    from algomesh._local import LocalStream

    rest = [payload_pb2.CallChunk(data=b"x" * 1000).SerializeToString(), b"\xff never decoded here"]
    seen: list[bytes] = []
    ended = []

    async def stack(source, write, metadata, timeout):  # echoes what it gets
        try:
            async for raw in source:
                seen.append(raw)
                await write(raw)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        return [("algomesh-version", "1.0.0")]

    def blocking_pull():
        raise AssertionError("a blocking pull on the loop's own stream")

    with LoopThread() as lp:
        loop = lp.loop
        it = iter(rest)

        async def araw():
            assert asyncio.get_running_loop() is loop
            return next(it, None)

        stream = Stream(blocking_pull, "text", first=b"head", raw=blocking_pull, araw=araw, loop=loop)
        answer = start(LocalStream(stack, loop), stream, None, False, (), 5.0)
        assert answer._passing_on(asyncio.new_event_loop()) is None  # another loop's: not so
        looped = answer._passing_on(loop)

        async def relay():
            return [raw async for raw in looped]

        got = lp.run(relay())
        assert payload_pb2.CallChunk.FromString(got[0]).data == b"head"
        assert got[1] is rest[0] and got[2] is rest[1] and seen[1] is rest[0] and len(got) == 3
        assert answer._trailing == {"algomesh-version": "1.0.0"} and not ended

        # the reader goes away (the caller cancelled) while the pipe is at work: it ends too
        async def endless():
            await asyncio.sleep(0)
            return payload_pb2.CallChunk(data=b"y").SerializeToString()

        stream = Stream(blocking_pull, "binary", first=b"a", raw=blocking_pull, araw=endless, loop=loop)
        looped = start(LocalStream(stack, loop), stream, None, False, (), 5.0)._passing_on(loop)

        async def read_some_then_leave():
            async for _ in looped:
                if len(seen) > 5:
                    break
            await looped.aclose()
            for _ in range(20):
                if ended:
                    break
                await asyncio.sleep(0.01)

        lp.run(read_some_then_leave())
        assert ended == ["cancelled"]

        # its source fails: the answer's reader gets the source's own error
        async def failing():
            raise KeyError("the source gave out")

        stream = Stream(blocking_pull, "binary", first=b"a", raw=blocking_pull, araw=failing, loop=loop)
        looped = start(LocalStream(stack, loop), stream, None, False, (), 5.0)._passing_on(loop)

        async def read_all():
            return [raw async for raw in looped]

        with pytest.raises(KeyError, match="the source gave out"):
            lp.run(read_all())
        # a stream without a loop (a runner process's pipes are gRPC) takes the blocking way
        assert Stream(blocking_pull, "binary", raw=blocking_pull, araw=araw)._apassed_on(loop, None) is None


def test_a_blocking_apply_in_a_runner_process_passes_its_stream_on_on_the_runners_loop(tmp_path):
    # sdk/_onloop.py: in a runner process the same pass-through goes to the sidecar's
    # outbound socket on a grpc.aio channel on the runner's loop (a real server here).
    from algomesh import _wire
    from algomesh._onloop import LoopStream

    async def mesh_stream(requests, context):  # echoes; a chunk "fail" ends it typed
        async for raw in requests:
            if payload_pb2.CallChunk.FromString(raw).data == b"fail":
                await context.abort(*to_status(error("ALGORITHM_ERROR", "failed here")))
            await context.write(raw)

    address = f"unix://{tmp_path}/out.sock"
    blocking_calls = []

    def blocking_pull():
        raise AssertionError("a blocking pull on the loop's own stream")

    with LoopThread() as lp:
        async def serve():
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                "algomesh.v1.Mesh", {"CallStream": grpc.stream_stream_rpc_method_handler(mesh_stream)}),))
            server.add_insecure_port(address)
            await server.start()
            return server

        server = lp.run(serve())
        sync_channel = grpc.insecure_channel(address)
        grpc_stream = sync_channel.stream_stream(_wire.CALL_STREAM_METHOD)

        def blocking(requests, **kw):
            blocking_calls.append(1)
            return grpc_stream(requests, **kw)

        multicallable = LoopStream(blocking, address, lp.loop)

        def passing(araw, first=b"head"):
            return Stream(blocking_pull, "binary", first=first, raw=blocking_pull, araw=araw, loop=lp.loop)

        def from_list(raws):
            it = iter(raws)

            async def araw():
                assert asyncio.get_running_loop() is lp.loop
                return next(it, None)
            return araw

        async def relay(looped):
            return [raw async for raw in looped]

        rest = [payload_pb2.CallChunk(data=bytes([i]) * 70_000).SerializeToString() for i in range(30)]
        answer = start(multicallable, passing(from_list(rest)), None, False, (), 10.0)
        got = lp.run(relay(answer._passing_on(lp.loop)))
        assert payload_pb2.CallChunk.FromString(got[0]).data == b"head" and got[1:] == rest
        # the answer read by the apply's thread itself, chunk by chunk
        answer = start(multicallable, passing(from_list(rest[:3])), None, False, (), 10.0)
        assert answer.read() == b"head" + b"".join(payload_pb2.CallChunk.FromString(r).data for r in rest[:3])
        # the server's typed error while chunks are still being written: that error, every
        # time (grpc.aio's own request iterator would make some of them a bare INTERNAL)
        for _ in range(20):
            fail = [*rest[:2], payload_pb2.CallChunk(data=b"fail").SerializeToString(), *rest]
            looped = start(multicallable, passing(from_list(fail)), None, False, (), 10.0)._passing_on(lp.loop)
            with pytest.raises(AlgomeshError) as e:
                lp.run(relay(looped))
            assert (e.value.reason, e.value.message) == ("ALGORITHM_ERROR", "failed here")

        # its source fails: the reader gets the source's own error
        async def failing():
            raise KeyError("the source gave out")

        looped = start(multicallable, passing(failing), None, False, (), 10.0)._passing_on(lp.loop)
        with pytest.raises(KeyError, match="the source gave out"):
            lp.run(relay(looped))
        assert not blocking_calls
        # any other source goes on the blocking channel, as before
        assert start(multicallable, iter([b"a", b"b"]), None, False, (), 10.0).read() == b"ab"
        assert blocking_calls == [1]
        sync_channel.close()
        lp.run(server.stop(None))


def test_the_router_sends_a_stream_again_to_another_instance_if_the_first_is_gone():
    """The instance it picked refuses the connection before taking more than the first
    chunk: the whole stream, first chunk included, goes to the next one."""
    async def main():
        hop = Downstream()
        hop.server, _ = new_server(["algomesh.v1.Mesh"])
        hop.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "algomesh.v1.Mesh", {"CallStream": grpc.stream_stream_rpc_method_handler(hop.handle)}),))
        live = f"127.0.0.1:{hop.server.add_insecure_port('127.0.0.1:0')}"
        await hop.server.start()
        with socket.socket() as sock:  # a port nobody listens on: the connection is refused
            sock.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{sock.getsockname()[1]}"
        asked: list[str] = []

        async def locate(target: str, requester: str) -> Location:
            asked.append(target)
            return Location("t/echo", "1.0.0", (dead,) if len(asked) == 1 else (live,))

        router = Router(Directory(locate))
        out: list[bytes] = []

        async def write(chunk: bytes) -> None:
            out.append(chunk)

        call = Call(body=b"", target="t/echo", deadline=time.monotonic() + 20, stream=Chunks(source(30), write))
        await router(call)
        await router.close()
        await hop.server.stop(None)
        return out, asked

    out, asked = asyncio.run(main())
    assert len(asked) == 2
    assert out == [bytes([65 + i % 26]) * 64 * KiB for i in range(30)]
