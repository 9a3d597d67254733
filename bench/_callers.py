"""How the benchmark's client makes one call on each kind of path.

Every caller sends the same 100-byte payload and checks, on its first call, that the
answer is that payload (so a path that does not pass it through is an error, not a fast
figure). All run on the benchmark's own uvloop event loop:

- ``GrpcCaller``: a raw grpc.aio stub on ``/algomesh.v1.Mesh/Call`` (a serialized
  ``CallRequest`` of content type BINARY, routing facts in metadata): the bare chains
  (with a client certificate for the mTLS floor),
  and a mesh path whose description says ``client="grpc"`` (the public wire contract).
- ``SdkCaller``: ``algomesh.async_client(key, address, **options).algo(target).pipe(payload)``:
  what a user's program does; the SDK encodes and decodes the payload.
- ``HttpCaller``: HTTP/1.1 POST with keep-alive, one connection per call in flight, written
  on asyncio streams (the cheapest HTTP client Python has; so the client's cost is not
  what tells Ray Serve or BentoML apart): Ray Serve's and BentoML's front doors.

Streams: ``bare_stream`` and ``sdk_stream`` send N MiB in 256 KiB chunks (the mesh's
chunk size), read the answer as it comes, and check its length and CRC-32. Each first
makes its client and sends one small stream the same way (connections made, a direct
client's route known), then calls ``mark()``: the stream is timed from there.
"""
from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any, AsyncIterator, Callable

from algomesh.v1 import payload_pb2

PAYLOAD = bytes(range(100))
TIMEOUT = 30.0
CHUNK = 256 * 1024
CALL_PATH = "/algomesh.v1.Mesh/Call"
CALL_STREAM_PATH = "/algomesh.v1.Mesh/CallStream"


class WrongAnswer(RuntimeError):
    pass


class GrpcCaller:
    def __init__(self, address: str, metadata: tuple = (), tls: dict | None = None) -> None:
        from bench._bare import channel

        self.address, self.metadata = address, metadata
        self.request = payload_pb2.CallRequest(input=payload_pb2.Payload(
            content_type=payload_pb2.CONTENT_TYPE_BINARY, data=PAYLOAD)).SerializeToString()
        self.channel = channel(address, tls)  # tls: mutual TLS (a bare chain with --tls)
        self.call = self.channel.unary_unary(CALL_PATH)

    async def one(self, timeout: float = TIMEOUT) -> None:
        await self.call(self.request, metadata=self.metadata, timeout=timeout)

    async def check(self, timeout: float) -> None:
        out = payload_pb2.CallResponse.FromString(
            await self.call(self.request, metadata=self.metadata, timeout=timeout)).output
        if out.data != PAYLOAD or out.content_type != payload_pb2.CONTENT_TYPE_BINARY:
            raise WrongAnswer(f"{self.address} did not answer the payload: {out!r}")

    async def close(self) -> None:
        await self.channel.close()


class SdkCaller:
    def __init__(self, key: str, address: str, target: str, options: dict[str, Any] | None = None) -> None:
        import algomesh

        self.client = algomesh.async_client(key, address, **(options or {}))
        self.algo = self.client.algo(target).set_options(timeout=TIMEOUT)
        self.target = target

    async def one(self, timeout: float = TIMEOUT) -> None:
        (await self.algo.pipe(PAYLOAD)).result

    async def check(self, timeout: float) -> None:
        self.algo.set_options(timeout=timeout)
        try:
            got = (await self.algo.pipe(PAYLOAD)).result
        finally:
            self.algo.set_options(timeout=TIMEOUT)
        if got != PAYLOAD:
            raise WrongAnswer(f"{self.target} did not answer the payload: {got!r}")

    async def close(self) -> None:
        await self.client.close()


class HttpCaller:
    """POST ``PAYLOAD`` to http://host:port/path, reusing idle keep-alive connections."""

    def __init__(self, host: str, port: int, path: str = "/", content_type: str = "application/octet-stream",
                 body: bytes = PAYLOAD, expect: bytes = PAYLOAD) -> None:
        self.host, self.port, self.path, self.expect = host, port, path, expect
        self.request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _exchange(self, timeout: float) -> tuple[int, bytes]:
        """One request on an idle connection, or a new one. A kept-alive connection the server
        closed meanwhile (its idle timeout) fails before any byte of an answer: then, as any
        HTTP client does, the request is sent again once on a new connection."""
        while self.idle:
            conn = self.idle.pop()
            try:
                return await self._on(conn, timeout)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
        return await self._on(await asyncio.open_connection(self.host, self.port), timeout)

    async def _on(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  timeout: float) -> tuple[int, bytes]:
        reader, writer = conn
        try:
            async with asyncio.timeout(timeout):
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
                status_line, *header_lines = head.decode("latin-1").split("\r\n")
                status = int(status_line.split()[1])
                headers = {}
                for line in header_lines:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        parts.append(await reader.readexactly(size + 2))
                        if size == 0:
                            break
                    body = b"".join(p[:-2] for p in parts)
                else:
                    raise WrongAnswer(f"http://{self.host}:{self.port}: an answer without a length")
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append(conn)
        return status, body

    async def one(self, timeout: float = TIMEOUT) -> None:
        status, _ = await self._exchange(timeout)
        if status != 200:
            raise WrongAnswer(f"http://{self.host}:{self.port}{self.path}: HTTP {status}")

    async def check(self, timeout: float) -> None:
        status, body = await self._exchange(timeout)
        if status != 200 or body != self.expect:
            raise WrongAnswer(f"http://{self.host}:{self.port}{self.path} answered HTTP {status} {body[:200]!r}")

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


# ----------------------------------------------------------------------- streams


class _Source:
    """``size`` bytes in CHUNK pieces, each stamped with its index, CRC-32 kept as sent."""

    def __init__(self, size: int) -> None:
        self.size, self.crc = size, 0
        self.block = bytes(range(256)) * (CHUNK // 256)

    def pieces(self):
        sent, i = 0, 0
        while sent < self.size:
            n = min(CHUNK, self.size - sent)
            piece = i.to_bytes(8, "big") + self.block[8:n] if n >= 8 else self.block[:n]
            self.crc = zlib.crc32(piece, self.crc)
            sent, i = sent + n, i + 1
            yield piece


def _verify(what: str, size: int, got: int, crc: int, src: _Source) -> None:
    if got != size or crc != src.crc:
        raise WrongAnswer(f"{what}: streamed back {got} of {size} bytes, CRC-32 {crc:08x} (sent {src.crc:08x})")


def _no_mark() -> None:
    pass


async def bare_stream(address: str, size: int, timeout: float = 300.0, tls: dict | None = None,
                      mark: Callable[[], None] = _no_mark) -> None:
    """``size`` bytes through a bare chain's ``CallStream`` and back (``tls``: a chain with mTLS)."""
    from bench._bare import channel

    src = _Source(size)

    async def requests(pieces) -> AsyncIterator[bytes]:
        for i, piece in enumerate(pieces):
            chunk = payload_pb2.CallChunk(data=piece)
            if i == 0:
                chunk.content_type = payload_pb2.CONTENT_TYPE_BINARY
            yield chunk.SerializeToString()

    async with channel(address, tls) as chan:
        stream = chan.stream_stream(CALL_STREAM_PATH)
        warm = [payload_pb2.CallChunk.FromString(raw).data async for raw in stream(requests([b"warm"]), timeout=30)]
        if warm != [b"warm"]:
            raise WrongAnswer(f"bare chain at {address}: streamed back {warm!r} for b'warm'")
        mark()
        call = stream(requests(src.pieces()), timeout=timeout)
        got, crc = 0, 0
        async for raw in call:
            data = payload_pb2.CallChunk.FromString(raw).data
            got, crc = got + len(data), zlib.crc32(data, crc)
    _verify(f"bare chain at {address}", size, got, crc, src)


async def sdk_stream(key: str, address: str, target: str, size: int, options: dict[str, Any] | None = None,
                     timeout: float = 300.0, mark: Callable[[], None] = _no_mark) -> None:
    """``size`` bytes through ``target`` with the SDK's ``algo.stream`` and back."""
    import algomesh

    src = _Source(size)

    async def source() -> AsyncIterator[bytes]:
        for piece in src.pieces():
            yield piece

    async with algomesh.async_client(key, address, **(options or {})) as client:
        algo = client.algo(target).set_options(timeout=timeout)
        until = time.monotonic() + 30
        while True:
            if (warm := await algo.stream(b"warm").read()) != b"warm":
                raise WrongAnswer(f"{target}: streamed back {warm!r} for b'warm'")
            # direct: streams go through the ingress until the client has a route
            if client._routes is None or client._routes.lookup(algo.target, stream=True) is not None \
                    or time.monotonic() > until:
                break
            await asyncio.sleep(0.05)
        mark()
        answer = algo.stream(source())
        got, crc = 0, 0
        async for data in answer.chunks():
            got, crc = got + len(data), zlib.crc32(data, crc)
    _verify(target, size, got, crc, src)
