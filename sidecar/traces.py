"""The trace store: the control plane keeps every span itself (SQLite, bounded).

Spans arrive as OTLP ``ExportTraceServiceRequest``s: from sidecars through the
``TraceService/Export`` the control plane serves on its mesh port (mTLS: only the mesh's
own parties), and from the control plane's own tracer through ``StoreExporter``, which
encodes them the same way. Rows keep what the dashboard and ``algomesh trace`` show:
ids, parent, name, kind, service, start and end (unix ns), status, attributes as JSON.

Retention is bounded both ways: spans older than ``retention`` seconds and the oldest
beyond ``max_spans`` are deleted as new ones arrive. Both deletes run in sweeps, not with
every batch (sidecars send a batch every half second each, and ordering 200,000 rows by
time for every one of them was a tenth of the control plane's CPU under load): the age
sweep at most once a second, the count sweep once the store holds a twentieth more than
``max_spans``.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import quote

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from algomesh._errors import error
from algomesh.v1 import traces_pb2, traces_pb2_grpc

from .rescue import rescued

log = logging.getLogger("algomesh.traces")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id   TEXT NOT NULL,
    span_id    TEXT NOT NULL,
    parent_id  TEXT NOT NULL,      -- '' for a root
    name       TEXT NOT NULL,
    kind       INTEGER NOT NULL,   -- OTLP SpanKind: 1 internal, 2 server, 3 client
    service    TEXT NOT NULL,
    start_ns   INTEGER NOT NULL,
    end_ns     INTEGER NOT NULL,
    status     INTEGER NOT NULL,   -- OTLP StatusCode: 0 unset, 1 ok, 2 error
    message    TEXT NOT NULL,
    attributes TEXT NOT NULL,      -- JSON object
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_ns);
"""


@dataclass(frozen=True)
class SpanRow:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    service: str
    start_ns: int
    end_ns: int
    status: int
    message: str
    attributes: dict

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


_SCALARS = frozenset(("string_value", "bool_value", "int_value", "double_value"))
# one encoder for every row: json.dumps with any option builds a new encoder per call
_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _value(v) -> object:
    which = v.WhichOneof("value")
    if which in _SCALARS:
        return getattr(v, which)
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return None if which is None else str(getattr(v, which))


def rows_and_attributes(request: trace_service_pb2.ExportTraceServiceRequest) -> tuple[list[tuple], list[dict]]:
    """The store's rows for a request's spans, and each span's attributes as a dict (what
    the rows hold as JSON; observers read them without parsing it again)."""
    rows, attributes = [], []
    append, keep = rows.append, attributes.append
    for rs in request.resource_spans:
        service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                attrs = {}
                for a in s.attributes:  # _value's scalar case inline: 0.5 of 14 µs a span stored
                    v = a.value
                    which = v.WhichOneof("value")
                    attrs[a.key] = getattr(v, which) if which in _SCALARS else _value(v)
                keep(attrs)
                append((s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, int(s.kind), service,
                        s.start_time_unix_nano, s.end_time_unix_nano, int(s.status.code), s.status.message,
                        _to_json(attrs)))
    return rows, attributes


class TraceStore:
    def __init__(self, path: str | Path, *, retention: float = 24 * 3600, max_spans: int = 200_000,
                 observers: Sequence[Callable[[list[tuple], list[dict]], object]] = ()) -> None:
        self.retention = retention
        self.max_spans = max_spans
        self.observers = list(observers)  # told every batch of new rows and their attributes (the call graph learns from them)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._count = self._db.execute("SELECT count(*) FROM spans").fetchone()[0]  # at least this many
        self._slack = max(100, max_spans // 20)
        self._next_age_sweep = 0.0

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> int:
        rows, attributes = rows_and_attributes(request)
        if not rows:
            return 0
        horizon = time.time_ns() - int(self.retention * 1e9)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                self._count += len(rows)  # a replaced span counts twice until the next count sweep
                if (now := time.monotonic()) >= self._next_age_sweep:
                    self._next_age_sweep = now + 1.0
                    self._count -= db.execute("DELETE FROM spans WHERE start_ns < ?", (horizon,)).rowcount
                if self._count > self.max_spans + self._slack:
                    # the oldest first: the walk stops at the excess, not at max_spans
                    self._count = db.execute("SELECT count(*) FROM spans").fetchone()[0]
                    if self._count > self.max_spans:
                        self._count -= db.execute("DELETE FROM spans WHERE rowid IN (SELECT rowid FROM spans "
                                                  "ORDER BY start_ns LIMIT ?)",
                                                  (self._count - self.max_spans,)).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._count = db.execute("SELECT count(*) FROM spans").fetchone()[0]
                raise
        for observe in self.observers:
            try:
                observe(rows, attributes)
            except Exception:  # the spans are stored; one observer failing must not refuse them
                log.exception("a span observer failed")
        return len(rows)

    def _rows(self, sql: str, args: Sequence = ()) -> list[SpanRow]:
        with self._lock:
            found = self._db.execute(sql, args).fetchall()
        return [SpanRow(*r[:10], json.loads(r[10])) for r in found]

    def trace(self, trace_id: str) -> list[SpanRow]:
        """Every span of a trace, by start time."""
        return self._rows("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_ns, end_ns DESC", (trace_id.lower(),))

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM spans").fetchone()[0]

    # read-only queries for the dashboard ----------------------------------------------
    #
    # A "call" is a SERVER span: a sidecar's inbound span (named ``owner/name@version``; its
    # caller is the calling algorithm's ``owner/name@version``, or ``client`` when it came
    # through the ingress), or the ingress's own ``call owner/name`` span. The ingress's is
    # listed only when it failed with no hop below it (refused or not found before any
    # algorithm answered); otherwise the sidecar's span is that call. Ingress spans are
    # told apart by name, not service: OTEL_SERVICE_NAME may rename the ingress.

    _CALLER = "COALESCE(json_extract(s.attributes, '$.\"algomesh.caller\"'), 'client')"

    def _read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        """A read on a connection of its own (read-only; WAL lets it run beside writes), so
        a long dashboard query never holds up the spans arriving. An in-memory store has
        only its one connection."""
        with self._lock:
            path = self._db.execute("PRAGMA database_list").fetchone()[2]
        if not path:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def call_edges(self, since_ns: int, limit: int = 100_000) -> list[tuple[str, str, int, bool]]:
        """``(caller, callee, duration_ns, failed)`` of the inbound calls (sidecars' SERVER
        spans) that started at or after ``since_ns``, newest first, at most ``limit``;
        callee is ``owner/name@version``."""
        found = self._read(
            f"SELECT {self._CALLER}, s.name, s.end_ns - s.start_ns, s.status = 2 FROM spans s "
            "WHERE s.start_ns >= ? AND s.kind = 2 AND s.name NOT LIKE 'call %' "
            "ORDER BY s.start_ns DESC LIMIT ?", (since_ns, max(0, limit)))
        return [(caller, name, duration, bool(failed)) for caller, name, duration, failed in found]

    def calls(self, since_ns: int, *, algorithm: str = "", version: str = "", caller: str = "",
              errors: bool = False, min_duration_ns: int = 0, limit: int = 100) -> list[SpanRow]:
        """Recent calls (see above), newest first, at most ``limit``: filtered by the called
        algorithm (``owner/name``) and version, by caller (``owner/name@version`` or
        ``client``), to failed ones, and to those lasting at least ``min_duration_ns``."""
        where = ["s.start_ns >= ?", "s.kind = 2",
                 "(s.name NOT LIKE 'call %' OR (s.status = 2 AND NOT EXISTS "
                 "(SELECT 1 FROM spans c WHERE c.trace_id = s.trace_id AND c.parent_id = s.span_id)))"]
        args: list = [since_ns]
        if algorithm:
            where.append("json_extract(s.attributes, '$.\"algomesh.algorithm\"') = ?")
            args.append(algorithm)
        if version:
            where.append("json_extract(s.attributes, '$.\"algomesh.version\"') = ?")
            args.append(version)
        if caller:
            where.append(f"{self._CALLER} = ?")
            args.append(caller)
        if errors:
            where.append("s.status = 2")
        if min_duration_ns > 0:
            where.append("s.end_ns - s.start_ns >= ?")
            args.append(min_duration_ns)
        args.append(max(0, limit))
        found = self._read(f"SELECT s.* FROM spans s WHERE {' AND '.join(where)} ORDER BY s.start_ns DESC LIMIT ?",
                           args)
        return [SpanRow(*r[:10], json.loads(r[10])) for r in found]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class StoreExporter(SpanExporter):
    """The control plane's own spans, straight into its store (encoded as OTLP, like a
    sidecar's, so there is one way in)."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.store.add(encode_spans(spans))
        except sqlite3.Error:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def collector_handler(store: TraceStore) -> grpc.GenericRpcHandler:
    """OTLP ``TraceService/Export`` into ``store`` (raw bytes in, parsed here)."""
    import asyncio

    from google.protobuf.message import DecodeError

    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an ExportTraceServiceRequest")
        await asyncio.to_thread(store.add, request)
        return trace_service_pb2.ExportTraceServiceResponse().SerializeToString()

    return grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)})


_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


class TracesServicer(traces_pb2_grpc.TracesServicer):
    """``algomesh.v1.Traces`` on the public port; ``identify`` reads the caller's API key."""

    def __init__(self, store: TraceStore, identify) -> None:
        self.store = store
        self.identify = identify

    @rescued
    async def GetTrace(self, request, context):
        import asyncio

        who = self.identify(context)
        tid = request.trace_id.strip().lower()
        if len(tid) != 32 or not all(c in "0123456789abcdef" for c in tid):
            raise error("INVALID_INPUT", f"{request.trace_id[:64]!r} is not a trace id (32 hex digits)")
        rows = await asyncio.to_thread(self.store.trace, tid)
        # another owner's trace answers as unknown: trace ids are not for probing
        if not rows or not (who.admin or any(r.attributes.get("algomesh.key_owner") == who.owner for r in rows)):
            raise error("TRACE_NOT_FOUND", f"no trace {tid} (or not one of your calls)")
        return traces_pb2.Trace(trace_id=tid, spans=[traces_pb2.Span(
            trace_id=r.trace_id, span_id=r.span_id, parent_span_id=r.parent_id, name=r.name,
            kind=_KINDS.get(r.kind, "unspecified"), service=r.service, start_unix_nano=r.start_ns,
            end_unix_nano=r.end_ns, error=r.status == 2, status_message=r.message,
            attributes={k: json.dumps(v) if not isinstance(v, str) else v for k, v in r.attributes.items()})
            for r in rows])
