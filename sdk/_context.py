"""The call an algorithm is serving, as its runner tells it: pipes made while serving it
carry its token back to the sidecar (``algomesh-call``), which then knows the pipeline's
path and deadline. Empty outside an algorithm."""
from __future__ import annotations

from contextvars import ContextVar

CALL_TOKEN: ContextVar[str] = ContextVar("algomesh_call_token", default="")
