"""The algorithm inside its sidecar's process (manifest ``isolation = "shared"``, Python).

The terminal handler of the inbound stack, in place of the runner supervisor
(runner.py): the Python runner's own servicer (runners/python) loads the algorithm into
this process and applies it to the call's bytes directly: no runner process, no Unix
socket, no second gRPC server between the sidecar and the algorithm. Everything else —
the inbound stack (auth, permissions, limits, tracing, cache), the outbound stack for the
algorithm's pipes, the mesh certificate — is the same sidecar's.

What it gives up, and why it is a choice: the algorithm shares the sidecar's memory, so it
could read the mesh key (it names only this algorithm, and callees check their callers
themselves), and a crash of the algorithm (``os._exit``, a segfault in an extension) is the
instance's: the call fails INSTANCE_UNAVAILABLE instead of RUNNER_CRASHED, and the
launcher starts a new one. A call past its deadline is answered DEADLINE_EXCEEDED, but
its ``apply`` thread runs on (a thread cannot be killed; a runner process is recycled
instead). Use it for trusted code on the hot path (docs/runners.md).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from algomesh import _wire
from algomesh._errors import AlgomeshError, from_status

from .server import read_call
from .stack import Call, Handler, Reply
from .streaming import Chunks

log = logging.getLogger("algomesh.embedded")


class _Abort(Exception):
    def __init__(self, status: tuple) -> None:
        self.status = status


class _Context:
    """What the Python runner's servicer needs of a grpc.aio context: the call's forwarded
    metadata, abort (here: raise the typed error back to us), and for a streamed call
    ``write``, which sends one response chunk (the inbound stream's ``Chunks.write``)."""

    __slots__ = ("_metadata", "write")

    def __init__(self, metadata: tuple[tuple[str, str], ...], write=None) -> None:
        self._metadata = metadata
        self.write = write

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code, details: str = "", trailing_metadata=()) -> None:
        raise _Abort((code, details, trailing_metadata))


class EmbeddedRunner:
    """Same surface as ``RunnerProcess`` (start, stop, call) for the inbound stack."""

    def __init__(self, *, algorithm: str, version: str, path: str, entrypoint: str, concurrency: int,
                 outbound_socket: str) -> None:
        from algomesh.runners.python.runner import Algorithm, RunnerServicer, _CapturingStdout

        self.algorithm, self.version = algorithm, version
        self._trailing = ((_wire.ALGORITHM_KEY, algorithm), (_wire.VERSION_KEY, version))  # shared: a tuple
        # The algorithm's pipes (algomesh.client() inside it) reach this sidecar's outbound
        # socket, as a runner process's do; its output goes to the instance log unless a
        # call asks for it.
        os.environ[_wire.ENV_ADDRESS] = f"unix://{outbound_socket}"
        os.environ["ALGOMESH_ALGORITHM"], os.environ["ALGOMESH_VERSION"] = algorithm, version
        os.chdir(path)  # where a runner process would run it: relative paths in the algorithm work alike
        if not isinstance(sys.stdout, _CapturingStdout):
            sys.stdout = _CapturingStdout(sys.stdout)  # type: ignore[assignment]
        self._servicer = RunnerServicer(Algorithm(Path(path), entrypoint), max(1, concurrency), sys.stdout)
        self._load_error: AlgomeshError | None = None
        self.starts = 1

    async def start(self) -> None:
        t0 = time.monotonic()
        try:
            await self._servicer.Load(None, _Context(()))
        except _Abort as exc:
            self._load_error = _typed(exc)
            log.error("%s %s failed to load: %s", self.algorithm, self.version, self._load_error)
            return
        log.info("%s %s loaded in this process in %.3fs (isolation = shared)", self.algorithm, self.version,
                 time.monotonic() - t0)

    async def stop(self) -> None:
        self._servicer.pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, call: Call) -> Reply:
        if self._load_error is not None:
            raise self._load_error
        metadata = ((_wire.CALL_KEY, call.token),) if call.token else ()
        if call.traceparent:
            metadata += ((_wire.TRACEPARENT_KEY, call.traceparent),)
        try:  # (the inbound stack's deadline layer ends it at the call's deadline)
            if call.stream is None:
                body = await self._servicer.Apply(call.body, _Context(metadata))
            else:  # the request's chunks straight from the inbound stream, the answer's back to it
                await self._servicer.ApplyStream(call.stream, _Context(metadata, call.stream.write))
                body = b""
        except _Abort as exc:
            typed = _typed(exc)
            if typed.reason in ("ALGORITHM_ERROR", "INVALID_INPUT"):
                typed.metadata.setdefault("algorithm", self.algorithm)
                typed.metadata.setdefault("version", self.version)
            raise typed from None
        return Reply(body, list(self._trailing))


def local_pipes(pipes: Handler):
    """The outbound stack as ``sdk/_local.py`` calls it: what the outbound socket's handler
    reads from a pipe's metadata (server.py, surface "outbound"), without the socket."""
    async def pipe(body: bytes, metadata: tuple, timeout: float) -> tuple[bytes, list]:
        reply = await pipes(read_call(body, metadata, timeout if timeout and timeout > 0 else None,
                                      surface="outbound"))
        return reply.body, list(reply.trailing)
    return pipe


def local_streams(pipes: Handler):
    """The same for a streamed pipe: its request chunks from ``source``, its answer's to
    ``write`` (sdk/_local.py's queues), through the outbound stack; its trailers back."""
    async def stream(source, write, metadata: tuple, timeout: float) -> list:
        reply = await pipes(read_call(b"", metadata, timeout if timeout and timeout > 0 else None,
                                      surface="outbound", stream=Chunks(source, write)))
        return list(reply.trailing)
    return stream


def _typed(abort: _Abort) -> AlgomeshError:
    """The servicer aborts from inside ``except AlgomeshError``: that error, whole."""
    if isinstance(abort.__context__, AlgomeshError):
        return abort.__context__
    code, details, trailing = abort.status
    return from_status(code, details, dict(trailing or ()))
