"""Lineage: which pipeline a call belongs to, so pipelines cannot run away.

Inbound, ``track`` gives each call a random token, remembered with the call's path (the
algorithms it passed through, this one last) and deadline while the call runs; the
runner hands the token to the algorithm, whose pipes carry it back out
(``algomesh-call``). Outbound, ``lineage`` looks the token up: the pipe inherits the path
and ends a little before its caller's deadline (10 % of what remains, at most 250 ms,
kept back so the caller can answer): the deadline shrinks along the pipeline.
A token is only a reference, so a runner can drop it but not forge a path, and a pipe that
drops it is held to the strictest call running (``Contexts.get``).

A call made with an API key created ``--no-pipelines`` may not pipe at all
(PERMISSION_DENIED, permission ``key:pipelines``). Refused, with the path named: a pipe deeper than ``max_depth`` algorithms
(CALL_DEPTH_EXCEEDED), and a cycle through other algorithms, A -> B -> A (CALL_CYCLE). An
algorithm calling itself directly (a splitter recursing on segments) is not a cycle; the
depth limit bounds it.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from algomesh._errors import error
from algomesh._refs import parse_target

from .stack import Call, Handler, Layer, Reply

DEFAULT_MAX_DEPTH = 32
MARGIN = 0.25  # seconds at most kept back from a caller's deadline for the caller to answer


@dataclass(frozen=True, slots=True)
class Context:
    path: tuple[str, ...]   # owner/name@version of every algorithm so far, this one last
    deadline: float
    pipelines: bool = True  # False: the client's API key forbids pipes (keys create --no-pipelines)
    traceparent: str = ""   # the call's trace context, for pipes that do not send their own
    data_access: str = ""   # OWNER:SCOPE of the API key the call runs for (data:// access, blobs.py)


class Contexts:
    """The calls running in this sidecar's algorithm, by token."""

    def __init__(self) -> None:
        self._by_token: dict[str, Context] = {}

    def get(self, token: str) -> Context | None:
        """The call a pipe belongs to. A pipe without a known token (made from a thread the
        algorithm started, say) belongs to whatever is running: the one call in flight, or,
        with several, the strictest of them (the longest path, the earliest deadline, no
        pipelines if any forbids them), so dropping the token loosens nothing."""
        found = self._by_token.get(token) if token else None
        if found is not None or not self._by_token:
            return found
        running = list(self._by_token.values())
        if len(running) == 1:
            return running[0]
        grants = {c.data_access for c in running}
        return Context(max((c.path for c in running), key=len), min(c.deadline for c in running),
                       all(c.pipelines for c in running), "",
                       grants.pop() if len(grants) == 1 else "")  # (no trace: which call is it part of?)


def track(contexts: Contexts, me: str) -> Layer:
    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            token = secrets.token_hex(12)
            contexts._by_token[token] = Context((*call.path, me), call.deadline,
                                                call.principal is None or call.principal.pipelines,
                                                call.traceparent, call.data_access)
            call.token = token
            try:
                return await inner(call)
            finally:
                del contexts._by_token[token]
        return handle
    return layer


def _show(path: tuple[str, ...]) -> str:
    return " -> ".join(path)


def lineage(contexts: Contexts, me: str, max_depth: int = DEFAULT_MAX_DEPTH) -> Layer:
    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            ctx = contexts.get(call.token)
            path = ctx.path if ctx is not None else (me,)
            if ctx is not None:
                # A pipe ends a little before its caller's deadline, so the caller can still
                # handle the failure and answer in time.
                left = ctx.deadline - time.monotonic()
                inherited = ctx.deadline - min(MARGIN, 0.1 * max(left, 0.0))
                call.deadline = min(call.deadline, inherited)
            target = parse_target(call.target).name
            if ctx is not None and not ctx.pipelines:
                raise error("PERMISSION_DENIED", f"{me} may not pipe to {target}: the API key that called it "
                            "does not allow pipelines (it was created with --no-pipelines)",
                            permission="key:pipelines")
            if len(path) >= max_depth:
                raise error("CALL_DEPTH_EXCEEDED", f"piping to {target} would make the pipeline "
                            f"{len(path) + 1} algorithms deep; the limit is {max_depth}: "
                            f"{_show(path[:3])} -> ... -> {_show(path[-2:])}", limit=str(max_depth))
            names = [p.rsplit("@", 1)[0] for p in path]
            if target in names and names[-1] != target:
                start = names.index(target)
                raise error("CALL_CYCLE", f"the pipeline would loop: {_show(path[start:])} -> {target}",
                            path=_show((*path, target)))
            call.path = path
            if not call.traceparent and ctx is not None:
                call.traceparent = ctx.traceparent
            call.data_access = ctx.data_access if ctx is not None else ""  # never the runner's own word
            return await inner(call)
        return handle
    return layer
