"""Spans from a sidecar to the control plane's collector, cheaply.

The same OTLP ``TraceService/Export`` request the SDK's OTLP exporter sends (the collector,
traces.py, and any OTLP receiver read it alike), encoded here: algomesh's spans carry a few
string, number and boolean attributes, and building the protobuf message straight from
them costs about a third of the SDK's generic encoder (14 against 45 µs a span, measured
for the spans a hop makes). A sidecar exports a few spans per call, on the batch span
processor's thread, so this is CPU taken from every call.
"""
from __future__ import annotations

import logging
from typing import Sequence

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("algomesh.span_export")

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


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


def _attributes(target, attributes) -> None:
    for key, v in (attributes or {}).items():
        _value(target.add(key=key).value, v)


def encode(spans: Sequence[ReadableSpan]) -> trace_service_pb2.ExportTraceServiceRequest:
    """The OTLP request for ``spans``, grouped by resource and instrumentation scope."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    groups: dict[int, tuple] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        key = (id(resource), scope.name if scope is not None else "")
        group = groups.get(key)
        if group is None:
            rs = request.resource_spans.add()
            _attributes(rs.resource.attributes, resource.attributes)
            ss = rs.scope_spans.add()
            if scope is not None:
                ss.scope.name, ss.scope.version = scope.name, scope.version or ""
            group = groups[key] = (ss.spans,)
        ctx, parent = span.context, span.parent
        out = group[0].add(trace_id=ctx.trace_id.to_bytes(16, "big"), span_id=ctx.span_id.to_bytes(8, "big"),
                           name=span.name, kind=span.kind.value + 1,  # SDK INTERNAL=0 -> OTLP SPAN_KIND_INTERNAL=1
                           start_time_unix_nano=span.start_time or 0, end_time_unix_nano=span.end_time or 0)
        if ctx.trace_state:
            out.trace_state = ctx.trace_state.to_header()
        if parent is not None:
            out.parent_span_id = parent.span_id.to_bytes(8, "big")
        _attributes(out.attributes, span.attributes)
        for event in span.events:
            e = out.events.add(name=event.name, time_unix_nano=event.timestamp)
            _attributes(e.attributes, event.attributes)
        for link in span.links:
            lk = out.links.add(trace_id=link.context.trace_id.to_bytes(16, "big"),
                               span_id=link.context.span_id.to_bytes(8, "big"))
            _attributes(lk.attributes, link.attributes)
        code = span.status.status_code.value  # UNSET 0, OK 1, ERROR 2: OTLP's numbers too
        out.status.SetInParent()
        if code:
            out.status.code = code
            out.status.message = span.status.description or ""
    return request


class MeshSpanExporter(SpanExporter):
    """Batches of spans to ``channel`` (a blocking channel to the collector)."""

    def __init__(self, channel: grpc.Channel, timeout: float = 10.0) -> None:
        self._channel = channel
        self._export = channel.unary_unary(EXPORT_METHOD)
        self._timeout = timeout

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._export(encode(spans).SerializeToString(), timeout=self._timeout)
        except grpc.RpcError as exc:
            log.warning("could not send %d spans to the collector: %s", len(spans), exc.code().name)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._channel.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
