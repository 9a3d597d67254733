"""Where a process's spans go: one OTLP request per batch, encoded here, to each place.

The request is OpenTelemetry's ``TraceService/Export`` message, the one the SDK's OTLP
exporter sends (the control plane's collector, traces.py, and any OTLP receiver read it
alike). It is built straight from algomesh's spans (spans.py): they carry a few string,
number and boolean attributes, and building the message field by field costs about a
third of the SDK's generic encoder. A batch is encoded once, on the batch thread, and
handed to every destination:

- ``MeshSender``: to the control plane's collector over the mesh's mTLS channel (sidecars);
- the control plane's own trace store (``TraceStore.add``, its ingress's spans);
- ``SdkExport``: the SDK's OTLP exporter, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` names a collector (it reads every other
  ``OTEL_EXPORTER_OTLP_*`` variable itself); it is given the spans as SDK ``ReadableSpan``s.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from .spans import Batcher, Span, Tracer

log = logging.getLogger("algomesh.span_export")

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SCOPE = "algomesh"

Request = trace_service_pb2.ExportTraceServiceRequest


def _value(target: common_pb2.AnyValue, v: object) -> None:
    if isinstance(v, bool):
        target.bool_value = v
    elif isinstance(v, int):
        target.int_value = v
    elif isinstance(v, float):
        target.double_value = v
    elif isinstance(v, str):
        target.string_value = v
    elif isinstance(v, (list, tuple)):
        for item in v:
            _value(target.array_value.values.add(), item)
    else:
        target.string_value = str(v)


def _attributes(target, attributes: dict) -> None:
    for key, v in attributes.items():
        _value(target.add(key=key).value, v)


def encode(resource: dict, spans: Sequence[Span]) -> Request:
    """The OTLP request for ``spans``, all of one process (its ``resource`` attributes) and scope."""
    request = Request()
    rs = request.resource_spans.add()
    _attributes(rs.resource.attributes, resource)
    ss = rs.scope_spans.add()
    ss.scope.name = SCOPE
    out_spans = ss.spans
    for span in spans:
        out = out_spans.add(trace_id=span.trace_id.to_bytes(16, "big"), span_id=span.span_id.to_bytes(8, "big"),
                            name=span.name, kind=span.kind.value + 1,  # API INTERNAL=0 -> OTLP SPAN_KIND_INTERNAL=1
                            start_time_unix_nano=span.start_ns, end_time_unix_nano=span.end_ns)
        if span.parent_id:
            out.parent_span_id = span.parent_id.to_bytes(8, "big")
        _attributes(out.attributes, span.attributes)
        for name, when, attributes in span.events:
            _attributes(out.events.add(name=name, time_unix_nano=when).attributes, attributes)
        out.status.SetInParent()
        if code := span.status_code.value:  # UNSET 0, OK 1, ERROR 2: OTLP's numbers too
            out.status.code = code
            out.status.message = span.status_message
    return request


def resource_attributes(service: str) -> dict:
    """What the SDK's ``Resource.create({"service.name": service})`` says of this process."""
    from opentelemetry.sdk.resources import Resource

    return dict(Resource.create({"service.name": service}).attributes)


class MeshSender:
    """Encoded batches to the control plane's collector over ``channel`` (blocking; the batch thread's)."""

    def __init__(self, channel: grpc.Channel, timeout: float = 10.0) -> None:
        self._channel = channel
        self._export = channel.unary_unary(EXPORT_METHOD)
        self._timeout = timeout

    def __call__(self, request: Request, spans: Sequence[Span]) -> None:
        try:
            self._export(request.SerializeToString(), timeout=self._timeout)
        except grpc.RpcError as exc:
            log.warning("could not send %d spans to the collector: %s", len(spans), exc.code().name)

    def close(self) -> None:
        self._channel.close()


class SdkExport:
    """The spans as SDK ``ReadableSpan``s to an SDK exporter (the OTLP one, configured from
    the environment): for collectors algomesh does not speak to itself."""

    def __init__(self, service: str, exporter) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._exporter = exporter
        self._resource = Resource.create({"service.name": service})
        self._scope = InstrumentationScope(SCOPE)

    def __call__(self, request: Request, spans: Sequence[Span]) -> None:
        self._exporter.export(readable(spans, self._resource, self._scope))

    def close(self) -> None:
        self._exporter.shutdown()


def readable(spans: Sequence[Span], resource, scope) -> list:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, Status, TraceFlags

    out = []
    for s in spans:
        parent = (SpanContext(s.trace_id, s.parent_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
                  if s.parent_id else None)
        out.append(ReadableSpan(
            name=s.name, context=s.get_span_context(), parent=parent, resource=resource, attributes=s.attributes,
            events=[Event(name, attributes, when) for name, when, attributes in s.events], kind=s.kind,
            instrumentation_scope=scope, status=Status(s.status_code, s.status_message or None),
            start_time=s.start_ns, end_time=s.end_ns))
    return out


def otlp_exporter_from_env():
    """The SDK's OTLP span exporter when the standard variables name a collector (it reads
    every other ``OTEL_EXPORTER_OTLP_*`` variable itself), else None."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


Destination = Callable[[Request, Sequence[Span]], None]


class SpanPipeline:
    """A process's tracer and what its spans become: batched, encoded once, sent to each
    destination (plus an OTLP collector named by the environment)."""

    def __init__(self, service: str, destinations: Sequence[Destination]) -> None:
        self.service = service
        self._resource = resource_attributes(service)
        self._destinations = list(destinations)
        if (exporter := otlp_exporter_from_env()) is not None:
            self._destinations.append(SdkExport(service, exporter))
        self._batcher = Batcher(self._send)
        self.tracer = Tracer(self._batcher)

    def _send(self, spans: Sequence[Span]) -> None:
        request = encode(self._resource, spans)
        for destination in self._destinations:
            try:
                destination(request, spans)
            except Exception:  # one destination failing must not keep the spans from the others
                log.exception("a span destination failed")

    @property
    def dropped(self) -> int:
        return self._batcher.dropped

    def shutdown(self) -> None:
        """Send what is left, then close every destination."""
        self._batcher.shutdown()
        for destination in self._destinations:
            close = getattr(destination, "close", None)
            if close is not None:
                close()
