"""Streamed calls: payloads of any size in chunks, at bounded memory (docs/streaming.md).

    answer = client.algo("demo/gzip").stream(open("big.bin", "rb"))
    answer.save("big.bin.gz")                    # or: for chunk in answer.chunks(): ...

``Algorithm.stream(source)`` sends ``source`` (bytes, str, a file object, an iterable of
bytes or str, an ``algomesh.Stream``, another call's ``StreamResponse``) as
``Mesh/CallStream`` chunks while the answer comes back as a ``StreamResponse``; neither
side is ever held whole. The request is read only as fast as the mesh takes it (gRPC flow
control), so a slow algorithm slows the reading of a file, not the growth of a buffer.

``Stream`` is the other end: what an algorithm's ``apply`` receives when it is called with
a stream: a file-like object (``read(n)``, ``readinto``, ``readline``) that is also an
iterable of chunks (``for chunk in stream``, ``async for`` in an async apply).

On the wire a chunk is a serialized ``algomesh.v1.CallChunk``: the first of each direction
names the content type, the first request chunk asks for stdout, the last response chunk
carries stdout and duration. Errors (typed, as for ``pipe``) end the answer where they
happen: iterating it raises them.
"""
from __future__ import annotations

import asyncio
import io
import os
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

import grpc

try:
    from grpc._cython.cygrpc import InternalError as _InternalError
except ImportError:  # pragma: no cover - see write_chunk
    _InternalError = None

from algomesh.v1 import payload_pb2

from ._direct import went_away
from ._errors import AlgomeshError, error, from_rpc_error
from ._payload import _BY_NAME, BINARY, TEXT, content_type_name

CHUNK_BYTES = 256 * 1024  # data per chunk when algomesh cuts a payload (bytes, files, large pieces)
REPLAY_BYTES = 4 * CHUNK_BYTES  # what a direct stream holds so that it can be sent again (Replay)

__all__ = ["Stream", "StreamResponse", "AsyncStreamResponse", "CHUNK_BYTES"]


def _content_type(name: str | None, default: int) -> int:
    if name is None:
        return default
    if name not in _BY_NAME:
        raise error("INVALID_INPUT", f"content_type must be one of {sorted(_BY_NAME)}, not {name!r}")
    return _BY_NAME[name]


def _cut(data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(view), CHUNK_BYTES):
        yield bytes(view[i:i + CHUNK_BYTES])


def _pieces(source: Any) -> tuple[Iterable[Any], int | None]:
    """The source's pieces (bytes or str, any size) and the content type it implies, if any."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _cut(source), BINARY
    if isinstance(source, str):
        return _cut(source.encode("utf-8")), TEXT
    if isinstance(source, (Stream, StreamResponse)):
        return source.chunks(), _BY_NAME.get(source.content_type or "binary", BINARY)
    if callable(getattr(source, "read", None)):
        read = source.read
        return iter(lambda: read(CHUNK_BYTES), source.read(0)), TEXT if isinstance(source, io.TextIOBase) else None
    if isinstance(source, Iterable):
        return source, None
    raise error("INVALID_INPUT", f"cannot stream a {type(source).__name__}: pass bytes, str, a file object or "
                "an iterable of bytes")


def check_source(source: Any, content_type: str | None) -> None:
    """Refuse, at once, what cannot be streamed at all (a piece of the wrong type is found
    only when it is reached, and ends the call with INVALID_INPUT)."""
    _content_type(content_type, BINARY)
    if not isinstance(source, (bytes, bytearray, memoryview, str, Iterable)) and not hasattr(source, "__aiter__") \
            and not callable(getattr(source, "read", None)):
        raise error("INVALID_INPUT", f"cannot stream a {type(source).__name__}: pass bytes, str, a file object or "
                    "an iterable of bytes")


def _as_bytes(piece: Any) -> tuple[bytes, int]:
    if isinstance(piece, (bytes, bytearray, memoryview)):
        return bytes(piece), BINARY
    if isinstance(piece, str):
        return piece.encode("utf-8"), TEXT
    raise error("INVALID_INPUT", f"a stream's pieces must be bytes or str, not {type(piece).__name__}")


class _Framer:
    """Pieces (bytes or str, any size) -> serialized request chunks: the first names the
    content type (given, else implied by the source or by its first piece) and asks for
    stdout; pieces over CHUNK_BYTES are cut; empty ones send nothing, except that an empty
    payload is still one chunk naming its type."""

    def __init__(self, content_type: str | None, capture_stdout: bool) -> None:
        self.explicit = None if content_type is None else _content_type(content_type, BINARY)
        self.capture_stdout = capture_stdout
        self.first = True

    def feed(self, piece: Any, implied: int | None) -> Iterator[bytes]:
        data, kind = _as_bytes(piece)
        for part in (_cut(data) if len(data) > CHUNK_BYTES else (data,)):
            if self.first:
                self.first = False
                yield payload_pb2.CallChunk(content_type=self.explicit or implied or kind, data=part,
                                            capture_stdout=self.capture_stdout).SerializeToString()
            elif part:
                yield payload_pb2.CallChunk(data=part).SerializeToString()

    def end(self, implied: int | None) -> Iterator[bytes]:
        if self.first:
            yield payload_pb2.CallChunk(content_type=self.explicit or implied or BINARY,
                                        capture_stdout=self.capture_stdout).SerializeToString()


def request_chunks(source: Any, content_type: str | None, capture_stdout: bool) -> Iterator[bytes]:
    """Serialized request chunks for ``source`` (see ``_Framer``)."""
    framer = _Framer(content_type, capture_stdout)
    if isinstance(source, Stream) and (passed := source._passed(framer)) is not None:
        yield from passed  # an algorithm passing its input on: its chunks go on as they came
        return
    pieces, implied = _pieces(source)
    for piece in pieces:
        yield from framer.feed(piece, implied)
    yield from framer.end(implied)


async def arequest_chunks(source: Any, content_type: str | None, capture_stdout: bool) -> AsyncIterator[bytes]:
    """``request_chunks`` for the async client: ``source`` may also be an async iterable;
    a file is read in a worker thread, so the event loop never waits on a disk."""
    if hasattr(source, "__aiter__"):
        framer = _Framer(content_type, capture_stdout)
        if isinstance(source, Stream) and (passed := source._apassed(framer)) is not None:
            async for chunk in passed:  # an algorithm passing its input on: as they came
                yield chunk
            return
        async for piece in source:
            # an answer passed on knows its content type once its first chunk came
            for chunk in framer.feed(piece, _BY_NAME.get(getattr(source, "content_type", None) or "")):
                yield chunk
        for chunk in framer.end(_BY_NAME.get(getattr(source, "content_type", None) or "")):
            yield chunk
        return
    chunks = request_chunks(source, content_type, capture_stdout)
    blocking = callable(getattr(source, "read", None)) and not isinstance(source, (Stream, StreamResponse))
    while True:
        chunk = await asyncio.to_thread(next, chunks, None) if blocking else next(chunks, None)
        if chunk is None:
            return
        yield chunk


async def write_chunk(rpc: grpc.aio.StreamStreamCall | grpc.aio.StreamUnaryCall, chunk: bytes) -> bool:
    """``rpc.write(chunk)``; False when the call takes no more chunks (it ended).

    Not ``rpc.write`` itself where it can be helped: when a write fails because the peer
    answered or went away while the chunk was on its way, grpc.aio replaces the call's
    status with a bare INTERNAL one ("Internal error from Core") and stops reading, so the
    peer's own status (a typed error: the algorithm's, the limit's) would be lost. Written
    through the call's Cython object instead, a failed write only stops the sending; the
    receiver reads on to the end and gets the peer's real status."""
    call, ready = getattr(rpc, "_cython_call", None), getattr(rpc, "_metadata_sent", None)
    if call is None or ready is None or _InternalError is None:  # another grpc.aio: its own write
        await rpc.write(chunk)
        return True
    if not ready.is_set():
        await ready.wait()
    if rpc.done():
        return False
    try:
        await call.send_serialized_message(chunk)
    except _InternalError:
        return False
    return True


async def send_chunks(rpc: grpc.aio.StreamStreamCall | grpc.aio.StreamUnaryCall,
                      chunks: AsyncIterator[bytes]) -> BaseException | None:
    """Write ``chunks`` to ``rpc`` (``write_chunk``), then end its request; what reading
    ``chunks`` raised, if it did (the call is then cancelled)."""
    try:
        async for chunk in chunks:
            if not await write_chunk(rpc, chunk):
                return None  # the call ended: reading the answer says how
        await rpc.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the call ended: reading the answer says how
    except Exception as exc:
        rpc.cancel()
        return exc
    return None


@dataclass(frozen=True)
class Fallback:
    """Where a direct stream (sdk/_direct.py) is sent again if its instance went away
    before it saw the call: the ingress's ``Mesh/CallStream``, the call's metadata for it,
    and ``forget``, which drops the client's route to that instance."""
    multicallable: Callable[..., Any]
    metadata: Any
    forget: Callable[[], None]


class Replay:
    """A direct stream's request chunks, the first ``limit`` bytes of them held, so that the
    call can be sent again through the ingress from its first chunk if its instance went
    away before it saw the call. A source longer than that is not held (``whole`` turns
    False): such a call is not sent again, its error is raised. ``view()`` is what one
    attempt sends: the held chunks, then the rest of the source; a later view makes the
    earlier one stop (one attempt reads the source at a time)."""

    def __init__(self, chunks: Iterator[bytes], limit: int = REPLAY_BYTES) -> None:
        self._source = chunks
        self._held: list[bytes] = []
        self._size, self._limit = 0, limit
        self._attempt = 0
        self._lock = threading.Lock()  # grpc reads a sync call's requests in a thread of its own
        self.whole = True

    def _hold(self, chunk: bytes) -> None:
        if self.whole:
            self._size += len(chunk)
            if self._size <= self._limit:
                self._held.append(chunk)
            else:
                self.whole, self._held = False, []

    def view(self) -> Iterator[bytes]:
        with self._lock:
            self._attempt += 1
            me = self._attempt
        i = 0
        while True:
            with self._lock:
                if me != self._attempt:
                    return
                if i < len(self._held):
                    chunk = self._held[i]
                else:
                    chunk = next(self._source, None)
                    if chunk is None:
                        return
                    self._hold(chunk)
                i += 1
            yield chunk


class AsyncReplay(Replay):
    """``Replay`` of an async source, for the async client. One event loop: the earlier
    attempt's sender is done before the next view reads (``AsyncStreamResponse._again``)."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int = REPLAY_BYTES) -> None:
        super().__init__(iter(()), limit)
        self._asource = chunks

    async def aview(self) -> AsyncIterator[bytes]:
        self._attempt += 1
        me, i = self._attempt, 0
        while me == self._attempt:
            if i < len(self._held):
                chunk = self._held[i]
            else:
                chunk = await anext(self._asource, None)
                if chunk is None:
                    return
                self._hold(chunk)
            i += 1
            yield chunk


class _Answer:
    """What both responses know once chunks arrive: the content type (first chunk), stdout
    and duration (last chunk), and the trailers (at the end)."""

    _ct: str | None = None   # "json", "text" or "binary", once the first chunk arrived
    _stdout = ""
    _duration = 0.0
    _trailing: dict[str, Any] | None = None

    def _take(self, raw: bytes) -> bytes:
        try:
            chunk = payload_pb2.CallChunk.FromString(raw)
        except Exception as exc:  # a foreign server's garbage
            raise error("INTERNAL", f"bad stream chunk: {exc!r}") from None
        if self._ct is None:
            self._ct = content_type_name(chunk.content_type)
        if chunk.stdout:
            self._stdout += chunk.stdout
        if chunk.duration:
            self._duration = chunk.duration
        return chunk.data

    @property
    def metadata(self) -> Any:
        """As ``Response.metadata``, once the answer was read to its end."""
        from ._client import Metadata, _wire

        if self._trailing is None:
            raise RuntimeError("the stream is not finished: read it to its end (chunks(), save(), read()) first")
        t = self._trailing
        return Metadata(content_type=self._ct or "binary", duration=self._duration,
                        version=str(t.get(_wire.VERSION_KEY, "")), algorithm=str(t.get(_wire.ALGORITHM_KEY, "")),
                        stdout=self._stdout or None, cold_start=t.get(_wire.COLD_START_KEY) == "1",
                        trace_id=str(t.get(_wire.TRACE_ID_KEY, "")), cache_hit=False)


class StreamResponse(_Answer):
    """A streamed call's answer, as it arrives (``Algorithm.stream``). Read it once:
    ``chunks()``, ``save(path)`` or ``read()``; a typed error raises where it happened."""

    def __init__(self, rpc: Any, failed: list[BaseException], again: Callable[[], Any] | None = None,
                 stdout: bool = False) -> None:
        self._rpc = rpc          # grpc's response iterator (it also sends the request)
        self._asked_stdout = stdout  # the call asked for the algorithm's printing
        self._failed = failed    # what reading the source raised, if it did
        self._again = again      # a direct stream: the same call through the ingress (None: cannot be)
        self._answered = False   # a chunk of the answer came: the call is never sent again
        self._pending: bytes | None = None
        self._consumed = False

    def _next_raw(self) -> bytes | None:
        try:
            raw = next(self._rpc)
            self._answered = True
            return raw
        except StopIteration:
            self._trailing = {k: v for k, v in (self._rpc.trailing_metadata() or ())}
            return None
        except (grpc.RpcError, AlgomeshError) as exc:  # (an in-process stream's errors are typed, _local.py)
            if self._failed:  # the source failed, so the call was cancelled: say why
                raise self._failed[0] from None
            typed = exc if isinstance(exc, AlgomeshError) else from_rpc_error(exc)
            again, self._again = self._again, None
            if again is not None and not self._answered and went_away(typed):
                rpc = again()  # that instance is gone before it saw the call: through the ingress
                if rpc is not None:
                    self._rpc = rpc
                    return self._next_raw()
            raise typed from None

    def _first(self) -> None:
        while self._ct is None:
            raw = self._next_raw()
            if raw is None:
                return
            data = self._take(raw)
            if data:
                self._pending = data

    def chunks(self) -> Iterator[bytes]:
        """The answer's bytes, chunk by chunk as they arrive."""
        if self._consumed:
            raise RuntimeError("a stream's answer can be read once")
        self._consumed = True
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        self._first()
        if self._pending:
            pending, self._pending = self._pending, None
            yield pending
        while (raw := self._next_raw()) is not None:
            data = self._take(raw)
            if data:
                yield data

    __iter__ = chunks

    def _passing(self) -> Iterator[bytes] | None:
        """The answer's chunks as they came (serialized, undecoded), for a runner whose
        algorithm answers with this call's answer; None if it cannot be passed on so: read
        already, or carrying printing the call asked for (which is not the caller's)."""
        if not self._passable():
            return None
        self._consumed = True
        return iter(self._next_raw, None)

    def _passable(self) -> bool:
        return not (self._consumed or self._ct is not None or self._asked_stdout)

    def _passing_on(self, loop: asyncio.AbstractEventLoop) -> AsyncIterator[bytes] | None:
        """``_passing``, read on ``loop`` itself: for the runner of a blocking apply whose
        answer is a stream running on the runner's own loop (in-process, sdk/_local.py; or
        on the runner's channel, sdk/_onloop.py), so the chunks go from the one to the
        other there, not through the apply's thread."""
        answer_on = getattr(self._rpc, "answer_on", None)
        call = answer_on(loop) if answer_on is not None else None
        if call is None or not self._passable():
            return None
        self._consumed = True
        return self._araws(call)

    async def _araws(self, call: Any) -> AsyncIterator[bytes]:
        ended = False
        try:
            while (raw := await call.read()) is not grpc.aio.EOF:
                self._answered = True
                yield raw
            self._trailing = {k: v for k, v in (call.trailing or ())}
            ended = True
        except AlgomeshError:  # (an in-process stream's errors are typed)
            if self._failed:  # the source failed, so the call was cancelled: say why
                raise self._failed[0] from None
            raise
        finally:
            if not ended:  # its reader went away (the caller cancelled): the call ends too
                call.cancel()

    def read(self) -> bytes:
        """The whole answer in memory (only for answers known to be small)."""
        return b"".join(self.chunks())

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the answer to ``path`` as it arrives; the number of bytes written."""
        n = 0
        with open(path, "wb") as f:
            for chunk in self.chunks():
                f.write(chunk)
                n += len(chunk)
        return n

    @property
    def content_type(self) -> str | None:
        """"json", "text" or "binary": waits for the answer's first chunk."""
        if self._ct is None and not self._consumed:
            self._first()
        return self._ct

    def cancel(self) -> None:
        """Stop the call; every hop below it ends too."""
        self._rpc.cancel()

    def __enter__(self) -> "StreamResponse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def start(multicallable: Callable[..., Any], source: Any, content_type: str | None, capture_stdout: bool,
          metadata: Any, timeout: float, fallback: Fallback | None = None) -> StreamResponse:
    """Start a streamed call on a sync channel's ``Mesh/CallStream`` (``fallback``: a
    direct one's way through the ingress, see ``Replay``)."""
    failed: list[BaseException] = []
    check_source(source, content_type)
    if fallback is None and isinstance(source, Stream):
        # a blocking apply passing its input on to a pipe that runs on the loop its chunks
        # arrive on (_local.py, _onloop.py): they go from one to the other there, not
        # through this thread
        looped = source._apassed_on(getattr(multicallable, "loop", None), _Framer(content_type, capture_stdout))
        if looped is not None:
            rpc = multicallable(_arecorded(looped, failed), metadata=metadata, timeout=timeout)
            return StreamResponse(rpc, failed, None, capture_stdout)
    chunks = request_chunks(source, content_type, capture_stdout)
    replay = Replay(chunks) if fallback is not None else None

    def requests(chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from chunks
        except Exception as exc:  # grpc only logs it and cancels: keep it for the reader
            failed.append(exc)
            raise

    def again() -> Any:
        if replay is None or fallback is None or not replay.whole:
            return None
        fallback.forget()
        return fallback.multicallable(requests(replay.view()), metadata=fallback.metadata, timeout=timeout)

    first = requests(replay.view() if replay is not None else chunks)
    return StreamResponse(multicallable(first, metadata=metadata, timeout=timeout), failed,
                          again if replay is not None else None, capture_stdout)


async def _arecorded(chunks: AsyncIterator[bytes], failed: list[BaseException]) -> AsyncIterator[bytes]:
    """``chunks``, keeping what reading them raised for the answer's reader (as ``start``'s
    ``requests`` does for a blocking source)."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:
        failed.append(exc)
        raise


class AsyncStreamResponse(_Answer):
    """``AsyncAlgorithm.stream``'s answer: ``async for chunk in answer.chunks()``,
    ``await answer.save(path)``, ``await answer.read()``."""

    def __init__(self, multicallable: Callable[..., Any], source: Any, content_type: str | None,
                 capture_stdout: bool, metadata: Any, timeout: float, fallback: Fallback | None = None) -> None:
        check_source(source, content_type)
        self._rpc = multicallable(metadata=metadata, timeout=timeout)
        self._failed: BaseException | None = None
        self._consumed = False
        self._timeout, self._fallback = timeout, fallback  # fallback: a direct stream's way through the ingress
        self._asked_stdout = capture_stdout
        chunks = arequest_chunks(source, content_type, capture_stdout)
        self._replay = AsyncReplay(chunks) if fallback is not None else None
        self._sender = asyncio.ensure_future(self._send(self._rpc, chunks if self._replay is None
                                                        else self._replay.aview()))

    async def _send(self, rpc: Any, chunks: AsyncIterator[bytes]) -> None:
        if (failed := await send_chunks(rpc, chunks)) is not None:
            self._failed = failed

    async def _again(self) -> bool:
        """A direct stream whose instance went away before it saw the call: send it again
        through the ingress, from its first chunk (False: it cannot be, see ``Replay``)."""
        fallback, self._fallback = self._fallback, None
        if fallback is None or self._replay is None or not self._replay.whole:
            return False
        fallback.forget()
        await self._sender  # ended with its call: it holds every chunk it read
        if not self._replay.whole or self._failed is not None:
            return False
        self._rpc = fallback.multicallable(metadata=fallback.metadata, timeout=self._timeout)
        self._sender = asyncio.ensure_future(self._send(self._rpc, self._replay.aview()))
        return True

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._consumed:
            raise RuntimeError("a stream's answer can be read once")
        self._consumed = True
        raws = self._raws()
        try:
            async for raw in raws:
                data = self._take(raw)
                if data:
                    yield data
        finally:
            await raws.aclose()  # a reader that stops early ends the call now (_raws)

    def _passing(self) -> AsyncIterator[bytes] | None:
        """``StreamResponse._passing``: the answer's chunks as they came, or None."""
        if self._consumed or self._asked_stdout:
            return None
        self._consumed = True
        return self._raws()

    async def _raws(self) -> AsyncIterator[bytes]:
        answered = False  # a chunk of the answer came: the call is never sent again
        try:
            while True:
                try:
                    raw = await self._rpc.read()
                except (grpc.RpcError, AlgomeshError) as exc:  # (in-process: typed already, _local.py)
                    if self._failed is not None:
                        raise self._failed from None
                    typed = exc if isinstance(exc, AlgomeshError) else from_rpc_error(exc)
                    if not answered and went_away(typed) and await self._again():
                        continue
                    raise typed from None
                except asyncio.CancelledError:
                    if self._failed is not None:  # we cancelled it: the source failed
                        raise self._failed from None
                    raise
                if raw is grpc.aio.EOF:
                    break
                answered = True
                yield raw
            self._trailing = {k: v for k, v in (await self._rpc.trailing_metadata() or ())}
        finally:
            if self._trailing is None:
                self.cancel()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks()

    async def read(self) -> bytes:
        """The whole answer in memory (only for answers known to be small)."""
        return b"".join([c async for c in self.chunks()])

    async def save(self, path: str | os.PathLike[str]) -> int:
        n = 0
        with open(path, "wb") as f:
            async for chunk in self.chunks():
                await asyncio.to_thread(f.write, chunk)
                n += len(chunk)
        return n

    @property
    def content_type(self) -> str | None:
        """"json", "text" or "binary", once the answer's first chunk arrived (else None)."""
        return self._ct

    def cancel(self) -> None:
        self._sender.cancel()
        self._rpc.cancel()


class Stream(io.RawIOBase):
    """A streamed input, as an algorithm's ``apply`` receives it: read it like a binary file
    (``read(n)``, ``readinto``, ``readline``) or chunk by chunk (``for chunk in stream``; in
    an ``async def apply``, ``async for chunk in stream``). ``content_type`` is what the
    caller sent ("json", "text" or "binary"); the chunks are always bytes. Only one chunk
    is held at a time: the next is fetched when it is read."""

    def __init__(self, pull: Callable[[], bytes | None], content_type: str = "binary", *,
                 apull: Callable[[], Any] | None = None, first: bytes = b"",
                 raw: Callable[[], bytes | None] | None = None, araw: Callable[[], Any] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__()
        self._pull = pull          # blocking: the next chunk's data, None at the end
        self._apull = apull        # a coroutine function doing the same, for async applies
        self._raw, self._araw = raw, araw  # the same, but the chunk as it came (serialized), for passing it on
        self._loop = loop          # the loop apull and araw run on
        self.content_type = content_type
        self._buf = memoryview(first)  # the first chunk's data, which came with the call
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        while not self._buf and not self._eof:
            data = self._pull()
            if data is None:
                self._eof = True
            else:
                self._buf = memoryview(data)
        return bool(self._buf)

    def readinto(self, b: Any) -> int:
        if not self._fill():
            return 0
        n = min(len(b), len(self._buf))
        memoryview(b).cast("B")[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(self)
        parts, want = [], size
        while want and self._fill():  # up to size bytes: fewer only at the end
            part, self._buf = self._buf[:want], self._buf[want:]
            parts.append(bytes(part))
            want -= len(part)
        return b"".join(parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def chunks(self) -> Iterator[bytes]:
        """The rest of the stream, chunk by chunk as the caller sent them."""
        while self._fill():
            out, self._buf = bytes(self._buf), memoryview(b"")
            yield out

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        return self.chunks()

    async def __aiter__(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        if self._apull is None:
            raise RuntimeError("this stream is read with `for`, not `async for`")
        if self._buf:
            out, self._buf = bytes(self._buf), memoryview(b"")
            yield out
        while not self._eof:
            data = await self._apull()
            if data is None:
                self._eof = True
            elif data:
                yield data

    def __repr__(self) -> str:
        return f"<algomesh.Stream {self.content_type}{' ended' if self._eof else ''}>"

    def _head(self, framer: "_Framer") -> list[bytes]:
        """The first request chunk when this stream is passed on: ``framer`` makes it of
        what is buffered (the rest of the chunk the algorithm was reading, if any)."""
        head, self._buf = bytes(self._buf), memoryview(b"")
        return list(framer.feed(head, _BY_NAME.get(self.content_type, BINARY)))

    def _passed(self, framer: "_Framer") -> Iterator[bytes] | None:
        """The rest of this stream as request chunks for the next stage: a first one of
        its own (``_head``), then the chunks as they came, never decoded nor framed again
        (docs/streaming.md); None if it cannot be so (no raw pull, or read to its end)."""
        if self._raw is None or self._eof:
            return None
        first = self._head(framer)

        def chunks() -> Iterator[bytes]:
            yield from first
            while (raw := self._raw()) is not None:  # type: ignore[misc]
                yield raw
            self._eof = True

        return chunks()

    def _apassed(self, framer: "_Framer") -> AsyncIterator[bytes] | None:
        """``_passed`` for an async apply."""
        if self._araw is None or self._eof:
            return None
        first = self._head(framer)

        async def chunks() -> AsyncIterator[bytes]:
            for chunk in first:
                yield chunk
            while (raw := await self._araw()) is not None:  # type: ignore[misc]
                yield raw
            self._eof = True

        return chunks()

    def _apassed_on(self, loop: asyncio.AbstractEventLoop | None, framer: "_Framer") -> AsyncIterator[bytes] | None:
        """``_apassed`` for a pipe that reads its request on ``loop``, if that is the loop
        this stream's chunks arrive on; else None."""
        return self._apassed(framer) if loop is not None and loop is self._loop else None
