"""The request path: one typed input, one handler type, and the stacks read top-down.

A ``Handler`` takes a ``Call`` and returns a ``Reply`` or raises an ``AlgomeshError``.
A layer is a function ``Handler -> Handler``. ``build`` applies layers so that the
first listed is the outermost, and each stack below reads top-down in one place:

    inbound   rescue -> measure -> trace -> deadline -> may_answer -> payload_limit -> cache -> load_shed
                     -> trace(apply) -> track -> runner
              (other sidecars -> my algorithm)
    outbound  rescue -> measure -> may_pipe -> lineage -> trace -> deadline -> payload_limit -> route
              (my algorithm's pipes -> the mesh)
    ingress   rescue -> measure -> authenticate -> trace -> deadline -> payload_limit -> route
              (clients -> the mesh)

A streamed call (Mesh/CallStream) is the same ``Call`` with ``stream`` set and an empty
body, through the same stacks: its chunks pass through the terminal handler while every
layer around it waits, so each layer sees the whole stream as one call (streaming.py).
``payload_limit`` counts a stream's bytes as they pass instead; the result cache skips it.

The result cache (cache.py, deterministic algorithms only) sits in the callee's inbound
stack, so every caller shares it and a hit still passes the permission and limit layers.
The body is the serialized CallRequest; no layer decodes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from algomesh._refs import parse_target
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

if TYPE_CHECKING:
    from algomesh.registry.keys import Principal

    from .streaming import Chunks


@dataclass(slots=True)
class Call:
    body: bytes                                    # serialized CallRequest, never decoded here
    target: str                                    # owner/name[/version]; "" for my own algorithm
    deadline: float                                # absolute, time.monotonic() seconds
    caller: str = ""                               # owner/name@version of a calling algorithm
    path: tuple[str, ...] = ()                     # the pipeline so far (see lineage.py)
    token: str = ""                                # the call this pipe belongs to (lineage.py)
    credential: str = ""                           # ingress: the authorization header, until auth reads it
    principal: "Principal | None" = None           # the client (API key) the call runs for, if known
    traceparent: str = ""                          # W3C trace context: the parent, then each span's own
    cache: bool = True                             # False: algomesh-cache: off, bypass result caches
    data_access: str = ""                          # OWNER:SCOPE of the client's key, hop to hop (blobs.py)
    stream: "Chunks | None" = None                 # a streamed call: its chunks both ways (body is b"")


@dataclass(slots=True)
class Reply:
    body: bytes                                    # serialized CallResponse (b"" for a stream: sent as chunks)
    trailing: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Call], Awaitable[Reply]]
Layer = Callable[[Handler], Handler]


def build(layers: Sequence[Layer], terminal: Handler) -> Handler:
    """Wrap ``terminal`` in ``layers``; the first listed is the outermost."""
    handler = terminal
    for layer in reversed(layers):
        handler = layer(handler)
    return handler


def inbound_stack(runner: Handler, *, contexts, me: str, max_payload: int, max_in_flight: int,
                  permit: Layer, tracer, metrics, cache=None, max_stream: int | None = None) -> Handler:
    from .cache import result_cache
    from .deadline import deadline
    from .limits import load_shed, payload_limit
    from .lineage import track
    from .measure import measured
    from .rescue import rescue
    from .tracing import SpanKind, traced

    def attributes(call: Call) -> dict:
        name, _, version = me.rpartition("@")
        return {"algomesh.algorithm": name, "algomesh.version": version,
                "algomesh.caller": call.caller or "client", "algomesh.request_bytes": len(call.body)}

    return build([rescue, measured(metrics, "inbound", me),
                  traced(tracer, SpanKind.SERVER, lambda _c: me, attributes), deadline, permit,
                  payload_limit(max_payload, max_stream), result_cache(cache), load_shed(max_in_flight),
                  traced(tracer, SpanKind.INTERNAL, lambda _c: f"apply {me}", lambda _c: {}),
                  track(contexts, me)], runner)


def outbound_stack(route: Handler, *, contexts, me: str, max_payload: int, max_depth: int,
                   permit: Layer, tracer, metrics, max_stream: int | None = None) -> Handler:
    from .deadline import deadline
    from .limits import payload_limit
    from .lineage import lineage
    from .measure import measured
    from .rescue import rescue
    from .tracing import SpanKind, traced

    def attributes(call: Call) -> dict:
        return {"algomesh.algorithm": parse_target(call.target).name, "algomesh.caller": me,
                "algomesh.request_bytes": len(call.body)}

    return build([rescue, measured(metrics, "outbound"), permit, lineage(contexts, me, max_depth),
                  traced(tracer, SpanKind.CLIENT, lambda c: f"pipe {c.target}", attributes, current=True),
                  deadline, payload_limit(max_payload, max_stream)], route)


def ingress_stack(route: Handler, *, max_payload: int, authenticate: Layer, tracer, metrics,
                  max_stream: int | None = None, surface: str = "ingress") -> Handler:
    """Clients' calls: through the ingress to any algorithm, or (``surface="direct"``)
    straight to one instance's sidecar, whose own inbound stack is then ``route``."""
    from .deadline import deadline
    from .limits import payload_limit
    from .measure import measured
    from .rescue import rescue
    from .tracing import SpanKind, traced

    def attributes(call: Call) -> dict:
        attrs = {"algomesh.algorithm": parse_target(call.target).name, "algomesh.caller": "client",
                 "algomesh.request_bytes": len(call.body)}
        if call.principal is not None and call.principal.owner:
            attrs["algomesh.key_owner"] = call.principal.owner
        return attrs

    # Straight to an instance, ``route`` is its inbound stack, which holds the call to its
    # deadline and its payload to the limit itself: once is enough.
    limits = [] if surface == "direct" else [deadline, payload_limit(max_payload, max_stream)]
    return build([rescue, measured(metrics, surface), authenticate,
                  traced(tracer, SpanKind.SERVER, lambda c: f"call {c.target}", attributes, tell_trace_id=True,
                         current=True),
                  *limits], route)
