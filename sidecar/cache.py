"""Result cache: a deterministic algorithm answers the same request once.

An algorithm whose manifest says ``deterministic = true`` promises that the same request
gives the same response. Its sidecar then keeps its responses, in the inbound stack after
the permission and limit layers and before the runner:

    key      SHA-256 of the request's bytes (the serialized CallRequest: the input's bytes,
             its content type, capture_stdout), in this instance's cache, so per exact
             (algorithm, version); every caller (the ingress, any pipeline) shares it
    hit      the kept response bytes and trailers, plus ``algomesh-cache-hit: 1``; the
             runner is not called (no apply span); the layers outside it still run, so
             permissions, deadlines and payload limits apply to a hit as to a miss
    bound    ``max_bytes`` per instance (default 64 MiB, ``--cache-mb``), least recently
             used evicted first; a response over an eighth of the bound is not kept
    errors   never kept
    bypass   ``algomesh-cache: off`` (``set_options(cache=False)`` in the SDK): neither
             read nor written
    flight   identical calls arriving while the first is still computing wait for it and
             share its response (marked as hits); if it fails they compute for themselves

A call made with an API key that forbids pipelines is cached apart from the others: its
own answer may be PERMISSION_DENIED (not cached) where another key's is a result.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict

from algomesh import _wire
from algomesh._errors import error

from .stack import Call, Handler, Layer, Reply

DEFAULT_CACHE_MB = 64.0
ENV_CACHE_MB = "ALGOMESH_CACHE_MB"  # the launchers' default for --cache-mb (docs/caching.md)
ENTRY_OVERHEAD = 256     # bytes counted per entry besides its body and trailers (key, bookkeeping)
MAX_ENTRY_SHARE = 8      # an entry may use at most 1/8 of the bound

Trailing = tuple[tuple[str, str], ...]
HIT = (_wire.CACHE_HIT_KEY, "1")


def cache_mb(value: str | float | None) -> float:
    """A cache bound in MiB (``--cache-mb``, ``$ALGOMESH_CACHE_MB``); 0 turns caching off."""
    if value is None or value == "":
        return DEFAULT_CACHE_MB
    try:
        mb = float(value)
    except (TypeError, ValueError):
        mb = -1.0
    if not 0 <= mb <= 1 << 20:
        raise error("INVALID_INPUT", f"the result cache's size (${ENV_CACHE_MB}, --cache-mb) must be a number "
                    f"of MiB between 0 and 1048576, not {value!r}")
    return mb


def entry_size(body: bytes, trailing: Trailing) -> int:
    return len(body) + sum(len(k) + len(v) for k, v in trailing) + ENTRY_OVERHEAD


class ResultCache:
    """Responses by request digest, bounded by bytes, least recently used evicted first."""

    def __init__(self, max_bytes: int, *, max_entry: int | None = None) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.max_entry = max_bytes // MAX_ENTRY_SHARE if max_entry is None else min(max_entry, max_bytes)
        self.bytes = 0          # what the entries count, always <= max_bytes
        self.evictions = 0
        self._entries: OrderedDict[bytes, tuple[bytes, Trailing]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> tuple[bytes, Trailing] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: bytes, body: bytes, trailing: Trailing) -> bool:
        """Keep a response; False if it is too large to keep (over ``max_entry``)."""
        size = entry_size(body, trailing)
        if size > self.max_entry:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= entry_size(*old)
        self._entries[key] = (body, trailing)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= entry_size(*evicted)
            self.evictions += 1
        return True


def request_key(call: Call) -> bytes:
    """The digest a call's response is kept under (see the module docstring)."""
    h = hashlib.sha256(b"p0" if call.principal is not None and not call.principal.pipelines else b"p1")
    h.update(call.body)
    return h.digest()


def refers_to_data(body: bytes) -> bool:
    """Is the call's input a data:// reference? Its bytes name an object whose contents
    may change under the same name, so its answer is not kept. Read from the serialized
    CallRequest's first bytes (``input``, field 1, then its ``content_type``, field 1,
    equal to CONTENT_TYPE_DATA_REF), in the field order every protobuf encoder writes,
    without decoding the body."""
    if len(body) < 4 or body[0] != 0x0A:
        return False
    i = 1
    while i < len(body) and body[i] & 0x80:  # the input's length, a varint
        i += 1
    return body[i + 1:i + 3] == b"\x08\x04"


def _through(inner: Handler) -> Handler:
    return inner


def result_cache(cache: ResultCache | None) -> Layer:
    """The layer; ``None`` (an algorithm not declared deterministic, or a zero bound) is no layer."""
    if cache is None or cache.max_bytes == 0:
        return _through

    def layer(inner: Handler) -> Handler:
        flights: dict[bytes, asyncio.Future[tuple[bytes, Trailing] | None]] = {}

        async def handle(call: Call) -> Reply:
            if not call.cache or call.stream is not None or refers_to_data(call.body):
                # a stream is never kept (nor whole); a data:// reference's object can change
                return await inner(call)
            key = request_key(call)
            while True:
                found = cache.get(key)
                if found is None:
                    flight = flights.get(key)
                    if flight is None:
                        break
                    # shield: this caller giving up (its deadline) must not cancel the first one's call
                    found = await asyncio.shield(flight)
                    if found is None:
                        continue  # the first call failed: errors are not shared; compute (or wait) again
                body, trailing = found
                return Reply(body, [*trailing, HIT])

            flight = asyncio.get_running_loop().create_future()
            flights[key] = flight
            outcome = None
            try:
                reply = await inner(call)
                outcome = (reply.body, tuple(reply.trailing))
                cache.put(key, *outcome)
                return reply
            finally:
                del flights[key]
                flight.set_result(outcome)
        return handle
    return layer
