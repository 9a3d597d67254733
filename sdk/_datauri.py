"""``data://OWNER/COLLECTION/PATH`` references to the control plane's blob store.

One grammar for the SDK, the sidecars and the store (docs/data.md): OWNER is an owner's
name (as in ``owner/name``) or ``.my``, the caller's own owner; COLLECTION a folder under
it; PATH one or more ``/``-separated segments. Segments are 1-255 bytes of anything but
``/`` and NUL, and never ``.`` or ``..``, so a URI can only ever name a file under its
owner's folder.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from ._errors import error

SCHEME = "data://"
MY = ".my"
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_URI = 1024


class DataUri(NamedTuple):
    owner: str          # an owner, or ".my" until the store resolves it
    collection: str     # "" for data://owner
    path: str           # "" for data://owner/collection; may end with "/" as a list prefix

    def __str__(self) -> str:
        return SCHEME + "/".join(p for p in (self.owner, self.collection, self.path) if p)

    @property
    def is_object(self) -> bool:
        return bool(self.path) and not self.path.endswith("/")

    def resolved(self, owner: str) -> "DataUri":
        """``.my`` replaced by ``owner``."""
        return self._replace(owner=owner) if self.owner == MY else self


def _segment_ok(seg: str) -> bool:
    return 0 < len(seg.encode("utf-8", "surrogatepass")) <= 255 and seg not in (".", "..") and "\x00" not in seg


def parse_data_uri(uri: str, *, want_object: bool = False) -> DataUri:
    """Split and check a data:// URI; INVALID_DATA_URI otherwise. ``want_object``: it must
    name an object (owner, collection and a path), not a collection or a prefix."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise error("INVALID_DATA_URI", f"{uri!r} is not a data:// URI: use data://owner/collection/path")
    if len(uri) > MAX_URI:
        raise error("INVALID_DATA_URI", f"a data:// URI is at most {MAX_URI} characters, not {len(uri)}")
    rest = uri[len(SCHEME):]
    owner, _, after = rest.partition("/")
    collection, _, path = after.partition("/")
    if not (owner == MY or _OWNER.match(owner)):
        raise error("INVALID_DATA_URI", f"{uri!r}: {owner!r} is not an owner (letters, digits, _ . -, or .my)")
    if after and not (_segment_ok(collection) and collection not in (MY,)):
        raise error("INVALID_DATA_URI", f"{uri!r}: {collection!r} is not a collection name")
    segments = path.split("/") if path else []
    body = segments[:-1] if path.endswith("/") else segments
    if not all(_segment_ok(s) for s in body):
        raise error("INVALID_DATA_URI", f"{uri!r}: path segments are 1-255 bytes, and never '.' or '..'")
    parsed = DataUri(owner, collection, path)
    if want_object and not parsed.is_object:
        raise error("INVALID_DATA_URI", f"{uri!r} names a collection or folder, not an object: "
                    "use data://owner/collection/path")
    return parsed
