"""Call edges: who calls whom, learned from the spans (the scheduler's memory).

Every sidecar's inbound span says which algorithm answered (its name,
``owner/name@version``) and who called it (``algomesh.caller``: another algorithm's
``owner/name@version``, or ``client`` for a call through the ingress). Each such span is
one call on the edge caller → callee. Per edge the graph keeps:

    calls      a decayed count (half-life ``half_life`` seconds, so old habits fade)
    share      calls on the edge / calls into the caller (the sum of the edges ending at
               it): how often the caller, when called, calls the callee (client edges:
               the share of all client calls)
    errors     a decayed count of calls that failed
    latency    an exponentially weighted mean of the callee's duration, in ms
    last_seen  unix seconds

The graph lives in the control plane (SQLite, so it survives a restart) and is fed from
the same OTLP rows the trace store keeps (``observe``). ``successors(node, threshold)`` is
what a pre-starting scheduler asks: which algorithms usually follow this one.
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

CLIENT = "client"
SERVER_KIND, ERROR_STATUS = 2, 2
_ALPHA = 0.2  # weight of a new latency sample in the mean

_SCHEMA = """
CREATE TABLE IF NOT EXISTS edges (
    caller     TEXT NOT NULL,
    callee     TEXT NOT NULL,
    calls      REAL NOT NULL,
    errors     REAL NOT NULL,
    latency_ms REAL NOT NULL,
    updated    REAL NOT NULL,
    PRIMARY KEY (caller, callee)
);
"""


@dataclass(frozen=True)
class Edge:
    caller: str
    callee: str
    calls: float
    share: float
    errors: float
    latency_ms: float
    last_seen: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


class CallGraph:
    def __init__(self, path: str | Path, *, half_life: float = 3600.0) -> None:
        self.half_life = half_life
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # as the trace store: no fsync per batch of spans
            self._db.executescript(_SCHEMA)

    def _decay(self, value: float, since: float, now: float) -> float:
        return value * math.pow(0.5, max(0.0, now - since) / self.half_life)

    def observe(self, rows: Iterable[tuple], attributes: list[dict] | None = None, now: float | None = None) -> int:
        """Learn from span rows as ``traces.rows_and_attributes`` makes them: (trace_id, span_id,
        parent_id, name, kind, service, start_ns, end_ns, status, message, attributes_json).
        ``attributes``: each row's attributes already parsed (the trace store has them), else
        read from the rows' JSON. Returns the number of calls learned."""
        calls: dict[tuple[str, str], list] = {}  # per edge: [calls, errors, latency samples in order]
        learned = 0
        for i, (_tid, _sid, _pid, name, kind, _service, start, end, status, _msg, as_json) in enumerate(rows):
            if kind != SERVER_KIND or "@" not in name or name.startswith("call "):
                continue  # only a sidecar's inbound span is a call on an edge
            attrs = attributes[i] if attributes is not None else json.loads(as_json)
            caller = attrs.get("algomesh.caller") or CLIENT
            edge = calls.get((caller, name))
            if edge is None:
                edge = calls[caller, name] = [0, 0, []]
            edge[0] += 1
            edge[1] += status == ERROR_STATUS
            edge[2].append(max(0, end - start) / 1e6)
            learned += 1
        if not calls:
            return 0
        now = time.time() if now is None else now
        # One read and one write per edge per batch, not per call: a batch's calls share
        # ``now``, so decaying once and adding them all is what one at a time would give.
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for (caller, callee), (n_new, e_new, samples) in calls.items():
                    row = db.execute("SELECT calls, errors, latency_ms, updated FROM edges WHERE caller = ? AND callee = ?",
                                     (caller, callee)).fetchone()
                    if row is None:
                        n, e, lat, first = 0.0, 0.0, samples[0], samples[1:]
                    else:
                        n, e, lat, updated = row
                        n, e, first = self._decay(n, updated, now), self._decay(e, updated, now), samples
                    for ms in first:
                        lat = (1 - _ALPHA) * lat + _ALPHA * ms
                    db.execute("INSERT OR REPLACE INTO edges VALUES (?, ?, ?, ?, ?, ?)",
                               (caller, callee, n + n_new, e + e_new, lat, now))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return learned

    def edges(self, now: float | None = None) -> list[Edge]:
        """Every edge, its counts decayed to now; share = edge calls / calls into the caller."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute("SELECT caller, callee, calls, errors, latency_ms, updated FROM edges").fetchall()
        decayed = [(c, d, self._decay(n, u, now), self._decay(e, u, now), lat, u) for c, d, n, e, lat, u in rows]
        into: dict[str, float] = {}
        client_total = 0.0
        for caller, callee, n, *_ in decayed:
            into[callee] = into.get(callee, 0.0) + n
            if caller == CLIENT:
                client_total += n
        out = []
        for caller, callee, n, e, lat, u in decayed:
            base = client_total if caller == CLIENT else into.get(caller, 0.0)
            out.append(Edge(caller, callee, n, min(1.0, n / base) if base else 0.0, e, lat, u))
        return sorted(out, key=lambda x: (x.caller, x.callee))

    def successors(self, node: str, threshold: float = 0.5, now: float | None = None) -> list[Edge]:
        """The edges out of ``node`` whose share is at least ``threshold``."""
        return [e for e in self.edges(now) if e.caller == node and e.share >= threshold]

    def close(self) -> None:
        with self._lock:
            self._db.close()
