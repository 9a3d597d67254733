"""Pre-start: start what usually follows an algorithm before it is asked for.

The whitepaper's promise: "If one algorithm of yours consistently calls another, the
system will pre-start your dependent models to reduce compute time". When the control
plane starts an instance of ``A@v`` (a call found none ready, a reservation, a scale-up),
and when a call reaches a running A through the ingress while one of A's followers is not
running (scaled to zero), every algorithm that follows A in the learned call graph with a
share of at least ``threshold`` is started in the background, and so on along the chain
(A -> B -> C starts B and C) and across fan-outs, so the pipeline pays one cold start, not
one per stage. The graph is ``edges.CallGraph``; its successors are cached for a second so
the per-call check costs a dictionary lookup.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from algomesh.v1 import registry_pb2

from .edges import CallGraph

log = logging.getLogger("algomesh.prestart")


class PreStarter:
    def __init__(self, graph: CallGraph, launcher, version_of: Callable[[str, str], registry_pb2.VersionInfo | None],
                 *, threshold: float = 0.5, on_prestart: Callable[[str, str], None] | None = None) -> None:
        self.graph = graph
        self.launcher = launcher
        self.version_of = version_of
        self.threshold = threshold
        self.on_prestart = on_prestart
        self._successors: dict[str, tuple[float, list]] = {}
        self._looked: dict[str, float] = {}  # node -> when a call to it may look at its followers again

    def _next(self, node: str) -> list:
        now = time.monotonic()
        hit = self._successors.get(node)
        if hit is None or hit[0] < now:
            hit = (now + 1.0, self.graph.successors(node, self.threshold))
            self._successors[node] = hit
        return hit[1]

    def called(self, name: str, version: str) -> None:
        """A call reached ``name@version`` (running): start its followers that are not.
        Looked at most every half second per algorithm, so a busy one pays a dictionary
        lookup per call, not a walk of its followers."""
        node, now = f"{name}@{version}", time.monotonic()
        if self._looked.get(node, 0.0) > now:
            return
        self._looked[node] = now + 0.5
        if self._next(node):
            info = self.version_of(name, version)
            if info is not None:
                self.follow(info)

    def follow(self, info: registry_pb2.VersionInfo) -> list[str]:
        """Start the strong successors of ``info``'s version, along whole chains; returns
        the ones started. Does not wait for them."""
        start = f"{info.manifest.name}@{info.manifest.version}"
        seen, todo, started = {start}, [start], []
        while todo:
            node = todo.pop()
            for edge in self._next(node):
                if edge.callee in seen:
                    continue
                seen.add(edge.callee)
                todo.append(edge.callee)
                name, _, version = edge.callee.rpartition("@")
                target = self.version_of(name, version)
                if target is not None and self.launcher.prestart(target):
                    started.append(edge.callee)
                    if self.on_prestart is not None:
                        self.on_prestart(name, version)
        return started
