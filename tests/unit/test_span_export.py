"""sidecar/spans.py and span_export.py: lean spans, sampled as the SDK would, batched, and
encoded as the OpenTelemetry SDK's OTLP encoder encodes the same spans."""
import threading
import time

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from algomesh.sidecar.span_export import SpanPipeline, encode, readable, resource_attributes
from algomesh.sidecar.spans import Batcher, Sampling, Tracer, parse_header

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _spans():
    kept = []
    tracer = Tracer(kept.append, Sampling("always_on"))
    root = tracer.start("call a/b", "", SpanKind.SERVER, {"algomesh.algorithm": "a/b", "n": 3, "x": 1.5, "ok": True,
                                                          "tags": ["p", "q"]})
    child = tracer.start("apply a/b@1.0.0", root.header)
    child.add_event("note", {"k": "v"})
    child.set_status(Status(StatusCode.ERROR, "ALGORITHM_ERROR"))
    child.end()
    tracer.start("pipe c/d", root.header, SpanKind.CLIENT).end()
    root.set_attribute("algomesh.response_bytes", 7)
    root.end()
    return kept


def test_the_same_request_as_the_sdks_encoder():
    spans = _spans()
    resource = Resource.create({"service.name": "a/b@1.0.0"})
    ours = encode(resource_attributes("a/b@1.0.0"), spans)
    theirs = encode_spans(readable(spans, resource, InstrumentationScope("algomesh")))
    assert len(ours.resource_spans) == len(theirs.resource_spans) == 1
    a, b = ours.resource_spans[0], theirs.resource_spans[0]
    assert {kv.key: kv.value for kv in a.resource.attributes} == {kv.key: kv.value for kv in b.resource.attributes}
    sa, sb = a.scope_spans[0], b.scope_spans[0]
    assert sa.scope.name == sb.scope.name == "algomesh"
    assert len(sa.spans) == 3
    for x, y in zip(sorted(sa.spans, key=lambda s: s.name), sorted(sb.spans, key=lambda s: s.name), strict=True):
        y.ClearField("flags")  # the SDK's encoder also sends W3C trace flags; the collector does not read them
        assert x == y, (x, y)
    by_name = {s.name: s for s in sa.spans}
    assert by_name["apply a/b@1.0.0"].parent_span_id == by_name["call a/b"].span_id
    assert by_name["apply a/b@1.0.0"].status.code == 2 and by_name["apply a/b@1.0.0"].status.message == "ALGORITHM_ERROR"
    assert {kv.key for kv in by_name["call a/b"].attributes} >= {"algomesh.response_bytes", "tags"}


def test_a_child_keeps_its_parents_trace_and_its_header_names_it():
    tracer = Tracer(lambda s: None, Sampling("parentbased_always_on"))
    span = tracer.start("x", PARENT)
    assert f"{span.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_id == 0x00f067aa0ba902b7 and span.span_id not in (0, span.parent_id)
    assert parse_header(span.header) == (span.trace_id, span.span_id, True)
    ctx = span.get_span_context()
    assert ctx.trace_id == span.trace_id and ctx.span_id == span.span_id and ctx.trace_flags.sampled


@pytest.mark.parametrize("header", ["", "garbage", PARENT.replace("00-", "ff-", 1), "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                                    PARENT[:-1], PARENT.upper()])
def test_a_missing_or_malformed_parent_starts_a_new_trace(header):
    span = Tracer(lambda s: None, Sampling("always_on")).start("x", header)
    assert span.parent_id == 0 and span.trace_id != 0x4bf92f3577b34da6a3ce929d0e0e4736



def test_a_new_traces_id_starts_with_its_second_and_ends_random():
    tracer = Tracer(lambda s: None, Sampling("always_on"))
    before = int(time.time())
    ids = [tracer.start("x", "").trace_id for _ in range(1000)]
    after = int(time.time())
    assert all(before <= i >> 96 <= after for i in ids)  # ordered by time, to the second
    assert len({i & (1 << 96) - 1 for i in ids}) == 1000  # the rest random
    assert len({i & (1 << 56) - 1 for i in ids}) == 1000  # W3C: the right-most 56 bits random
    assert all(len(f"{i:032x}") == 32 for i in ids)

@pytest.mark.parametrize("name, parent_flag, want", [
    ("parentbased_always_on", "01", True), ("parentbased_always_on", "00", False),
    ("parentbased_always_off", "01", True), ("parentbased_always_off", "", False),
    ("always_on", "00", True), ("always_off", "01", False), ("", "", True), ("", "00", False)])
def test_sampling_as_the_sdk_names_it(name, parent_flag, want):
    header = PARENT[:-2] + parent_flag if parent_flag else ""
    ended = []
    span = Tracer(ended.append, Sampling(name)).start("x", header)
    span.set_attribute("k", 1)
    span.end()
    assert span.sampled is want and span.header.endswith("-01" if want else "-00")
    assert ended == ([span] if want else [])
    assert (span.attributes == {"k": 1}) is want


def test_traceidratio_keeps_the_traces_the_sdks_would():
    ours, theirs = Sampling("traceidratio", "0.25"), TraceIdRatioBased(0.25)
    tracer = Tracer(lambda s: None, ours)
    kept = 0
    for _ in range(2000):
        span = tracer.start("x", "")
        assert span.sampled == theirs.should_sample(None, span.trace_id, "x").decision.is_sampled()
        kept += span.sampled
    assert 350 < kept < 650


def test_an_unknown_sampler_is_asked_through_the_sdk(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "no_such_sampler")
    sampling = Sampling("no_such_sampler")   # the SDK warns and falls back to its default
    assert sampling.sampled(1, None, "x", SpanKind.INTERNAL, {}) is True
    assert sampling.sampled(1, (1, 2, False), "x", SpanKind.INTERNAL, {}) is False


def test_it_is_the_current_span_for_sdk_spans_started_under_it():
    tracer = Tracer(lambda s: None, Sampling("always_on"))
    span = tracer.start("call a/b", "", SpanKind.SERVER)
    kept = []

    class Keep(SpanExporter):
        def export(self, spans):
            kept.extend(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    token = context_api.attach(trace_api.set_span_in_context(span))
    try:
        provider.get_tracer("t").start_span("start a/b").end()
        child = tracer.start_span("lean child")
    finally:
        context_api.detach(token)
    assert kept[0].context.trace_id == span.trace_id and kept[0].parent.span_id == span.span_id
    assert child.trace_id == span.trace_id and child.parent_id == span.span_id


def test_an_ended_span_changes_no_more_and_is_sent_once():
    ended = []
    span = Tracer(ended.append, Sampling("always_on")).start("x", "")
    span.end()
    span.set_attribute("late", 1)
    span.set_status(StatusCode.ERROR, "late")
    span.end()
    assert ended == [span] and "late" not in span.attributes and span.status_code is StatusCode.UNSET
    assert not span.is_recording()


def test_batches_go_when_full_or_when_the_delay_passes():
    sent, arrived = [], threading.Event()

    def send(batch):
        sent.append(list(batch))
        arrived.set()

    batcher = Batcher(send, delay=30.0, max_queue=100, max_batch=10)
    tracer = Tracer(batcher, Sampling("always_on"))
    for _ in range(10):                                   # a full batch wakes the thread at once
        tracer.start("x", "").end()
    assert arrived.wait(5) and len(sent[0]) == 10
    batcher.shutdown()

    sent.clear()
    batcher = Batcher(send, delay=0.05, max_queue=100, max_batch=10)
    Tracer(batcher, Sampling("always_on")).start("y", "").end()
    time.sleep(0.5)                                       # not full: it goes after the delay
    assert [len(b) for b in sent] == [1]
    batcher.shutdown()


def test_past_the_queue_bound_spans_are_dropped_and_counted():
    gate = threading.Event()
    batcher = Batcher(lambda batch: gate.wait(10), delay=30.0, max_queue=5, max_batch=5)
    tracer = Tracer(batcher, Sampling("always_on"))
    for _ in range(5):
        tracer.start("x", "").end()                       # a full batch: the thread takes it, and blocks
    time.sleep(0.2)
    for _ in range(8):
        tracer.start("x", "").end()
    assert batcher.dropped == 3
    gate.set()
    batcher.shutdown()


def test_a_pipeline_sends_each_batch_to_every_destination_despite_one_failing():
    got = []

    def broken(request, spans):
        raise RuntimeError("down")

    pipeline = SpanPipeline("a/b@1.0.0", [broken, lambda request, spans: got.append((request, len(spans)))])
    for _ in range(3):
        pipeline.tracer.start("x", "").end()
    pipeline.shutdown()
    assert sum(n for _r, n in got) == 3
    request = got[0][0]
    service = {kv.key: kv.value.string_value for kv in request.resource_spans[0].resource.attributes}["service.name"]
    assert service == "a/b@1.0.0"
