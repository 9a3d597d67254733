"""Spans on the request path, made and batched cheaply.

A sidecar makes three or four spans per call (tracing.py lists them), on the call's own
event loop. The OpenTelemetry SDK's span costs about 20 µs to start and end there (a lock
per span, attribute validation, the sampler called through contexts, a processor chain);
these cost a few. They are OpenTelemetry spans to everything around them: ``Span``
implements the API's ``opentelemetry.trace.Span``, so it can be the current span (an
instance start and a Locate made for the call join its trace), and what leaves the
process is the same OTLP ``ExportTraceServiceRequest`` (span_export.py), to the control
plane's collector and, when the standard variables name one, to any OTLP collector.

What the SDK would read from the environment, this reads alike:

    OTEL_TRACES_SAMPLER / _ARG       always_on, always_off, traceidratio and their
                                     parentbased_ forms (the default: parentbased_always_on);
                                     a sampler this does not know is asked through the SDK
    OTEL_BSP_SCHEDULE_DELAY          ms between batches (algomesh's default: 500)
    OTEL_BSP_MAX_QUEUE_SIZE          spans held waiting (2048); past it, spans are dropped
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE   spans per batch (512)

Span ids are random (64 bits), as the SDK's ``RandomIdGenerator`` makes them. A new
trace's id is its start second (32 bits, as AWS X-Ray's ids) then 96 random bits: W3C
trace context asks only that its right-most 56 bits be random, which the ratio sampler
reads. The trace store (traces.py) keys its spans by trace id, and ids that grow with
time land at the right edge of that index instead of on a random page of it: storing a
span costs a sixth less CPU with the store full (measured: 16.5 against 13.9 µs). A
``traceparent`` whose sampled flag is off makes unsampled children under the
``parentbased_`` samplers, so a pipeline is kept or dropped whole.
"""
from __future__ import annotations

import collections
import logging
import os
import random
import re
import threading
import time
from typing import Any, Callable, Sequence

from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

log = logging.getLogger("algomesh.spans")

_MASK64 = (1 << 64) - 1
_SAMPLED, _NOT_SAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_header(value: str) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) from a W3C ``traceparent``; None if malformed."""
    m = _TRACEPARENT.fullmatch(value)
    if m is None or m[1] == "ff":
        return None
    tid, sid = int(m[2], 16), int(m[3], 16)
    if not tid or not sid:
        return None
    return tid, sid, bool(int(m[4], 16) & 1)


class Sampling:
    """Which new spans are recorded, as ``OTEL_TRACES_SAMPLER`` and ``_ARG`` say."""

    def __init__(self, name: str | None = None, arg: str | None = None) -> None:
        env = os.environ
        name = (name if name is not None else env.get("OTEL_TRACES_SAMPLER", "")).strip().lower()
        name = name or "parentbased_always_on"
        arg = arg if arg is not None else env.get("OTEL_TRACES_SAMPLER_ARG")
        self.name = name
        self.parent_based = name.startswith("parentbased_")
        root = name.removeprefix("parentbased_")
        self._sdk = None
        if root == "always_on":
            self._bound = 1 << 64
        elif root == "always_off":
            self._bound = 0
        elif root == "traceidratio":
            try:
                rate = float(arg) if arg is not None else 1.0
            except ValueError:
                rate = -1.0
            if not 0.0 <= rate <= 1.0:
                log.warning("OTEL_TRACES_SAMPLER_ARG %r is not a rate between 0 and 1; sampling every trace", arg)
                rate = 1.0
            self._bound = round(rate * (1 << 64))  # the SDK's TraceIdRatioBased bound
        else:  # jaeger_remote, xray, an entry point: the SDK reads OTEL_TRACES_SAMPLER itself
            from opentelemetry.sdk.trace import sampling

            self._sdk = sampling._get_from_env_or_default()
            self._bound = 0

    def sampled(self, trace_id: int, parent: tuple[int, int, bool] | None, name: str, kind: SpanKind,
                attributes: dict) -> bool:
        if self._sdk is not None:
            context = None
            if parent is not None:
                context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(SpanContext(
                    parent[0], parent[1], is_remote=True, trace_flags=_SAMPLED if parent[2] else _NOT_SAMPLED)))
            return self._sdk.should_sample(context, trace_id, name, kind, attributes).decision.is_sampled()
        if parent is not None and self.parent_based:
            return parent[2]
        return (trace_id & _MASK64) < self._bound


class Span(trace_api.Span):
    """One span: what it records is kept in plain fields until the batch encodes it."""

    def __init__(self, name: str, kind: SpanKind, trace_id: int, span_id: int, parent_id: int, sampled: bool,
                 attributes: dict | None, sink: Callable[["Span"], None]) -> None:
        self.name, self.kind = name, kind
        self.trace_id, self.span_id, self.parent_id, self.sampled = trace_id, span_id, parent_id, sampled
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self.events: list[tuple[str, int, dict]] = []
        self.status_code, self.status_message = StatusCode.UNSET, ""
        self.start_ns, self.end_ns = time.time_ns(), 0
        self.header = f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"  # its traceparent
        self._sink = sink
        self._context: SpanContext | None = None

    # ---- opentelemetry.trace.Span
    def get_span_context(self) -> SpanContext:
        if self._context is None:
            self._context = SpanContext(self.trace_id, self.span_id, is_remote=False,
                                        trace_flags=_SAMPLED if self.sampled else _NOT_SAMPLED)
        return self._context

    def is_recording(self) -> bool:
        return self.sampled and not self.end_ns

    def set_attribute(self, key: str, value: Any) -> None:
        if self.sampled and not self.end_ns:
            self.attributes[key] = value

    def set_attributes(self, attributes: dict) -> None:
        if self.sampled and not self.end_ns:
            self.attributes.update(attributes)

    def add_event(self, name: str, attributes: dict | None = None, timestamp: int | None = None) -> None:
        if self.sampled and not self.end_ns:
            self.events.append((name, timestamp or time.time_ns(), dict(attributes or {})))

    def update_name(self, name: str) -> None:
        if not self.end_ns:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_ns:
            return
        if isinstance(status, Status):
            status, description = status.status_code, status.description
        self.status_code, self.status_message = status, (description or "") if status is StatusCode.ERROR else ""

    def record_exception(self, exception: BaseException, attributes: dict | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        self.add_event("exception", {"exception.type": type(exception).__name__,
                                     "exception.message": str(exception), **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_ns:
            return
        self.end_ns = end_time or time.time_ns()
        if self.sampled:
            self._sink(self)


class Tracer:
    """Starts spans whose parent is a ``traceparent`` header (what travels in metadata),
    or, through the API's ``start_span``, the current span of an OpenTelemetry context."""

    def __init__(self, sink: Callable[[Span], None], sampling: Sampling | None = None) -> None:
        self._sink = sink
        self.sampling = sampling or Sampling()
        self._bits = random.getrandbits

    def start(self, name: str, header: str, kind: SpanKind = SpanKind.INTERNAL, attributes: dict | None = None) -> Span:
        parent = parse_header(header) if header else None
        bits = self._bits
        if parent is None:
            trace_id = (int(time.time()) & 0xFFFFFFFF) << 96 | bits(96)
            parent_id = 0
        else:
            trace_id, parent_id = parent[0], parent[1]
        sampled = self.sampling.sampled(trace_id, parent, name, kind, attributes or {})
        return Span(name, kind, trace_id, bits(64) or 1, parent_id, sampled, attributes if sampled else None,
                    self._sink)

    def start_span(self, name: str, context=None, kind: SpanKind = SpanKind.INTERNAL, attributes=None,
                   **_ignored) -> Span:
        parent = trace_api.get_current_span(context).get_span_context()
        header = (f"00-{parent.trace_id:032x}-{parent.span_id:016x}-{int(parent.trace_flags) & 1:02x}"
                  if parent.is_valid else "")
        return self.start(name, header, kind, attributes)


class Batcher:
    """Ended spans, sent in batches from a thread of its own (``send`` may block).

    ``__call__`` is the spans' sink: an append to a deque, and a wake-up of the thread once
    a batch is full; the thread otherwise sends every ``delay`` seconds. Past the queue's
    bound, spans are dropped and counted (``dropped``), never waited for."""

    def __init__(self, send: Callable[[Sequence[Span]], None], *, delay: float | None = None,
                 max_queue: int | None = None, max_batch: int | None = None) -> None:
        env = os.environ
        self._send = send
        self._delay = delay if delay is not None else float(env.get("OTEL_BSP_SCHEDULE_DELAY", "500")) / 1000
        self._max_queue = max_queue or int(env.get("OTEL_BSP_MAX_QUEUE_SIZE", "2048"))
        self._max_batch = min(max_batch or int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")), self._max_queue)
        self._queue: collections.deque[Span] = collections.deque()
        self._wake = threading.Event()
        self._stopped = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="algomesh-spans", daemon=True)
        self._thread.start()

    def __call__(self, span: Span) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) == self._max_batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
            try:
                self._send(batch)
            except Exception:  # a batch that cannot go is lost; the calls it describes are not
                log.exception("could not send %d spans", len(batch))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Send what is queued and stop the thread."""
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout)
        self._drain()
