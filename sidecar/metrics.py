"""Metrics: Prometheus counters, gauges and histograms, and a tiny ``/metrics`` server.

Our own implementation of the Prometheus text exposition format (version 0.0.4) rather
than ``prometheus_client``: sidecars must stay lean (a target of 60 MiB RSS) and the
request path has a budget of a few microseconds for metrics. Nothing here imports more
than the standard library.

    registry = Registry()
    calls = registry.counter("algomesh_calls", "Calls answered.", ("algorithm", "version"))
    calls.labels("demo/hello", "1.0.0").inc()           # exposed as algomesh_calls_total
    latency = registry.histogram("algomesh_call_seconds", "Call latency.", ("algorithm",))
    latency.labels("demo/hello").observe(0.012)
    registry.gauge("algomesh_in_flight", "Calls in flight.", collect=lambda: [((), len(live))])
    server, port = await serve_metrics(registry, port=9100)

``labels(*values)`` is the hot path: one dict lookup returns the cached child, whose
``inc``/``set``/``observe`` is a couple of attribute updates. Keep the child when you can.

Not thread-safe by design: every update happens on the one asyncio loop. ``render()``
alone may run on another thread (it copies the dicts it walks, so series added meanwhile
cannot break it); a ``collect`` callback then runs on that thread too.
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Iterable, Mapping, Sequence, TypeVar
from urllib.parse import parse_qsl

log = logging.getLogger("algomesh.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: a cached sub-millisecond answer up to a cold start or a long ML pipeline.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Collect = Callable[[], Iterable[tuple[Sequence[object], float]]]


# --- the exposition format -------------------------------------------------------------

def _fmt(value: float) -> str:
    """A sample value, Go style: ``1`` (not ``1.0``), ``0.25``, ``1e+20``, ``+Inf``, ``NaN``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_pairs(names: Sequence[str], values: Sequence[str]) -> str:
    """``a="x",b="y"`` (no braces), escaped."""
    return ",".join(f'{n}="{_escape_value(v)}"' for n, v in zip(names, values))


def _braced(pairs: str) -> str:
    return "{" + pairs + "}" if pairs else ""


# --- children: what the hot path touches ------------------------------------------------

class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up; inc({amount!r})")
        self.value += amount


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class HistogramChild:
    """Per-bucket counts (not cumulative; ``render`` accumulates) plus the +Inf slot."""
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum: float = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, so a value equal to a bound lands in it (le).
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


C = TypeVar("C")


# --- families ---------------------------------------------------------------------------

class _Family(Generic[C]):
    kind = ""
    _collect: Collect | None = None

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self._lookup: dict[tuple, C] = {}               # values as passed -> child (the hot path)
        self._series: dict[tuple[str, ...], C] = {}     # values as str -> child (render)
        if not labelnames and self._collect is None:
            self.labels()                                # an unlabelled metric shows from the start

    def labels(self, *values: object) -> C:
        """The child for these label values, made on first use and cached."""
        child = self._lookup.get(values)
        if child is None:
            child = self._add(values)
        return child

    def _add(self, values: tuple) -> C:
        if self._collect is not None:
            raise ValueError(f"{self.name} is read from its collect callback; it has no children to set")
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes {len(self.labelnames)} label values "
                             f"{self.labelnames}, got {len(values)}")
        key = tuple(str(v) for v in values)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = self._new_child()
        self._lookup[values] = child      # labels(1) and labels("1") are one series
        return child

    def _new_child(self) -> C:
        raise NotImplementedError

    def _samples(self) -> list[str]:
        """The sample lines, sorted by label values."""
        lines: list[str] = []
        for key, child in sorted(_snapshot(self._series), key=_first):
            self._render_child(lines, _label_pairs(self.labelnames, key), child)
        return lines

    def _render_child(self, lines: list[str], pairs: str, child: C) -> None:
        lines.append(f"{self.name}{_braced(pairs)} {_fmt(child.value)}")  # type: ignore[attr-defined]

    def render(self, lines: list[str]) -> None:
        lines.append(f"# HELP {self.name} {_escape_help(self.help)}")
        lines.append(f"# TYPE {self.name} {self.kind}")
        lines.extend(self._samples())


class Counter(_Family[CounterChild]):
    kind = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()


class Gauge(_Family[GaugeChild]):
    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...],
                 collect: Collect | None = None) -> None:
        self._collect = collect
        super().__init__(name, help, labelnames)

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def _samples(self) -> list[str]:
        if self._collect is None:
            return super()._samples()
        try:
            found: dict[tuple[str, ...], float] = {}
            for values, value in self._collect():
                key = tuple(str(v) for v in values)
                if len(key) != len(self.labelnames):
                    raise ValueError(f"label values {key} do not match {self.labelnames}")
                found[key] = float(value)
        except Exception:
            log.warning("the collect callback of %s failed; its samples are left out", self.name,
                        exc_info=True)
            return []
        return [f"{self.name}{_braced(_label_pairs(self.labelnames, key))} {_fmt(value)}"
                for key, value in sorted(found.items())]


class Histogram(_Family[HistogramChild]):
    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...],
                 buckets: Sequence[float]) -> None:
        self.bounds = _check_buckets(buckets)
        self._les = [f'le="{_fmt(b)}"' for b in self.bounds] + ['le="+Inf"']
        super().__init__(name, help, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _render_child(self, lines: list[str], pairs: str, child: HistogramChild) -> None:
        counts, total = list(child.counts), child.sum      # one snapshot: buckets agree with _count
        prefix = pairs + "," if pairs else ""
        cumulative = 0
        for le, count in zip(self._les, counts):
            cumulative += count
            lines.append(f"{self.name}_bucket{{{prefix}{le}}} {cumulative}")
        lines.append(f"{self.name}_sum{_braced(pairs)} {_fmt(total)}")
        lines.append(f"{self.name}_count{_braced(pairs)} {cumulative}")


def _first(item: tuple) -> object:
    return item[0]


def _snapshot(d: dict) -> list:
    """The items of a dict another thread may be growing: ``dict.copy`` runs in C without
    calling back into Python; retry on the off chance it still sees a resize."""
    for _ in range(5):
        try:
            return list(d.copy().items())
        except RuntimeError:
            continue
    return list(d.copy().items())


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = [float(b) for b in buckets]
    if bounds and bounds[-1] == math.inf:
        bounds.pop()                                     # +Inf is always there
    if not bounds:
        raise ValueError("a histogram needs at least one finite bucket bound")
    if any(math.isnan(b) or math.isinf(b) for b in bounds):
        raise ValueError(f"bucket bounds must be finite numbers: {buckets!r}")
    if any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"bucket bounds must be strictly increasing: {buckets!r}")
    return tuple(bounds)


# --- the registry -----------------------------------------------------------------------

F = TypeVar("F", bound=_Family)


class Registry:
    """The metric families of one process, rendered in registration order."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._taken: set[str] = set()                   # every sample name a family emits

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """A counter; its name gets ``_total`` appended unless it ends so already."""
        if not name.endswith("_total"):
            name += "_total"
        return self._register(Counter(name, help, _check(name, labelnames)), ())

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = (), *,
              collect: Collect | None = None) -> Gauge:
        """A gauge set by its children, or, with ``collect``, read at render time from
        ``collect()``: an iterable of ``(label_values_tuple, value)``."""
        return self._register(Gauge(name, help, _check(name, labelnames), collect), ())

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        names = _check(name, labelnames)
        if "le" in names:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        return self._register(Histogram(name, help, names, buckets), ("_bucket", "_sum", "_count"))

    def _register(self, family: F, suffixes: tuple[str, ...]) -> F:
        emitted = {family.name, *(family.name + s for s in suffixes)}
        if emitted & self._taken:
            raise ValueError(f"a metric named {family.name} (or one of its series) is already registered")
        self._taken |= emitted
        self._families[family.name] = family
        return family

    def render(self) -> bytes:
        """The whole exposition, text format 0.0.4."""
        lines: list[str] = []
        for _, family in _snapshot(self._families):
            family.render(lines)
        lines.append("")
        return "\n".join(lines).encode("utf-8")


def _check(name: str, labelnames: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labelnames, str):
        raise ValueError(f"{name}: labelnames must be a sequence of names, not the string {labelnames!r}")
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}")
    names = tuple(labelnames)
    for label in names:
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise ValueError(f"{name}: invalid label name {label!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: duplicate label names {names}")
    return names


# --- the /metrics server (and any other small GET routes) -------------------------------

@dataclass(frozen=True)
class Request:
    """What a route sees of one GET or HEAD request. ``path`` has no query string;
    ``query`` is the raw one (after ``?``, still percent-encoded); ``headers`` are keyed by
    lower-case name (a repeated header's values joined with ``, ``, as HTTP says)."""
    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    def params(self) -> dict[str, str]:
        """The query string's parameters, decoded (a repeated one: its first value)."""
        out: dict[str, str] = {}
        for key, value in parse_qsl("&".join(self.query.split("&")[:64]), keep_blank_values=True):
            out.setdefault(key, value)
        return out


# A route answers ``(status, content_type, body)``, optionally with a fourth element:
# extra response headers as ``(name, value)`` pairs.
Answer = tuple[int, str, bytes] | tuple[int, str, bytes, Sequence[tuple[str, str]]]
Route = Callable[[Request], Awaitable[Answer]]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (/[\x21-\x7e]*) HTTP/1\.[01]\r?\n")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TEXT = "text/plain; charset=utf-8"
_MAX_HEADERS = 100


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


async def serve_metrics(registry: Registry, host: str = "127.0.0.1", port: int = 0, *,
                        extra_routes: dict[str, Route] | None = None, read_timeout: float = 10.0,
                        max_header_bytes: int = 8192, max_connections: int = 64,
                        ) -> tuple[asyncio.AbstractServer, int]:
    """Serve ``GET /metrics`` (and ``extra_routes``: path -> async callable taking the
    ``Request`` and returning ``(status, content_type, body[, headers])``) over minimal
    HTTP/1.1 on asyncio streams.

    Routes match the path exactly, whatever the query string (which the route gets in
    ``request.query``). An extra route may replace ``/metrics``. HEAD works too.
    One request per connection (``Connection: close``). A request head over
    ``max_header_bytes`` is 431, one not complete within ``read_timeout`` seconds is 408,
    anything unparseable is 400; a connection beyond ``max_connections`` is closed at once.
    Returns the server and the port it is bound to (``port=0`` picks a free one)."""
    async def metrics(_request: Request) -> Answer:
        return 200, CONTENT_TYPE, registry.render()

    routes: dict[str, Route] = {"/metrics": metrics, **(extra_routes or {})}
    open_connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_connections
        open_connections += 1
        try:
            if open_connections <= max_connections:
                await _exchange(reader, writer, routes, read_timeout, max_header_bytes)
        except Exception:                                # never let a client take the server down
            log.debug("metrics connection failed", exc_info=True)
        except asyncio.CancelledError:
            pass      # the loop is shutting down; 3.11's start_server would log this as an error
        finally:
            open_connections -= 1
            writer.close()

    server = await asyncio.start_server(handle, host, port, limit=max_header_bytes)
    return server, server.sockets[0].getsockname()[1]


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    routes: dict[str, Route], read_timeout: float, max_header_bytes: int) -> None:
    headers: Sequence[tuple[str, str]] = ()
    try:
        async with asyncio.timeout(read_timeout):
            request = await _read_head(reader, max_header_bytes)
    except _BadRequest as bad:
        status, ctype, body, method = bad.status, _TEXT, f"{_REASONS[bad.status]}\n".encode(), "GET"
    except TimeoutError:
        status, ctype, body, method = 408, _TEXT, b"Request Timeout\n", "GET"
    except (asyncio.IncompleteReadError, ConnectionError):
        return                                           # the client went away
    else:
        method = request.method
        status, ctype, body, headers = await _dispatch(routes, request)
    async with asyncio.timeout(read_timeout):
        await _respond(writer, status, ctype, b"" if method == "HEAD" else body, len(body), headers)
        await _linger(reader, writer, min(read_timeout, 1.0))


async def _read_head(reader: asyncio.StreamReader, max_header_bytes: int) -> Request:
    """One request's line and headers (bounded in bytes and in number)."""
    headers: dict[str, str] = {}
    try:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            raise _BadRequest(400)
        seen = len(line)
        while True:
            header = await reader.readline()
            seen += len(header)
            if seen > max_header_bytes:
                raise _BadRequest(431)
            if header in (b"\r\n", b"\n"):
                break
            if len(headers) >= _MAX_HEADERS:
                raise _BadRequest(431)
            if not header.endswith(b"\n") or b":" not in header:
                raise _BadRequest(400)
            name, _, value = header.decode("latin-1").partition(":")
            if not _HEADER_NAME.fullmatch(name):
                raise _BadRequest(400)
            name, value = name.lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    except ValueError:                                  # a line over the stream's limit
        raise _BadRequest(431) from None
    target = match.group(2).decode()
    path, _, query = target.partition("?")
    return Request(match.group(1).decode(), path, query, headers)


async def _dispatch(routes: dict[str, Route], request: Request,
                    ) -> tuple[int, str, bytes, Sequence[tuple[str, str]]]:
    route = routes.get(request.path)
    if route is None:
        return 404, _TEXT, b"Not Found\n", ()
    if request.method not in ("GET", "HEAD"):
        return 405, _TEXT, b"Method Not Allowed\n", ()
    try:
        answer = await route(request)
        status, ctype, body = answer[:3]
        headers = answer[3] if len(answer) > 3 else ()
        for name, value in headers:                      # routes are ours, but a header is no place for a newline
            if not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"invalid response header {name!r}")
            value.encode("latin-1")
        return status, ctype, body, headers
    except Exception:
        log.warning("the %s route failed", request.path, exc_info=True)
        return 500, _TEXT, b"Internal Server Error\n", ()


async def _respond(writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes,
                   length: int, headers: Sequence[tuple[str, str]] = ()) -> None:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n")
    if status == 405:
        head += "Allow: GET, HEAD\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    writer.write(head.encode("latin-1") + b"\r\n" + body)
    await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
    """Half-close and discard what the client still sends, briefly: closing with unread
    input makes the kernel send a reset, which can destroy the response in flight."""
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionError):
        pass
