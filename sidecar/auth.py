"""Authenticate: the ingress knows who calls before anything else happens.

The client's ``authorization: Simple <key>`` header is checked against the keys in the
control plane's registry view (a salted-hash comparison, microseconds, no store round
trip; a revoked key is refused as soon as the view sees the revocation). The key's
algorithm globs are checked against the target; the principal rides on the call so the
router resolves the key owner's private versions and tells the first stage's sidecar
whose call it is. The header itself goes no further: the router builds fresh metadata.
"""
from __future__ import annotations

from typing import Callable, Mapping

from algomesh._refs import parse_target
from algomesh.registry.keys import ANYONE, authenticate as verify
from algomesh.v1 import registry_pb2

from .stack import Call, Handler, Layer, Reply


def authenticate(keys: Callable[[], Mapping[str, registry_pb2.ApiKey]] | None) -> Layer:
    """``keys()`` returns the current keys by id; ``None`` means ``--insecure``: no keys,
    every caller is anyone (and reaches no private algorithm)."""
    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            credential, call.credential = call.credential, ""
            who = ANYONE if keys is None else verify(credential, keys())
            who.check_call(parse_target(call.target).name)
            call.principal = who
            call.data_access = who.data_grant
            return await inner(call)
        return handle
    return layer
