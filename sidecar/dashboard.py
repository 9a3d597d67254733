"""The dashboard: one page served by ``algomesh up`` on its HTTP port, next to ``/metrics``.

What it shows: the algorithms with their versions and instances (warm, starting, cold),
the live call graph (caller -> callee@version, from the sidecars' inbound spans, with
call counts, error rates and latency percentiles), the recent calls (filterable) and one
call's trace as a waterfall. It shows traces, never payloads (spans never hold them).

Routes (exact paths, GET and HEAD), all answered from this process (no CDN, no internet):

    /  /index.html  /static/app.js  /static/app.css  /static/favicon.svg    the page; open
    /api/overview                        the mesh's status
    /api/algorithms                      versions and instances with their states
    /api/graph?window=SECONDS            call graph of the last window (default 900 s)
    /api/calls?algorithm=&version=&caller=&errors=1&slower_ms=&limit=&window=
    /api/trace?id=TRACE_ID               one trace's spans, in tree order, with depth

The JSON API is protected like Jupyter's: ``algomesh up`` makes a random token on every
start and prints the page's URL with it (``/?token=...``); the page keeps the token and
sends it as ``Authorization: Bearer ...``; an API request without it is 401. The static
files carry no data and need no token; ``/metrics`` stays open (Prometheus convention).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import math
import secrets
import time
from pathlib import Path
from typing import Callable, Iterable

from algomesh._errors import AlgomeshError
from algomesh.registry.resolve import resolve_in
from algomesh.registry.store import PASSING
from algomesh.registry.versions import parse_version

from .metrics import Answer, Request, Route
from .traces import SpanRow, TraceStore

STATIC = Path(__file__).resolve().parent / "static"
_FILES = {  # path -> (file in static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
# Only this origin, ever: the page cannot load or send anything elsewhere.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_COMMON = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))
_PAGE_HEADERS = (*_COMMON, ("Content-Security-Policy", _CSP), ("X-Frame-Options", "DENY"),
                 ("Cache-Control", "no-cache"))
_API_HEADERS = (*_COMMON, ("Cache-Control", "no-store"))
_JSON = "application/json; charset=utf-8"

DEFAULT_WINDOW = 15 * 60.0     # seconds of calls the graph and the list look at
MAX_WINDOW = 7 * 24 * 3600.0
MAX_CALLS = 500                 # rows one /api/calls answers
MAX_EDGE_SPANS = 50_000         # the newest inbound spans one /api/graph reads (~0.2 s at most)
_HEX = frozenset("0123456789abcdef")
_TRUE = ("1", "true", "yes", "on")
_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


class _Invalid(Exception):
    """A bad query parameter: 400 with this message."""


class Dashboard:
    """The dashboard's routes over the control plane's trace store, registry view and
    launcher. ``routes()`` is what ``serve_metrics(extra_routes=...)`` takes."""

    def __init__(self, *, traces: TraceStore, view, launcher=None, token: str | None = None,
                 address: str = "", insecure: bool = False, window: float = DEFAULT_WINDOW,
                 learned: Callable[[], list] | None = None, prestart_threshold: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.traces = traces
        self.view = view                # RegistryView: .versions, .instances, .stale
        self.launcher = launcher        # LocalLauncher (its .states()), or None
        self.learned = learned          # the scheduler's call graph: () -> [edges.Edge]
        self.prestart_threshold = prestart_threshold
        self.token = token or secrets.token_urlsafe(32)
        self.address = address
        self.insecure = insecure
        self.window = window
        self.clock = clock
        self.started = clock()
        self._static = {path: ((STATIC / name).read_bytes(), ctype) for path, (name, ctype) in _FILES.items()}

    def url(self, host: str, port: int) -> str:
        """The page's address with this start's token (what ``algomesh up`` prints)."""
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/?token={self.token}"

    def routes(self) -> dict[str, Route]:
        routes: dict[str, Route] = {path: self._file(path) for path in self._static}
        for path, handler in (("/api/overview", self.overview), ("/api/algorithms", self.algorithms),
                              ("/api/graph", self.graph), ("/api/calls", self.calls), ("/api/trace", self.trace)):
            routes[path] = self._api(handler)
        return routes

    # plumbing -------------------------------------------------------------------------

    def _file(self, path: str) -> Route:
        body, ctype = self._static[path]

        async def serve(_request: Request) -> Answer:
            return 200, ctype, body, _PAGE_HEADERS
        return serve

    def authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token.encode())

    def _api(self, handler) -> Route:
        async def serve(request: Request) -> Answer:
            if not self.authorized(request):
                return _json(401, {"error": "this needs the dashboard's token: open the URL `algomesh up` printed"},
                             ("WWW-Authenticate", 'Bearer realm="algomesh"'))
            try:
                status, doc = await handler(request.params())
            except _Invalid as bad:
                return _json(400, {"error": str(bad)})
            return _json(status, doc)
        return serve

    def _since_ns(self, params: dict[str, str]) -> tuple[float, int]:
        window = _number(params, "window", self.window, 1.0, MAX_WINDOW)
        return window, int((self.clock() - window) * 1e9)

    # the API --------------------------------------------------------------------------

    async def overview(self, _params: dict[str, str]) -> tuple[int, dict]:
        spans = await asyncio.to_thread(self.traces.count)
        states: dict[str, int] = {}
        for algorithm in self._algorithms():
            for version in algorithm["versions"]:
                for instance in version["instances"]:
                    states[instance["state"]] = states.get(instance["state"], 0) + 1
        stale = getattr(self.view, "stale", None)
        return 200, {
            "address": self.address,
            "now_ms": self.clock() * 1000,
            "uptime_s": round(self.clock() - self.started, 1),
            "security": "off (--insecure)" if self.insecure else "API keys and mesh mTLS",
            "registry": {"ok": stale is None, "stale": stale},
            "algorithms": len({v.manifest.name for v in self.view.versions}),
            "versions": len(self.view.versions),
            "instances": states,
            "spans": spans,
            "window_s": self.window,
        }

    async def algorithms(self, _params: dict[str, str]) -> tuple[int, dict]:
        return 200, {"algorithms": self._algorithms()}

    def _instance_states(self) -> list[dict]:
        """Every instance: the launcher's children (starting, warm, stopping) merged with
        the registry's (its health: passing is warm, anything else failing)."""
        launched = {}
        if self.launcher is not None:
            launched = {iid: (name, version, state, age) for iid, name, version, state, age in self.launcher.states()}
        out, seen = [], set()
        now = self.clock()
        for inst in self.view.instances:
            seen.add(inst.id)
            mine = launched.get(inst.id)
            if mine is not None and mine[2] == "stopping":
                state = "stopping"
            else:
                state = "warm" if inst.state == PASSING else "failing"
            out.append({"id": inst.id, "algorithm": inst.algorithm, "version": inst.version, "state": state,
                        "health": inst.state, "address": inst.address,
                        "age_s": round(now - inst.started_at, 1) if inst.started_at else None})
        for iid, (name, version, state, age) in launched.items():
            if iid not in seen:   # not (or no longer) in the registry's view
                out.append({"id": iid, "algorithm": name, "version": version, "state": state,
                            "health": "", "address": "", "age_s": round(age, 1)})
        return out

    def _algorithms(self) -> list[dict]:
        by_name: dict[str, list] = {}
        for info in self.view.versions:
            by_name.setdefault(info.manifest.name, []).append(info)
        instances: dict[tuple[str, str], list[dict]] = {}
        for inst in self._instance_states():
            instances.setdefault((inst["algorithm"], inst["version"]), []).append(inst)
            by_name.setdefault(inst["algorithm"], [])
        out = []
        for name in sorted(by_name):
            infos = by_name[name]
            try:
                latest = resolve_in(name, infos, requester=name.split("/", 1)[0]).manifest.version
            except AlgomeshError:  # only pre-releases (or nothing published any more)
                latest = ""
            versions = {info.manifest.version: info for info in infos}
            for (algorithm, version) in instances:
                if algorithm == name:
                    versions.setdefault(version, None)
            rows = []
            for version in sorted(versions, key=_version_key, reverse=True):
                info = versions[version]
                mine = sorted(instances.get((name, version), []), key=lambda i: i["id"])
                rows.append({
                    "version": version, "latest": version == latest,
                    "private": bool(info and info.private),
                    "description": info.manifest.description if info else "",
                    "published_at": info.published_at if info else None,
                    "state": _summary(mine),
                    "instances": mine,
                })
            out.append({"name": name, "latest": latest, "versions": rows})
        return out

    async def graph(self, params: dict[str, str]) -> tuple[int, dict]:
        window, since = self._since_ns(params)
        found = await asyncio.to_thread(self.traces.call_edges, since, MAX_EDGE_SPANS)
        graph = call_graph(found)
        if self.learned is not None:
            with_learned(graph, await asyncio.to_thread(self.learned), self.prestart_threshold)
        return 200, {"window_s": window, "truncated": len(found) >= MAX_EDGE_SPANS, **graph}

    async def calls(self, params: dict[str, str]) -> tuple[int, dict]:
        window, since = self._since_ns(params)
        algorithm, version = params.get("algorithm", "").strip(), params.get("version", "").strip()
        if "@" in algorithm:
            algorithm, _, version = algorithm.partition("@")
        limit = int(_number(params, "limit", 100, 1, MAX_CALLS))
        slower = _number(params, "slower_ms", 0.0, 0.0, 1e9)
        rows = await asyncio.to_thread(
            self.traces.calls, since, algorithm=algorithm[:256], version=version[:128],
            caller=params.get("caller", "").strip()[:300], errors=params.get("errors", "").lower() in _TRUE,
            min_duration_ns=int(slower * 1e6), limit=limit)
        return 200, {"window_s": window, "limit": limit, "calls": [_call(r) for r in rows]}

    async def trace(self, params: dict[str, str]) -> tuple[int, dict]:
        tid = params.get("id", "").strip().lower()
        if len(tid) != 32 or not _HEX.issuperset(tid):
            raise _Invalid("id must be a trace id (32 hex digits)")
        rows = await asyncio.to_thread(self.traces.trace, tid)
        if not rows:
            return 404, {"error": f"no trace {tid} (spans arrive within a second; old ones are dropped)"}
        return 200, waterfall(tid, rows)


# --- pure functions (unit-testable) -------------------------------------------------------

def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (``p`` in 0..100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def call_graph(found: Iterable[tuple[str, str, int, bool]]) -> dict:
    """Nodes and edges from ``(caller, callee, duration_ns, failed)`` (see
    ``TraceStore.call_edges``): one edge per (caller, callee@version), with its call count,
    errors, error rate and p50/p95/p99 in ms; a node per party, ``client`` for the ingress."""
    durations: dict[tuple[str, str], list[float]] = {}
    errors: dict[tuple[str, str], int] = {}
    for caller, callee, duration_ns, failed in found:
        key = (caller, callee)
        durations.setdefault(key, []).append(duration_ns / 1e6)
        errors[key] = errors.get(key, 0) + (1 if failed else 0)
    edges, nodes = [], {}
    for (caller, callee), ms in sorted(durations.items()):
        ms.sort()
        n, e = len(ms), errors[(caller, callee)]
        edges.append({"caller": caller, "callee": callee, "calls": n, "errors": e,
                      "error_rate": round(e / n, 4), "p50_ms": round(percentile(ms, 50), 2),
                      "p95_ms": round(percentile(ms, 95), 2), "p99_ms": round(percentile(ms, 99), 2),
                      "max_ms": round(ms[-1], 2)})
        for party in (caller, callee):
            nodes.setdefault(party, {"id": party, "calls": 0, "errors": 0})
        nodes[callee]["calls"] += n
        nodes[callee]["errors"] += e
    for node in nodes.values():
        name, at, version = node["id"].rpartition("@")
        node.update({"algorithm": name if at else node["id"], "version": version if at else "",
                     "kind": "client" if node["id"] == "client" else "algorithm"})
    return {"nodes": sorted(nodes.values(), key=lambda n: (n["id"] != "client", n["id"])), "edges": edges}


def with_learned(graph: dict, learned: Iterable, threshold: float) -> dict:
    """Add what the scheduler learned (edges.CallGraph) to a window's graph: each edge's
    ``share`` of its caller's calls (decayed) and whether it ``prestart``s the callee; edges
    learned earlier but not called in this window join with 0 calls (``learned_only``). The
    ``client`` node (calls through the ingress) is learned too, but nothing starts a client."""
    by_key = {(e["caller"], e["callee"]): e for e in graph["edges"]}
    nodes = {n["id"]: n for n in graph["nodes"]}
    for edge in learned:
        row = by_key.get((edge.caller, edge.callee))
        if row is None:
            row = {"caller": edge.caller, "callee": edge.callee, "calls": 0, "errors": 0, "error_rate": 0.0,
                   "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "learned_only": True}
            graph["edges"].append(row)
            for party in (edge.caller, edge.callee):
                if party not in nodes:
                    name, _, version = party.rpartition("@")
                    nodes[party] = {"id": party, "calls": 0, "errors": 0, "algorithm": name or party,
                                    "version": version, "kind": "algorithm"}
                    graph["nodes"].append(nodes[party])
        row["share"] = round(edge.share, 2)  # (2 digits: decay does not redraw the graph every second)
        row["prestart"] = edge.share >= threshold and edge.caller != "client"  # clients are not started
    for row in graph["edges"]:
        row.setdefault("share", None)
        row.setdefault("prestart", False)
        row.setdefault("learned_only", False)
    return graph


def waterfall(trace_id: str, rows: list[SpanRow]) -> dict:
    """A trace's spans in tree order (children by start) with their depth and their start
    and duration in ms from the trace's start. A span whose parent is not stored (yet)
    shows as a root."""
    start = min(r.start_ns for r in rows)
    end = max(r.end_ns for r in rows)
    ids = {r.span_id for r in rows}
    children: dict[str, list[SpanRow]] = {}
    for r in rows:
        children.setdefault(r.parent_id if r.parent_id in ids else "", []).append(r)
    ordered: list[tuple[SpanRow, int]] = []
    stack = [(r, 0) for r in sorted(children.get("", []), key=_start, reverse=True)]
    seen: set[str] = set()
    while stack:
        row, depth = stack.pop()
        if row.span_id in seen:   # a malformed trace cannot loop us
            continue
        seen.add(row.span_id)
        ordered.append((row, depth))
        stack.extend((c, depth + 1) for c in sorted(children.get(row.span_id, []), key=_start, reverse=True))
    for r in rows:               # a cycle of parents has no root: show its spans anyway
        if r.span_id not in seen:
            ordered.append((r, 0))
    failed = [r for r in rows if r.status == 2]
    return {
        "trace_id": trace_id,
        "start_ms": start / 1e6,
        "duration_ms": round((end - start) / 1e6, 3),
        "errors": len(failed),
        "spans": [{
            "span_id": r.span_id, "parent_id": r.parent_id, "name": r.name, "kind": _KINDS.get(r.kind, "unspecified"),
            "service": r.service, "depth": depth, "offset_ms": round((r.start_ns - start) / 1e6, 3),
            "duration_ms": round(r.duration_ms, 3), "ok": r.status != 2, "status_message": r.message,
            "attributes": r.attributes,
        } for r, depth in ordered],
    }


def _start(row: SpanRow) -> tuple[int, int]:
    return row.start_ns, -row.end_ns


def _call(r: SpanRow) -> dict:
    a = r.attributes
    ingress = r.name.startswith("call ")
    return {"trace_id": r.trace_id, "span_id": r.span_id, "time_ms": r.start_ns / 1e6,
            "caller": str(a.get("algomesh.caller", "client")),
            "algorithm": str(a.get("algomesh.algorithm", r.name)), "version": str(a.get("algomesh.version", "")),
            "hop": "ingress" if ingress else "inbound", "duration_ms": round(r.duration_ms, 3),
            "ok": r.status != 2, "reason": str(a.get("algomesh.error_reason", r.message if r.status == 2 else "")),
            "cold_start": bool(a.get("algomesh.cold_start", False))}


def _summary(instances: list[dict]) -> str:
    states = {i["state"] for i in instances}
    for state in ("warm", "starting", "failing", "stopping"):
        if state in states:
            return state
    return "cold"


def _version_key(text: str):
    try:
        return (1, parse_version(text))
    except AlgomeshError:
        return (0, text)


def _number(params: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _Invalid(f"{name} must be a number, not {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise _Invalid(f"{name} must be a finite number")
    return min(max(value, low), high)


def _json(status: int, doc: dict, *headers: tuple[str, str]) -> Answer:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    return status, _JSON, body, (*_API_HEADERS, *headers)
