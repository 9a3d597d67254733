"""The call an algorithm is serving, as its runner tells it. Pipes made while serving it
carry these request headers back to the sidecar: ``algomesh-call`` (its token: the
sidecar then knows the pipeline's path and deadline) and W3C ``traceparent`` /
``tracestate`` (so the pipe joins the call's trace). Runners in every language forward the
same headers from ``Apply`` to the algorithm's pipes. Empty outside an algorithm."""
from __future__ import annotations

from contextvars import ContextVar

FORWARDED = ("algomesh-call", "traceparent", "tracestate")
CALL_CONTEXT: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("algomesh_call_context", default=())


def forwarded(metadata) -> tuple[tuple[str, str], ...]:
    """The headers of an Apply request that the algorithm's pipes pass on."""
    return tuple((k, v) for k, v in metadata or () if k in FORWARDED)
