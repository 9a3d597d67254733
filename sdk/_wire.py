"""Names that every algomesh process agrees on: metadata keys, method paths, defaults."""
from __future__ import annotations

import os

CALL_METHOD = "/algomesh.v1.Mesh/Call"
DATA_SERVICE = "algomesh.v1.Data"
CALL_STREAM_METHOD = "/algomesh.v1.Mesh/CallStream"

# Request metadata (routing facts travel here so a sidecar never decodes a body).
TARGET_KEY = "algomesh-target"          # owner/name[/version]
AUTH_KEY = "authorization"              # "Simple <api key>"; stripped by the ingress
CALLER_KEY = "algomesh-caller"          # owner/name@version of the calling algorithm
PATH_KEY = "algomesh-path"              # sidecar to sidecar: the pipeline so far, a@1,b@2
CALL_KEY = "algomesh-call"              # sidecar -> runner -> the algorithm's pipes: its call's token
KEY_OWNER_KEY = "algomesh-key-owner"    # ingress -> first stage: the owner of the client's API key
NO_PIPELINES_KEY = "algomesh-no-pipelines"  # ingress -> first stage: "1" if the key forbids pipes
DATA_ACCESS_KEY = "algomesh-data-access"  # OWNER:SCOPE of the API key a call runs for (data:// access, docs/data.md)
CACHE_KEY = "algomesh-cache"            # "off": bypass result caches (read and write); every hop forwards it
# Response trailing metadata.
ALGORITHM_KEY = "algomesh-algorithm"
VERSION_KEY = "algomesh-version"
COLD_START_KEY = "algomesh-cold-start"
CACHE_HIT_KEY = "algomesh-cache-hit"    # "1": answered from the callee's result cache (docs/caching.md)
TRACE_ID_KEY = "algomesh-trace-id"      # the call's trace (from the ingress): `algomesh trace ID`
TRACEPARENT_KEY = "traceparent"         # W3C trace context, on every hop

DEFAULT_PORT = 7700
DEFAULT_ADDRESS = f"localhost:{DEFAULT_PORT}"
DEFAULT_TIMEOUT = 300.0                 # seconds, as Algorithmia's default
MAX_MESSAGE_BYTES = 64 * 1024 * 1024    # transport ceiling; the payload limit is policy (issue 4)

ENV_ADDRESS = "ALGOMESH_ADDRESS"
ENV_API_KEY = "ALGOMESH_API_KEY"
ENV_DIRECT = "ALGOMESH_DIRECT"          # "1": clients call instances straight (sdk/_direct.py)

# HTTP/2 flow control with a fixed window, on every channel and server of the mesh: gRPC's
# bandwidth-delay probing otherwise grows a stream's window to tens of MiB on a fast link,
# and that much of a streamed call (docs/streaming.md) is then buffered in each process it
# passes. A fixed 1 MiB window keeps each direction of each hop to about a MiB and still
# fills a loopback or LAN link (measured: 200 MiB, 256 KiB chunks, as fast as probing).
FLOW_OPTIONS = (
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1 << 20),
)
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
    *FLOW_OPTIONS,
)
# A client's channel to the mesh keeps gRPC's transparent retries: a call the transport
# dropped before any server saw it (a connection reset under it) is sent again instead of
# hanging until its deadline. No retry policy: a call a server saw is never repeated.
CLIENT_CHANNEL_OPTIONS = tuple(o for o in CHANNEL_OPTIONS if o[0] != "grpc.enable_retries") + (
    ("grpc.enable_retries", 1),
)


def resolve_address(address: str | None) -> str:
    """The explicit address, else $ALGOMESH_ADDRESS, else localhost:7700."""
    return address or os.environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS
