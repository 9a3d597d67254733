"""API keys and the principals they stand for.

A key reads ``amk_<id>_<secret>``: the id is public (``keys list``, ``keys revoke``), the
secret is 256 random bits shown once, when the key is created. Stores keep only a salted
SHA-256 of the secret (a secret that random needs no stretching, and checking it costs
microseconds on every call). Keys never appear in logs, errors or traces: errors name
the key's id at most.

A ``Principal`` is who a request acts for: a client's key, a sidecar's algorithm (proven
by its mesh certificate), or, with ``--insecure``, anyone.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Mapping

from algomesh._errors import error
from algomesh.v1 import registry_pb2

PREFIX = "amk_"
DATA_SCOPES = ("none", "read", "write")
_KEY = re.compile(r"amk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def new_key(owner: str, *, algorithms: tuple[str, ...] | list[str] = (), no_pipelines: bool = False,
            data: str = "read", admin: bool = False) -> tuple[str, registry_pb2.ApiKey]:
    """A fresh key: (the whole key to show once, the record to store)."""
    if not _OWNER.fullmatch(owner or ""):
        raise error("INVALID_INPUT", f"{owner!r} is not an owner name (letters, digits, _ . -)")
    data = data or "read"
    if data not in DATA_SCOPES:
        raise error("INVALID_INPUT", f"data access must be one of {', '.join(DATA_SCOPES)}, not {data!r}")
    for glob in algorithms:
        if not glob or len(glob) > 200 or any(c.isspace() for c in glob):
            raise error("INVALID_INPUT", f"{glob!r} is not an algorithm glob (like demo/* or demo/clean)")
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
    record = registry_pb2.ApiKey(id=key_id, owner=owner, algorithms=list(algorithms), no_pipelines=no_pipelines,
                                 data=data, admin=admin, salt=salt, hash=_hash(salt, secret),
                                 created_at=int(time.time()))
    return f"{PREFIX}{key_id}_{secret}", record


def public(record: registry_pb2.ApiKey) -> registry_pb2.ApiKey:
    """The record without its salt and hash, as ``keys list`` shows it."""
    out = registry_pb2.ApiKey()
    out.CopyFrom(record)
    out.ClearField("salt")
    out.ClearField("hash")
    return out


@dataclass(frozen=True, slots=True)
class Principal:
    owner: str                           # whose private algorithms it reaches
    admin: bool = False
    algorithms: tuple[str, ...] = ()     # globs it may call; empty: any
    pipelines: bool = True               # may the algorithms it calls pipe onward
    key_id: str = ""                     # the key it presented (public id), if any
    algorithm: str = ""                  # owner/name@version of a sidecar, if it is one
    data: str = "none"                   # data:// access of its own owner's data: none, read, write

    @property
    def data_grant(self) -> str:
        """What the algorithms it calls may reach of data:// on its behalf, as
        ``OWNER:SCOPE``, and ``OWNER:write:all`` for an admin (every owner's); see sidecar/blobs.py."""
        if self.admin:
            return f"{self.owner}:write:all"
        return f"{self.owner}:{self.data}" if self.owner else ""

    def may_call(self, name: str) -> bool:
        return not self.algorithms or any(fnmatchcase(name, glob) for glob in self.algorithms)

    def check_call(self, name: str) -> None:
        if not self.may_call(name):
            raise error("PERMISSION_DENIED", f"API key {self.key_id} may call only {', '.join(self.algorithms)}, "
                        f"not {name}", permission=f"key:algorithms:{name}")

    def owns(self, name: str) -> bool:
        """May manage (publish, scale) the algorithm ``name``."""
        return self.admin or name.split("/", 1)[0] == self.owner

    def check_owns(self, name: str, action: str) -> None:
        if not self.owns(name):
            raise error("PERMISSION_DENIED", f"API key {self.key_id} belongs to {self.owner}; it may not {action} "
                        f"{name} (owned by {name.split('/', 1)[0]}); use that owner's key or an admin key",
                        permission=f"owner:{name.split('/', 1)[0]}")

    def check_admin(self, action: str) -> None:
        if not self.admin:
            raise error("PERMISSION_DENIED", f"only an admin key may {action}; API key {self.key_id} is "
                        f"{self.owner}'s", permission="admin")


ANYONE = Principal(owner="", admin=True)  # --insecure: no keys, nothing checked


def principal_of(record: registry_pb2.ApiKey) -> Principal:
    return Principal(owner=record.owner, admin=record.admin, algorithms=tuple(record.algorithms),
                     pipelines=not record.no_pipelines, key_id=record.id, data=record.data or "read")


def credential_of(metadata) -> str | None:
    """The one ``authorization`` header of a request's metadata; more than one is refused
    (servers that read different ones would disagree about who is calling)."""
    found = [v for k, v in metadata or () if k == "authorization"]
    if len(found) > 1:
        raise error("UNAUTHENTICATED", "send one authorization header, not several")
    return found[0] if found else None


def authenticate(header: str | None, keys: Mapping[str, registry_pb2.ApiKey]) -> Principal:
    """The principal of an ``authorization: Simple <key>`` header, or UNAUTHENTICATED.
    ``keys`` maps key ids to records (the registry view's)."""
    if not header:
        raise error("UNAUTHENTICATED", "no API key: pass one to algomesh.client(KEY), set ALGOMESH_API_KEY, "
                    "or send the header 'authorization: Simple KEY'")
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() not in ("simple", "bearer"):
        raise error("UNAUTHENTICATED", "the authorization header must read 'Simple <API key>'")
    m = _KEY.fullmatch(presented.strip())
    record = keys.get(m.group(1)) if m else None
    if record is None or not hmac.compare_digest(_hash(record.salt, m.group(2)), record.hash):
        raise error("UNAUTHENTICATED", "the API key is not valid: mistyped, revoked, or from another mesh")
    return principal_of(record)
