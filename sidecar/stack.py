"""The request path: one typed input, one handler type, and the stacks read top-down.

A ``Handler`` takes a ``Call`` and returns a ``Reply`` or raises an ``AlgomeshError``.
A layer is a function ``Handler -> Handler``. ``build`` applies layers so that the
first listed is the outermost, and each stack below reads top-down in one place:

    inbound   rescue -> deadline -> may_answer -> payload_limit -> load_shed -> track -> runner
              (other sidecars -> my algorithm)
    outbound  rescue -> may_pipe -> lineage -> deadline -> payload_limit -> route
              (my algorithm's pipes -> the mesh)
    ingress   rescue -> authenticate -> deadline -> payload_limit -> route
              (clients -> the mesh)

(auth, tracing, load-shed and cache slot in here as they land; see DESIGN.md.)
The body is the serialized CallRequest; no layer decodes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

if TYPE_CHECKING:
    from algomesh.registry.keys import Principal


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


@dataclass(slots=True)
class Reply:
    body: bytes                                    # serialized CallResponse
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
                  permit: Layer) -> Handler:
    from .deadline import deadline
    from .limits import load_shed, payload_limit
    from .lineage import track
    from .rescue import rescue

    return build([rescue, deadline, permit, payload_limit(max_payload), load_shed(max_in_flight),
                  track(contexts, me)], runner)


def outbound_stack(route: Handler, *, contexts, me: str, max_payload: int, max_depth: int,
                   permit: Layer) -> Handler:
    from .deadline import deadline
    from .limits import payload_limit
    from .lineage import lineage
    from .rescue import rescue

    return build([rescue, permit, lineage(contexts, me, max_depth), deadline, payload_limit(max_payload)], route)


def ingress_stack(route: Handler, *, max_payload: int, authenticate: Layer) -> Handler:
    from .deadline import deadline
    from .limits import payload_limit
    from .rescue import rescue

    return build([rescue, authenticate, deadline, payload_limit(max_payload)], route)
