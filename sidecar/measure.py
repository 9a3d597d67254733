"""Measure: the mesh's Prometheus metrics, and the layer that keeps them.

Every server of the mesh (the control plane's ingress, each sidecar's inbound and
outbound sides) counts what passes through it, labelled by the surface:

    algomesh_calls_total{surface, algorithm, version}           calls answered
    algomesh_errors_total{surface, algorithm, reason}           calls refused or failed, by reason
    algomesh_call_seconds{surface, algorithm, version}          latency (histogram)
    algomesh_cold_starts_total{surface, algorithm, version}     calls that started an instance
    algomesh_cache_hits_total{surface, algorithm, version}      answered from the result cache
    algomesh_cache_bytes / _entries / _evictions{algorithm, version}  a deterministic instance's result cache
    algomesh_in_flight{surface}                                  calls running now
    algomesh_instances{algorithm, version, state}                instances (the control plane's view)

``algorithm`` is what was asked for (``owner/name``); ``version`` the one that answered.
"""
from __future__ import annotations

import time

from algomesh import _wire
from algomesh._errors import AlgomeshError
from algomesh._refs import parse_target

from .metrics import Registry
from .stack import Call, Handler, Layer, Reply

CACHE_HIT_KEY = _wire.CACHE_HIT_KEY  # the result cache answers with it (cache.py)


class MeshMetrics:
    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        labels = ("surface", "algorithm", "version")
        self.calls = r.counter("algomesh_calls", "Calls answered.", labels)
        self.errors = r.counter("algomesh_errors", "Calls refused or failed, by reason.",
                                ("surface", "algorithm", "reason"))
        self.seconds = r.histogram("algomesh_call_seconds", "Call latency in seconds.", labels)
        self.cold = r.counter("algomesh_cold_starts", "Calls that had to start an instance.", labels)
        self.cache_hits = r.counter("algomesh_cache_hits", "Calls answered from the result cache.", labels)
        self.in_flight: dict[str, int] = {}
        r.gauge("algomesh_in_flight", "Calls running now.", ("surface",),
                collect=lambda: [((s,), n) for s, n in list(self.in_flight.items())])

    def watch_cache(self, cache, algorithm: str, version: str) -> None:
        """Gauges of a result cache (cache.py), read at each scrape."""
        labels, values = ("algorithm", "version"), (algorithm, version)
        self.registry.gauge("algomesh_cache_bytes", "Bytes the result cache holds (its bound: --cache-mb).",
                            labels, collect=lambda: [(values, cache.bytes)])
        self.registry.gauge("algomesh_cache_entries", "Responses the result cache holds.",
                            labels, collect=lambda: [(values, len(cache))])
        self.registry.gauge("algomesh_cache_evictions", "Responses evicted from the result cache so far.",
                            labels, collect=lambda: [(values, cache.evictions)])

    def render(self) -> bytes:
        return self.registry.render()


def measured(metrics: MeshMetrics, surface: str, me: str = "") -> Layer:
    """Count calls, errors by reason, latency and cold starts. ``me``: the algorithm this
    sidecar serves (inbound), else the call's target names it."""
    metrics.in_flight.setdefault(surface, 0)
    own = me.rpartition("@")[0] if me else ""

    def layer(inner: Handler) -> Handler:
        async def handle(call: Call) -> Reply:
            algorithm = own
            if not algorithm:
                try:
                    algorithm = parse_target(call.target).name
                except AlgomeshError:
                    algorithm = "(invalid)"
            metrics.in_flight[surface] += 1
            t0 = time.perf_counter()
            try:
                reply = await inner(call)
            except AlgomeshError as exc:
                metrics.errors.labels(surface, algorithm, exc.reason).inc()
                raise
            except Exception:  # a bug: the rescue layer answers INTERNAL
                metrics.errors.labels(surface, algorithm, "INTERNAL").inc()
                raise
            finally:
                metrics.in_flight[surface] -= 1
            version = cold = cached = ""
            for key, value in reply.trailing:
                if key == _wire.VERSION_KEY:
                    version = value
                elif key == _wire.COLD_START_KEY:
                    cold = value
                elif key == CACHE_HIT_KEY:
                    cached = value
            metrics.calls.labels(surface, algorithm, version).inc()
            metrics.seconds.labels(surface, algorithm, version).observe(time.perf_counter() - t0)
            if cold == "1":
                metrics.cold.labels(surface, algorithm, version).inc()
            if cached == "1":
                metrics.cache_hits.labels(surface, algorithm, version).inc()
            return reply
        return handle
    return layer
