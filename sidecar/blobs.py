"""The blob store behind ``data://`` URIs, and the ``algomesh.v1.Data`` service over it.

Objects are files under the control plane's data folder, ``DATA_DIR/blobs/OWNER/
COLLECTION/PATH``. A Put writes a temporary file as the chunks arrive (hashing them on the
way), then, once the uploader's last message says it is complete, renames it into place:
an object appears whole or not at all, a reader that opened the previous one keeps
reading it, and an upload cut short (the uploader died, its source failed) leaves nothing
behind. The digest rides on the file as an extended attribute. Get sends 1 MiB
chunks, so neither end ever holds a whole object.

Who may reach what (``DataAccess``), checked on every request:
- an API key: its owner's data (``data://OWNER/...``), reading with data scope ``read``,
  writing and deleting with ``write`` (``algomesh keys create --data``); an admin key: all;
- an algorithm (through its sidecar, on the mesh port, proven by its mesh certificate): its
  own owner's data, read and write; and the data of the API key its call runs for, within
  that key's scope (the grant travels with the call: ``algomesh-data-access``);
- ``--insecure``: everything.
``data://.my/...`` is the asker's own owner: the key's owner, or for an algorithm the
owner of the key its call runs for (else its own owner), as Algorithmia's ``.my`` is.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

import grpc

from algomesh import _wire
from algomesh._datauri import MY, DataUri, parse_data_uri
from algomesh._errors import AlgomeshError, error
from algomesh.registry.keys import Principal
from algomesh.v1 import data_pb2, data_pb2_grpc

from .rescue import abort, as_typed, rescued

log = logging.getLogger("algomesh.blobs")

CHUNK = 1 << 20
DIGEST_XATTR = "user.algomesh.sha256"


@dataclass(frozen=True)
class DataAccess:
    """What one request may reach. ``grant``: (owner, scope, every owner?) of the API key a
    call runs for, carried to the algorithm's sidecar with the call."""

    owner: str                           # .my
    scope: str = "none"                  # for ``owner``'s data: none, read, write
    everything: bool = False             # an admin key, or --insecure
    own: str = ""                        # an algorithm's own owner: read and write
    grant: tuple[str, str, bool] | None = None

    def allows(self, owner: str, write: bool) -> bool:
        if self.everything or owner == self.own:
            return True
        need = ("write",) if write else ("read", "write")
        if owner == self.owner and self.scope in need:
            return True
        if self.grant is not None and (self.grant[0] == owner or self.grant[2]) and self.grant[1] in need:
            return True
        return False


def parse_grant(value: str) -> tuple[str, str, bool] | None:
    """``OWNER:SCOPE`` or ``OWNER:write:all`` (an admin key) from algomesh-data-access
    (``Principal.data_grant`` makes it)."""
    owner, scope, *rest = value.split(":") + [""]
    everything = rest[0] == "all"
    if scope not in ("none", "read", "write") or not (owner or everything):
        return None
    return owner, scope, everything


def client_access(principal: Principal) -> DataAccess:
    if principal.admin:
        return DataAccess(owner=principal.owner, scope="write", everything=True)
    return DataAccess(owner=principal.owner, scope=principal.data)


def sidecar_access(principal: Principal, metadata) -> DataAccess:
    """An algorithm's sidecar: its own owner, plus the grant its call carries."""
    if principal.admin:  # --insecure
        return DataAccess(owner=principal.owner, scope="write", everything=True)
    grant = None
    for key, value in metadata or ():
        if key == _wire.DATA_ACCESS_KEY:
            grant = parse_grant(value)
    my = grant[0] if grant is not None and grant[0] else principal.owner
    return DataAccess(owner=my, scope=grant[1] if grant and grant[0] == my else "none", own=principal.owner,
                      grant=grant)


class BlobStore:
    """Objects as files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, *, reserve_bytes: int = 256 << 20) -> None:
        self.root = Path(root)
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():  # a previous run's interrupted writes
            stale.unlink(missing_ok=True)
        self.reserve = reserve_bytes

    def path(self, uri: DataUri) -> Path:
        p = self.root / uri.owner
        if uri.collection:
            p /= uri.collection
        for seg in uri.path.rstrip("/").split("/") if uri.path else ():
            p /= seg
        return p

    def describe(self, uri: DataUri, path: Path) -> data_pb2.DataObject:
        st = path.stat()
        try:
            digest = os.getxattr(path, DIGEST_XATTR).decode()
        except OSError:
            digest = ""
        return data_pb2.DataObject(uri=str(uri), size=st.st_size, modified_unix_nano=st.st_mtime_ns, sha256=digest)

    def stat(self, uri: DataUri) -> data_pb2.DataObject:
        path = self.path(uri)
        if not path.is_file():
            raise error("DATA_NOT_FOUND", f"no object at {uri}")
        return self.describe(uri, path)

    async def put(self, uri: DataUri, chunks: AsyncIterator[bytes]) -> data_pb2.DataObject:
        if shutil.disk_usage(self.root).free < self.reserve:
            raise error("DATA_STORE_FULL", f"the data folder {self.root} has less than "
                        f"{self.reserve >> 20} MiB free")
        final = self.path(uri)
        if final.is_dir():
            raise error("INVALID_DATA_URI", f"{uri} is a folder of other objects; it cannot also be an object")
        tmp = self.tmp / secrets.token_hex(8)
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as f:
                async for data in chunks:
                    digest.update(data)
                    f.write(data)
            try:
                os.setxattr(tmp, DIGEST_XATTR, digest.hexdigest().encode())
            except OSError:  # a filesystem without user xattrs: the digest is not kept
                pass
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            except (NotADirectoryError, FileExistsError):
                raise error("INVALID_DATA_URI", f"{uri}: a folder on its path is an object") from None
        finally:
            tmp.unlink(missing_ok=True)
        obj = self.describe(uri, final)
        obj.sha256 = digest.hexdigest()
        return obj

    async def get(self, uri: DataUri, offset: int = 0, length: int = 0) -> AsyncIterator[bytes | data_pb2.DataObject]:
        path = self.path(uri)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise error("DATA_NOT_FOUND", f"no object at {uri}") from None
        with f:
            yield self.describe(uri, path)
            f.seek(max(0, offset))
            left = length if length > 0 else None
            while left is None or left > 0:
                data = f.read(CHUNK if left is None else min(CHUNK, left))
                if not data:
                    return
                if left is not None:
                    left -= len(data)
                yield data

    def list(self, uri: DataUri) -> data_pb2.ListResponse:
        resp = data_pb2.ListResponse()
        if not uri.collection:  # data://owner: its collections
            base = self.root / uri.owner
            if base.is_dir():
                resp.collections.extend(f"data://{uri.owner}/{p.name}" for p in sorted(base.iterdir()) if p.is_dir())
            return resp
        base = self.path(uri._replace(path=""))
        folder = self.path(uri._replace(path=uri.path.rpartition("/")[0]))  # the prefix's deepest folder
        if not folder.is_dir():
            return resp
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                rel = p.relative_to(base).as_posix()
                if rel.startswith(uri.path):
                    resp.objects.append(self.describe(uri._replace(path=rel), p))
        return resp

    def delete(self, uri: DataUri, recursive: bool) -> int:
        path = self.path(uri)
        if path.is_file():
            path.unlink()
            self._prune(path.parent)
            return 1
        if path.is_dir() and recursive:
            n = sum(len(files) for _, _, files in os.walk(path))
            shutil.rmtree(path)
            self._prune(path.parent)
            return n
        if path.is_dir():
            raise error("INVALID_DATA_URI", f"{uri} is a collection or folder: delete it with recursive=True")
        raise error("DATA_NOT_FOUND", f"no object at {uri}")

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty, up to the owner's."""
        while folder != self.root and folder.parent != self.root:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


class DataServicer(data_pb2_grpc.DataServicer):
    """``algomesh.v1.Data`` over a BlobStore. ``access(context)`` says who is asking."""

    def __init__(self, store: BlobStore, access: Callable[[grpc.aio.ServicerContext], DataAccess]) -> None:
        self.store = store
        self.access = access

    def _check(self, context, uri: str, *, write: bool, want_object: bool) -> DataUri:
        who = self.access(context)
        parsed = parse_data_uri(uri, want_object=want_object)
        if parsed.owner == MY:
            if not who.owner:
                raise error("INVALID_DATA_URI", f"{uri}: .my names the caller's owner, and this caller has none")
            parsed = parsed.resolved(who.owner)
        if not who.allows(parsed.owner, write):
            what = "write" if write else "read"
            raise error("PERMISSION_DENIED", f"this caller may not {what} {parsed.owner}'s data ({uri}); "
                        f"its key's data scope is {who.scope!r}", permission=f"data:{what}:{parsed.owner}")
        return parsed

    async def Put(self, request_iterator, context):  # noqa: N802 - gRPC method name
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None:
                raise error("INVALID_DATA_URI", "a Put names its object in its first message")
            uri = self._check(context, first.uri, write=True, want_object=True)

            async def chunks() -> AsyncIterator[bytes]:
                last = first.last
                if first.data:
                    yield first.data
                async for msg in request_iterator:
                    if last:
                        raise error("INVALID_INPUT", "a Put sends nothing after its last message")
                    if msg.uri and msg.uri != first.uri:
                        raise error("INVALID_INPUT", "only a Put's first message names the object")
                    if msg.data:
                        yield msg.data
                    last = msg.last
                if not last:  # the uploader stopped before the end: keep the previous object
                    raise error("INVALID_INPUT", f"the upload of {first.uri} ended before its last message; "
                                "nothing was written")

            return await self.store.put(uri, chunks())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort(context, as_typed(exc))

    async def Get(self, request, context):  # noqa: N802
        try:
            uri = self._check(context, request.uri, write=False, want_object=True)
            if request.offset < 0 or request.length < 0:
                raise error("INVALID_INPUT", "offset and length are byte counts (0 or more)")
            async for item in self.store.get(uri, request.offset, request.length):
                if isinstance(item, bytes):
                    yield data_pb2.GetChunk(data=item)
                else:
                    yield data_pb2.GetChunk(object=item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort(context, exc if isinstance(exc, AlgomeshError) else as_typed(exc))

    @rescued
    async def Stat(self, request, context):  # noqa: N802
        return self.store.stat(self._check(context, request.uri, write=False, want_object=True))

    @rescued
    async def List(self, request, context):  # noqa: N802
        uri = self._check(context, request.uri, write=False, want_object=False)
        return await asyncio.to_thread(self.store.list, uri)

    @rescued
    async def Delete(self, request, context):  # noqa: N802
        uri = self._check(context, request.uri, write=True, want_object=False)
        if not uri.collection:
            raise error("INVALID_DATA_URI", f"{request.uri}: delete a collection (data://owner/collection), "
                        "not a whole owner")
        n = await asyncio.to_thread(self.store.delete, uri, request.recursive)
        return data_pb2.DeleteResponse(deleted=n)
