"""Authenticate: the ingress knows who calls before anything else happens.

The client's ``authorization: Simple <key>`` header is checked against the keys in the
control plane's registry view (a salted-hash comparison, microseconds, no store round
trip; a revoked key is refused as soon as the view sees the revocation). The key's
algorithm globs are checked against the target; the principal rides on the call so the
router resolves the key owner's private versions and tells the first stage's sidecar
whose call it is. The header itself goes no further: the router builds fresh metadata.

A key that checked out is remembered (up to ``REMEMBERED`` of them) for as long as the
keys it was checked against stay the same mapping: the view replaces the mapping on every
change of the keys, which forgets them all, so a revocation still takes effect at once.
"""
from __future__ import annotations

from typing import Callable, Mapping

from algomesh._refs import parse_target
from algomesh.registry.keys import ANYONE, Principal, authenticate as verify
from algomesh.v1 import registry_pb2

from .stack import Call, Handler, Layer, Reply


REMEMBERED = 1024  # keys a process keeps checked


def authenticate(keys: Callable[[], Mapping[str, registry_pb2.ApiKey]] | None) -> Layer:
    """``keys()`` returns the current keys by id; ``None`` means ``--insecure``: no keys,
    every caller is anyone (and reaches no private algorithm)."""
    checked: dict[str, Principal] = {}
    against: list = [None]  # the keys mapping ``checked`` holds for

    def principal(credential: str) -> Principal:
        current = keys()
        if current is not against[0]:
            checked.clear()
            against[0] = current
        who = checked.get(credential)
        if who is None:
            who = verify(credential, current)  # UNAUTHENTICATED if it is not a key: never remembered
            if len(checked) >= REMEMBERED:
                checked.clear()
            checked[credential] = who
        return who

    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            credential, call.credential = call.credential, ""
            who = ANYONE if keys is None else principal(credential)
            who.check_call(parse_target(call.target).name)
            call.principal = who
            call.data_access = who.data_grant
            return await inner(call)
        return handle
    return layer
