"""Pre-start: start what usually follows an algorithm before it is asked for.

The whitepaper's promise: "If one algorithm of yours consistently calls another, the
system will pre-start your dependent models to reduce compute time". When the control
plane locates ``A@v`` (a client's call, or another algorithm's pipe, that finds no
instance ready), every algorithm that follows A in the learned call graph with a share of
at least ``threshold`` is started in the background, and so on along the chain (A -> B ->
C starts B and C) and across fan-outs, so the pipeline pays one cold start, not one per
stage. The graph is ``edges.CallGraph``.
"""
from __future__ import annotations

import logging
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

    def follow(self, info: registry_pb2.VersionInfo) -> list[str]:
        """Start the strong successors of ``info``'s version, along whole chains; returns
        the ones started. Does not wait for them."""
        start = f"{info.manifest.name}@{info.manifest.version}"
        seen, todo, started = {start}, [start], []
        while todo:
            node = todo.pop()
            for edge in self.graph.successors(node, self.threshold):
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
