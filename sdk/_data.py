"""``data://`` objects: ``client.data("data://alice/videos/in.mp4")``.

A ``DataFile`` names an object in the control plane's blob store (docs/data.md) and moves
its bytes in chunks: ``put`` takes bytes, text, a path, a file object or an iterable of
chunks; ``save(path)`` and ``chunks()`` read without holding the object in memory; ``get()``
reads it whole, for small objects. Passed to ``pipe``, a DataFile travels as a reference
(a ``CONTENT_TYPE_DATA_REF`` payload: only the URI), and an algorithm receives it as a
DataFile it reads through its own sidecar; one an algorithm returns reaches the caller the
same way. Outside an algorithm the file uses the client that made it (or the call that
returned it); inside one, the algorithm's sidecar.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import grpc

from algomesh.v1 import data_pb2, data_pb2_grpc

from . import _wire
from ._context import CALL_CONTEXT
from ._datauri import parse_data_uri
from ._errors import error, from_rpc_error

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["DataFile", "DataInfo"]

CHUNK = 1 << 20
TIMEOUT = 3600.0  # seconds for one transfer; a large object on a slow disk takes a while


@dataclass(frozen=True)
class DataInfo:
    uri: str
    size: int                 # bytes
    modified: float           # unix seconds of the last write
    sha256: str               # hex digest ("" if the store could not keep it)

    @classmethod
    def of(cls, obj: data_pb2.DataObject) -> "DataInfo":
        return cls(obj.uri, obj.size, obj.modified_unix_nano / 1e9, obj.sha256)


def _chunks_of(source: Any, chunk: int) -> Iterator[bytes]:
    """Bytes in chunks from bytes, str, a path, a binary file object or an iterable of bytes."""
    if isinstance(source, str):
        source = source.encode("utf-8")
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for i in range(0, len(view), chunk):
            yield bytes(view[i:i + chunk])
        return
    if isinstance(source, os.PathLike):
        with open(source, "rb") as f:
            yield from _chunks_of(f, chunk)
        return
    if hasattr(source, "read"):
        while True:
            data = source.read(chunk)
            if not data:
                return
            if isinstance(data, str):
                data = data.encode("utf-8")
            yield data
    elif isinstance(source, Iterable):
        for data in source:
            if isinstance(data, str):
                data = data.encode("utf-8")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise error("INVALID_INPUT", f"an iterable put yields bytes, not {type(data).__name__}")
            if data:
                yield bytes(data)
    else:
        raise error("INVALID_INPUT", f"cannot put a {type(source).__name__}: give bytes, str, a path, "
                    "a binary file or an iterable of bytes")


class DataFile:
    """One ``data://`` object (or, for ``list`` and recursive ``delete``, a collection or folder)."""

    def __init__(self, uri: str, client: "Client | None" = None) -> None:
        parse_data_uri(uri)  # INVALID_DATA_URI early, with the URI in the message
        self.uri = uri
        self._client = client

    # where requests go ------------------------------------------------------------

    def _bound(self) -> "Client":
        if self._client is None:  # inside an algorithm: its sidecar; else ALGOMESH_* defaults
            from ._client import client
            self._client = client()
        return self._client

    def _stub(self) -> tuple[data_pb2_grpc.DataStub, tuple[tuple[str, str], ...]]:
        c = self._bound()
        md: tuple[tuple[str, str], ...] = ((_wire.AUTH_KEY, f"Simple {c.api_key}"),) if c.api_key else ()
        return data_pb2_grpc.DataStub(c.channel), md + CALL_CONTEXT.get()

    def _unary(self, method: str, request: Any) -> Any:
        stub, md = self._stub()
        try:
            return getattr(stub, method)(request, metadata=md, timeout=60.0)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # writing ------------------------------------------------------------------------

    def put(self, source: Any, *, chunk_size: int = CHUNK) -> DataInfo:
        """Write the object from bytes, str, a path (``pathlib.Path``), a binary file
        object or an iterable of byte chunks, streamed; it replaces any previous object
        whole when the upload ends, or not at all."""
        parse_data_uri(self.uri, want_object=True)
        stub, md = self._stub()

        failed: list[BaseException] = []

        def requests() -> Iterator[data_pb2.PutChunk]:
            yield data_pb2.PutChunk(uri=self.uri)
            try:
                for data in _chunks_of(source, chunk_size):
                    yield data_pb2.PutChunk(data=data)
            except BaseException as exc:  # gRPC would swallow it; without `last` the store writes nothing
                failed.append(exc)
                raise
            yield data_pb2.PutChunk(last=True)

        try:
            info = DataInfo.of(stub.Put(requests(), metadata=md, timeout=TIMEOUT))
        except grpc.RpcError as exc:
            if failed:  # the source broke: the upload was cancelled, nothing was written
                raise failed[0] from None
            raise from_rpc_error(exc) from None
        self.uri = info.uri  # data://.my/... is now its owner's name: a reference means the same to everyone
        return info

    def put_file(self, path: str | os.PathLike[str]) -> DataInfo:
        """Upload the local file at ``path``."""
        return self.put(Path(path))

    # reading ------------------------------------------------------------------------

    def chunks(self, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        """The object's bytes as they arrive (``length`` 0: to the end)."""
        parse_data_uri(self.uri, want_object=True)
        stub, md = self._stub()
        stream = stub.Get(data_pb2.GetRequest(uri=self.uri, offset=offset, length=length), metadata=md,
                          timeout=TIMEOUT)
        try:
            for msg in stream:
                if msg.data:
                    yield msg.data
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            stream.cancel()

    def get(self) -> bytes:
        """The whole object, in memory: for small objects (use ``save`` or ``chunks`` for big ones)."""
        buf = io.BytesIO()
        for data in self.chunks():
            buf.write(data)
        return buf.getvalue()

    def get_text(self) -> str:
        return self.get().decode("utf-8")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Download into the local file ``path``, a chunk at a time; returns the path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        try:
            with open(tmp, "wb") as f:
                for data in self.chunks():
                    f.write(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def stat(self) -> DataInfo:
        return DataInfo.of(self._unary("Stat", data_pb2.StatRequest(uri=self.uri)))

    def exists(self) -> bool:
        try:
            self.stat()
        except Exception as exc:
            if getattr(exc, "reason", "") == "DATA_NOT_FOUND":
                return False
            raise
        return True

    # collections --------------------------------------------------------------------

    def list(self) -> list["DataFile"]:
        """The objects under this collection, folder or prefix (``data://owner/coll/pre``)."""
        resp = self._unary("List", data_pb2.ListRequest(uri=self.uri))
        return [DataFile(o.uri, self._client) for o in resp.objects]

    def infos(self) -> list[DataInfo]:
        """As ``list``, with each object's size, time and digest."""
        return [DataInfo.of(o) for o in self._unary("List", data_pb2.ListRequest(uri=self.uri)).objects]

    def collections(self) -> list["DataFile"]:
        """For ``data://owner``: its collections."""
        resp = self._unary("List", data_pb2.ListRequest(uri=self.uri))
        return [DataFile(u, self._client) for u in resp.collections]

    def delete(self, *, recursive: bool = False) -> int:
        """Delete the object (or with ``recursive`` everything under a collection or
        folder); returns how many objects went."""
        return int(self._unary("Delete", data_pb2.DeleteRequest(uri=self.uri, recursive=recursive)).deleted)

    # as a payload -------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataFile) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __repr__(self) -> str:
        return f"<algomesh.DataFile {self.uri}>"

    def __str__(self) -> str:
        return self.uri
