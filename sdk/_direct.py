"""Direct routing: the client calls an algorithm's instances straight, not through the ingress.

``algomesh.client(key, direct=True)`` (or ``ALGOMESH_DIRECT=1``). A call to a target the
client has no route for yet goes through the ingress as usual, and meanwhile a background
``Registry.Locate`` asks where the target runs: its exact version, its instances'
``client_address`` and the mesh CA that signed their certificates. From then on calls go to
those instances over TLS (checked against that CA), with the API key, which each sidecar
verifies itself (docs/sdk.md): one process hop fewer per call. Routes are refreshed in the
background every few seconds; a call whose instance went away before it saw the call
(connection refused, INSTANCE_UNAVAILABLE) is sent again through the ingress, and the route
is looked up again. Streamed calls go straight too, and are sent again through the ingress
on the same condition while what they sent so far is still held (``_stream.Replay``).
Inside an algorithm (an address on a Unix socket) there is no direct
routing: pipes go through the algorithm's own sidecar.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from algomesh.v1 import registry_pb2, registry_pb2_grpc

from . import _wire
from ._errors import AlgomeshError
from ._refs import Target

TTL = 5.0            # seconds a route is used before it is looked up again (in the background)
RETRY_AFTER = 5.0    # seconds before a failed lookup is tried again (calls use the ingress meanwhile)
TLS_NAME = "mesh.algomesh"  # the name every mesh certificate carries for TLS (meshtls.py)


@dataclass
class Route:
    exact: str                       # owner/name/version
    addresses: tuple[str, ...]       # the instances' client_address
    ca: bytes                        # the mesh CA's PEM (empty: an --insecure mesh)
    until: float                     # time.monotonic() after which it is refreshed


def went_away(exc: AlgomeshError) -> bool:
    """The instance was gone before it saw the call: safe to send it again elsewhere."""
    return exc.reason in ("INSTANCE_UNAVAILABLE", "MESH_UNAVAILABLE")


class Routes:
    """Where each target's instances take clients' calls, for one client; and per instance
    its ``Mesh/Call`` and ``Mesh/CallStream`` multicallables, on one channel made by
    ``channel(address, ca)`` (sync or asyncio)."""

    def __init__(self, address: str, api_key: str | None, channel: Callable[[str, bytes], Any]) -> None:
        # lookups run in background threads, on a blocking channel of their own
        self._registry_channel = grpc.insecure_channel(address, options=_wire.CLIENT_CHANNEL_OPTIONS)
        self._registry = registry_pb2_grpc.RegistryStub(self._registry_channel)
        self._auth = ((_wire.AUTH_KEY, f"Simple {api_key}"),) if api_key else ()
        self._channel = channel
        self._routes: dict[str, Route] = {}
        self._looking: dict[str, float] = {}  # target -> when its lookup started (or failed)
        self._calls: dict[str, tuple[Any, Any]] = {}  # address -> (unary, stream) multicallables
        self._open: list[Any] = []
        self._lock = threading.Lock()

    def lookup(self, target: Target, stream: bool = False) -> tuple[str, Any] | None:
        """(exact target, multicallable) for a direct call, or None: use the ingress.
        ``stream``: the instance's ``Mesh/CallStream``, not ``Mesh/Call``. Call it where
        the multicallable will be used (an asyncio one: in the loop)."""
        key = str(target)
        route = self._routes.get(key)
        now = time.monotonic()
        if route is None or route.until < now:
            self._refresh(key, now)
        if route is None or not route.addresses:
            return None
        address = random.choice(route.addresses)
        calls = self._calls.get(address)
        if calls is None:
            channel = self._channel(address, route.ca)
            self._open.append(channel)
            calls = self._calls[address] = (channel.unary_unary(_wire.CALL_METHOD),
                                            channel.stream_stream(_wire.CALL_STREAM_METHOD))
        return route.exact, calls[stream]

    def drop(self, target: Target) -> None:
        self._routes.pop(str(target), None)

    def _refresh(self, key: str, now: float) -> None:
        with self._lock:
            started = self._looking.get(key)
            if started is not None and now - started < RETRY_AFTER:
                return
            self._looking[key] = now
        threading.Thread(target=self._locate, args=(key,), daemon=True, name="algomesh-route").start()

    def _locate(self, key: str) -> None:
        try:
            resp = self._registry.Locate(registry_pb2.LocateRequest(target=key), metadata=self._auth, timeout=60)
        except grpc.RpcError:
            self._routes.pop(key, None)
            return  # _looking stays set: the next lookup waits RETRY_AFTER; calls use the ingress meanwhile
        except ValueError:  # the client was closed meanwhile
            return
        m = resp.version.manifest
        addresses = tuple(i.client_address for i in resp.instances if i.client_address)
        self._routes[key] = Route(f"{m.name}/{m.version}", addresses, resp.mesh_ca.encode(), time.monotonic() + TTL)
        with self._lock:
            self._looking.pop(key, None)

    def opened(self) -> list[Any]:
        """The instances' channels (to close with the client), forgotten here."""
        out, self._open = self._open, []
        self._calls.clear()
        self._registry_channel.close()
        return out


def sync_channel(address: str, ca: bytes) -> grpc.Channel:
    if not ca:  # an --insecure mesh
        return grpc.insecure_channel(address, options=_wire.CLIENT_CHANNEL_OPTIONS)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca),
                               options=_wire.CLIENT_CHANNEL_OPTIONS + (("grpc.ssl_target_name_override", TLS_NAME),))


def aio_channel(address: str, ca: bytes) -> grpc.aio.Channel:
    if not ca:
        return grpc.aio.insecure_channel(address, options=_wire.CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca),
                                   options=_wire.CHANNEL_OPTIONS + (("grpc.ssl_target_name_override", TLS_NAME),))
