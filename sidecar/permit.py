"""Permissions from the manifest: who may pipe to whom.

Out (the caller's sidecar): an algorithm may pipe only to the algorithms its manifest's
``permissions.can_call`` names (globs over owner/name; ``*`` for any; nothing by default).
In (the callee's sidecar), again: the caller's manifest must allow this algorithm, and a
``private`` algorithm answers only its owner's algorithms and its owner's API keys. The
caller's identity is what its sidecar says (``algomesh-caller``); mesh certificates will
make it proven (issue 4, mTLS).
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Callable

from algomesh._errors import error
from algomesh._refs import parse_target
from algomesh.registry.resolve import owner_of
from algomesh.v1 import registry_pb2

from .stack import Call, Handler, Layer, Reply


def allowed(can_call, target: str) -> bool:
    return _allowed(tuple(can_call), target)


@lru_cache(maxsize=4096)  # every call asks again: remember the answers (globs and names are few)
def _allowed(can_call: tuple[str, ...], target: str) -> bool:
    return any(fnmatchcase(target, glob) for glob in can_call)


def may_pipe(me: str, can_call: tuple[str, ...]) -> Layer:
    """Out: refuse pipes the manifest does not allow."""
    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            target = parse_target(call.target).name
            if not allowed(can_call, target):
                raise error("PERMISSION_DENIED",
                            f"{me} may not pipe to {target}: add it to permissions.can_call in its algomesh.toml "
                            f"(now {list(can_call) or 'nothing'})", permission=f"can_call:{target}")
            return await inner(call)
        return handle
    return layer


def may_answer(me: str, callability: str,
               manifest_of: Callable[[str, str], registry_pb2.Manifest | None]) -> Layer:
    """In: refuse callers whose manifest does not allow this algorithm, and strangers of a
    private one. ``manifest_of(name, version)`` reads the registry's view."""
    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            if call.caller:
                name, _, version = call.caller.rpartition("@")
                manifest = manifest_of(name, version)
                if manifest is None or not allowed(manifest.permissions.can_call, me):
                    raise error("PERMISSION_DENIED", f"{call.caller} may not call {me} (its permissions.can_call "
                                "does not include it)", permission=f"can_call:{me}")
                if callability == "private" and owner_of(name) != owner_of(me):
                    raise error("PERMISSION_DENIED", f"{me} is private to {owner_of(me)}; {name} may not call it",
                                permission=f"owner:{owner_of(me)}")
            elif callability == "private" and (call.principal is None or call.principal.owner != owner_of(me)):
                raise error("PERMISSION_DENIED", f"{me} is private to {owner_of(me)}: only its owner's algorithms "
                            "and API keys may call it", permission=f"owner:{owner_of(me)}")
            return await inner(call)
        return handle
    return layer
