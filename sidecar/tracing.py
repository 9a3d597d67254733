"""Tracing: one trace per pipeline call, whatever its depth (OpenTelemetry).

Spans, one per hop, each made by the process the hop runs in:

    call owner/name        ingress (SERVER)         the client's call, in the control plane
    owner/name@1.2.3       sidecar inbound (SERVER)  a call arriving at an instance
    apply owner/name@1.2.3 sidecar inbound (INTERNAL) the runner's apply, timed around Runner/Apply
    pipe owner/name        sidecar outbound (CLIENT) a pipe the algorithm made

W3C ``traceparent`` travels in gRPC metadata: from the client (if it sends one) to the
ingress, from every span to the next hop, into the runner with the apply span's, and back
out of the algorithm's own pipes (the runner hands it to the SDK, which sends it with the
pipe; a pipe without one falls back to its call's, found by its token). Runners need no
OpenTelemetry of their own: the sidecar times the apply span, so every language's runner
only forwards the header.

Attributes: ``algomesh.algorithm``, ``algomesh.version`` (resolved), ``algomesh.caller``,
``algomesh.key_owner`` (the client's key's owner, never the key), ``algomesh.cold_start``,
``algomesh.cache_hit`` (answered from the callee's result cache, docs/caching.md),
``algomesh.request_bytes``, ``algomesh.response_bytes``, ``algomesh.error_reason``,
``algomesh.stream`` (a streamed call; its sizes are the bytes that passed). Never payloads or keys.

The request path's spans are algomesh's own lean ones (spans.py: OpenTelemetry API spans
at a fraction of the SDK's cost per span), made by ``span_pipeline``'s tracer; what the
control plane does around a call (an instance start, a Locate) is traced with the SDK
(``tracer_provider``), as children of whichever span is current.

Export: the control plane keeps every span itself (SQLite, see
traces.py); sidecars send theirs there over OTLP on the mesh port (mTLS). When the standard
OpenTelemetry variables name a collector (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), spans also go there; ``OTEL_TRACES_SAMPLER``/``_ARG``
and ``OTEL_BSP_*`` apply as usual, ``OTEL_SERVICE_NAME`` names the control plane's service
(``algomesh-ingress`` by default; sidecars are named ``owner/name@version``).
"""
from __future__ import annotations

import os
from typing import Callable

from opentelemetry import context as context_api
from opentelemetry.trace import (NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags,
                                 set_span_in_context)

from algomesh import _wire
from algomesh._errors import AlgomeshError

from .spans import Tracer, parse_header
from .stack import Call, Handler, Layer, Reply

TRACEPARENT = "traceparent"


def parse_traceparent(value: str):
    """The parent context a ``traceparent`` header names, or None (absent or malformed):
    for SDK spans (the control plane's own, around what it does for a call)."""
    parsed = parse_header(value)
    if parsed is None:
        return None
    tid, sid, sampled = parsed
    ctx = SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(1 if sampled else 0))
    return set_span_in_context(NonRecordingSpan(ctx))


def traceparent(span) -> str:
    """The ``traceparent`` of any OpenTelemetry span."""
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"


def traced(tracer: Tracer, kind: SpanKind, name: Callable[[Call], str],
           attributes: Callable[[Call], dict], *, tell_trace_id: bool = False, current: bool = False) -> Layer:
    """A span around the rest of the stack. The call's ``traceparent`` is its parent, and
    becomes the span's own for the hops inside. ``tell_trace_id``: the reply (or error)
    names the trace (the ingress does, so users go from a result to its trace), and the
    reply carries the span's ``traceparent``, which the SDK sends with a call chained onto
    this one: ``b.pipe(a.pipe(x))`` is one trace. ``current``: the span is also OpenTelemetry's
    current span while the rest runs, for what routing does off the call's path (a Locate
    that carries the trace, an instance start that joins it); only routing stacks need it."""
    start = tracer.start

    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            span = start(name(call), call.traceparent, kind, attributes(call))
            call.traceparent = span.header
            token = context_api.attach(set_span_in_context(span)) if current else None
            try:
                reply = await inner(call)
            except AlgomeshError as exc:
                span.set_attribute("algomesh.error_reason", exc.reason)
                span.set_status(StatusCode.ERROR, exc.reason)
                if tell_trace_id:
                    exc.metadata.setdefault("trace_id", f"{span.trace_id:032x}")
                span.end()
                raise
            except BaseException as exc:
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.end()
                raise
            finally:
                if token is not None:
                    context_api.detach(token)
            if span.sampled:
                attrs = span.attributes
                if call.stream is not None:  # a stream's sizes are known at its end (streaming.py)
                    attrs["algomesh.stream"] = True
                    attrs["algomesh.request_bytes"] = call.stream.received
                    attrs["algomesh.response_bytes"] = call.stream.sent
                else:
                    attrs["algomesh.response_bytes"] = len(reply.body)
                for key, value in reply.trailing:
                    if key == _wire.VERSION_KEY:
                        attrs["algomesh.version"] = value
                    elif key == _wire.COLD_START_KEY:
                        attrs["algomesh.cold_start"] = value == "1"
                    elif key == _wire.CACHE_HIT_KEY:
                        attrs["algomesh.cache_hit"] = value == "1"
            span.end()
            if tell_trace_id:  # and the span's context: a chained call joins this trace
                # a new list: the handler below may answer with a list it shares between calls
                reply.trailing = [*reply.trailing, (_wire.TRACE_ID_KEY, f"{span.trace_id:032x}"),
                                  (_wire.TRACEPARENT_KEY, call.traceparent)]
            return reply
        return handle
    return layer


def span_pipeline(service: str, destinations, *, named_by_env: bool = False):
    """This process's request-path tracer (spans.py) and where its spans go (span_export.py):
    ``destinations`` (where algomesh keeps its spans) plus an OTLP collector when the
    environment names one. ``named_by_env``: ``OTEL_SERVICE_NAME`` renames this process's
    service (the control plane's); a sidecar is always named after its algorithm and version."""
    from .span_export import SpanPipeline

    return SpanPipeline(service_name(service, named_by_env), destinations)


def tracer_provider(service: str, *, exporters=(), named_by_env: bool = False):
    """An OpenTelemetry SDK provider, for the control plane's spans off the request path
    (instance starts, Locate): ``exporters`` (where algomesh keeps its spans) plus an
    OTLP exporter configured from the environment when it names a collector.
    ``named_by_env``: ``OTEL_SERVICE_NAME`` renames this process's service (the control
    plane's); a sidecar is always named after its algorithm and version."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .span_export import otlp_exporter_from_env

    resource = Resource.create({"service.name": service_name(service, named_by_env)})
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    delay = float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "500"))  # ms; OTel's default is 5000
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    if (collector := otlp_exporter_from_env()) is not None:
        provider.add_span_processor(BatchSpanProcessor(collector))
    return provider


def service_name(service: str, named_by_env: bool) -> str:
    """``service``, or ``OTEL_SERVICE_NAME`` where the process may be renamed (the control plane)."""
    return (os.environ.get("OTEL_SERVICE_NAME") if named_by_env else None) or service
