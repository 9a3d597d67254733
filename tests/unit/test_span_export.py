"""sidecar/span_export.py encodes spans as the OpenTelemetry SDK's OTLP encoder does."""
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, Link

from algomesh.sidecar.span_export import encode


def _spans():
    kept = []

    class Keep(SpanExporter):
        def export(self, spans):
            kept.extend(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "a/b@1.0.0"}))
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    tracer = provider.get_tracer("algomesh")
    with tracer.start_as_current_span("call a/b", kind=SpanKind.SERVER,
                                      attributes={"algomesh.algorithm": "a/b", "n": 3, "x": 1.5, "ok": True,
                                                  "tags": ["p", "q"]}) as root:
        child = tracer.start_span("apply a/b@1.0.0", links=[Link(root.get_span_context(), {"why": "test"})])
        child.add_event("note", {"k": "v"})
        child.set_status(Status(StatusCode.ERROR, "ALGORITHM_ERROR"))
        child.end()
        tracer.start_span("pipe c/d", kind=SpanKind.CLIENT).end()
    return kept


def test_the_same_request_as_the_sdks_encoder():
    spans = _spans()
    ours, theirs = encode(spans), encode_spans(spans)
    assert len(ours.resource_spans) == len(theirs.resource_spans) == 1
    a, b = ours.resource_spans[0], theirs.resource_spans[0]
    assert {kv.key: kv.value for kv in a.resource.attributes} == {kv.key: kv.value for kv in b.resource.attributes}
    sa, sb = a.scope_spans[0], b.scope_spans[0]
    assert sa.scope.name == sb.scope.name == "algomesh"
    for x, y in zip(sorted(sa.spans, key=lambda s: s.name), sorted(sb.spans, key=lambda s: s.name), strict=True):
        y.ClearField("flags")  # the SDK's encoder also sends W3C trace flags; the collector does not read them
        for link in y.links:
            link.ClearField("flags")
        x.ClearField("flags")
        assert x == y, (x, y)
