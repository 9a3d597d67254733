"""The runner supervisor: the inbound stack's terminal handler.

Starts the algorithm's runner process, waits for its socket, calls ``Load`` once, then
forwards each call's bytes to ``Runner/Apply``. A runner that dies is reported to the
call in flight as RUNNER_CRASHED and restarted by the next call. A call that overruns
its deadline leaves its apply running inside the runner, so the runner is recycled as
soon as no other call is using it (as Algorithmia kills a timed-out algorithm).

A streamed call goes to ``StreamRunner/ApplyStream`` instead, its chunks pumped both ways
(streaming.py). A runner that does not serve it answers UNIMPLEMENTED, reported as
STREAMING_UNSUPPORTED. A stream the caller gives up on does not recycle the runner: the
algorithm's next read or write of the stream fails, which ends its apply.

``external=True`` (the sidecar's ``--external-runner``, used in Kubernetes pods): the
runner is another container that serves the socket itself; the supervisor connects to
it instead of spawning a process. A crash is the socket going away: the connection
leaves READY, the next call reconnects (waiting for the restarted runner, which the
kubelet restarts) and calls ``Load`` again; recycling closes the connection only.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import grpc

from algomesh import _wire
from algomesh._errors import AlgomeshError, error, from_rpc_error
from algomesh.v1 import runner_pb2, runner_pb2_grpc

from .deadline import remaining
from .procs import Child
from .runtimes import RunnerSpec, start_runner
from .stack import Call, Reply
from .streaming import APPLY_STREAM_METHOD, bare, pump

log = logging.getLogger("algomesh.runner")

APPLY_METHOD = "/algomesh.v1.Runner/Apply"
RUNNER_CHANNEL_OPTIONS = _wire.CHANNEL_OPTIONS + (
    # grpcio sends a Unix socket's path as :authority, which some HTTP/2 servers (Rust's h2,
    # under tonic) refuse; a runner is always local.
    ("grpc.default_authority", "localhost"),
    # The runner's socket appears a moment after the process starts: retry every 20 ms,
    # not after gRPC's default 1 s backoff, or every cold start pays that second.
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 50),
)
START_TIMEOUT = 60.0     # process start until its socket answers
LOAD_TIMEOUT = 600.0     # the algorithm's load()
STOP_GRACE = 3.0


async def _serving(channel: grpc.aio.Channel, sock: Path) -> None:
    """Until the runner answers on its socket: first wait (cheaply) for the socket file, so
    the channel's first connection attempt is the one that works."""
    while not sock.exists():
        await asyncio.sleep(0.01)
    await channel.channel_ready()


class RunnerProcess:
    def __init__(self, *, algorithm: str, version: str, runtime: str, spec: RunnerSpec,
                 env: dict[str, str], external: bool = False, early: Child | None = None) -> None:
        self.algorithm, self.version, self.runtime = algorithm, version, runtime
        self.spec = spec
        self.external = external  # the runner is served by someone else (another container)
        self._env = env
        self._trailing = [(_wire.ALGORITHM_KEY, algorithm), (_wire.VERSION_KEY, version)]
        self._proc: Child | None = None
        self._channel: grpc.aio.Channel | None = None
        self._apply = None
        self._apply_stream = None
        self._ready = False
        self._lock = asyncio.Lock()
        self._in_flight = 0
        self._recycle = False
        self._load_error: AlgomeshError | None = None  # from the eager load, told once
        self.starts = 0
        self._watch: asyncio.Future | None = None  # external: notices the connection leaving READY
        self._early = early  # the runner process, started before the sidecar itself (its first start)

    # lifecycle --------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        if self.external:
            return self._channel is not None and self._ready
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start eagerly (at instance start). A failing load() is kept and reported to
        the first call instead of being retried by it."""
        try:
            await self._ensure()
        except AlgomeshError as exc:
            log.error("%s %s failed to start: %s", self.algorithm, self.version, exc)
            self._load_error = exc

    async def _ensure(self) -> None:
        if self._ready and self.alive:
            return
        async with self._lock:
            if self._ready and self.alive:
                return
            if self._load_error is not None:
                exc, self._load_error = self._load_error, None
                raise exc
            await self._stop_process()
            await self._spawn_and_load()

    async def _spawn_and_load(self) -> None:
        sock = Path(self.spec.socket)
        self.starts += 1
        t0 = time.monotonic()
        if self.external:  # the runner container serves the socket; never unlink it under it
            self._channel = grpc.aio.insecure_channel(f"unix://{sock}", options=RUNNER_CHANNEL_OPTIONS)
            exited = asyncio.get_running_loop().create_future()  # no process of ours to exit
        else:
            if self._early is not None:
                self._proc, self._early = self._early, None
            else:
                self._proc = start_runner(self.runtime, self.spec, self._env)
            self._channel = grpc.aio.insecure_channel(f"unix://{sock}", options=RUNNER_CHANNEL_OPTIONS)
            exited = asyncio.ensure_future(self._proc.wait())
        ready = asyncio.ensure_future(_serving(self._channel, sock))
        try:
            done, _ = await asyncio.wait({exited, ready}, timeout=START_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if exited in done:
            raise error("LAUNCH_FAILED", f"the {self.runtime} runner exited with code "
                        f"{self._proc.returncode} before serving; see the instance log",
                        algorithm=self.algorithm, version=self.version)
        exited.cancel()
        if ready not in done:
            await self._stop_process()
            raise error("LAUNCH_FAILED", f"the {self.runtime} runner did not serve within {START_TIMEOUT:.0f}s",
                        algorithm=self.algorithm, version=self.version)
        stub = runner_pb2_grpc.RunnerStub(self._channel)
        try:
            resp = await stub.Load(runner_pb2.LoadRequest(algorithm=self.algorithm, version=self.version),
                                   timeout=LOAD_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            typed = from_rpc_error(exc)
            if self.external:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    typed = error("RUNNER_CRASHED", "the runner went away during load()",
                                  algorithm=self.algorithm, version=self.version)
            elif typed.reason in ("MESH_UNAVAILABLE", "INTERNAL") and not self.alive:
                typed = error("RUNNER_CRASHED", f"the runner died during load() (exit {self._proc.returncode})",
                              algorithm=self.algorithm, version=self.version)
            await self._stop_process()
            raise typed from None
        self._apply = self._channel.unary_unary(APPLY_METHOD)
        self._apply_stream = self._channel.stream_stream(APPLY_STREAM_METHOD)
        self._ready = True
        if self.external:
            self._watch = asyncio.ensure_future(self._watch_connection(self._channel))
        log.info("%s %s runner ready in %.3fs (load() %.3fs, %s)", self.algorithm, self.version,
                 time.monotonic() - t0, resp.duration, resp.runtime)

    async def _watch_connection(self, channel: grpc.aio.Channel) -> None:
        """External runner: the connection leaving READY means the runner went away (its
        container exited or restarts); the next call reconnects and loads again."""
        await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        if channel is self._channel and self._ready:
            log.warning("%s %s: the runner's socket went away", self.algorithm, self.version)
            self._ready = False

    async def _stop_process(self) -> None:
        self._ready = False
        self._apply = self._apply_stream = None
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        proc, self._proc = self._proc, None
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_process()

    # the terminal handler -----------------------------------------------------------

    async def __call__(self, call: Call) -> Reply:
        await self._ensure()
        proc, apply, apply_stream = self._proc, self._apply, self._apply_stream
        self._in_flight += 1
        try:
            metadata = ((_wire.CALL_KEY, call.token),) if call.token else ()
            if call.traceparent:  # the apply span's: the algorithm's pipes carry it back out
                metadata += ((_wire.TRACEPARENT_KEY, call.traceparent),)
            if call.stream is not None:
                await pump(apply_stream(timeout=remaining(call), metadata=metadata or None), call.stream)
                return Reply(b"", list(self._trailing))
            rpc = apply(call.body, timeout=remaining(call), metadata=metadata or None)
            return Reply(await rpc, list(self._trailing))
        except grpc.aio.AioRpcError as exc:
            raise await self._failure(exc, proc, streamed=call.stream is not None) from None
        except asyncio.CancelledError:
            if call.stream is None:
                self._recycle = True  # the caller gave up; its apply may still be running
            raise
        finally:
            self._in_flight -= 1
            if self._recycle and self._in_flight == 0:
                self._recycle = False
                asyncio.ensure_future(self.stop())

    async def _failure(self, exc: grpc.aio.AioRpcError, proc: Child | None, streamed: bool = False) -> AlgomeshError:
        code = exc.code()
        if streamed and code == grpc.StatusCode.UNIMPLEMENTED:
            return error("STREAMING_UNSUPPORTED", f"{self.algorithm} {self.version} runs on the {self.runtime} "
                         "runner, which does not take streamed calls (StreamRunner)",
                         algorithm=self.algorithm, version=self.version, runtime=self.runtime)
        if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            self._recycle = self._recycle or not streamed  # a stream's apply ends at its next read or write
            return error("DEADLINE_EXCEEDED", f"{self.algorithm} {self.version} did not finish before the deadline",
                         algorithm=self.algorithm, version=self.version)
        typed = from_rpc_error(exc)
        if not bare(exc.trailing_metadata()):  # (a forwarded MESH_UNAVAILABLE has a grpc_code, yet was typed)
            # The runner answered with a typed error (ALGORITHM_ERROR, INVALID_INPUT, ...). Its
            # own errors name this algorithm; one it passed on from a pipe names the stage it
            # came from already (set by that stage's sidecar), and keeps it.
            if typed.reason in ("ALGORITHM_ERROR", "ALGORITHM_LOAD_FAILED", "INVALID_INPUT"):
                typed.metadata.setdefault("algorithm", self.algorithm)
                typed.metadata.setdefault("version", self.version)
            return typed
        live = proc.returncode is None if proc is not None else self.external
        if code != grpc.StatusCode.UNAVAILABLE and live:
            return typed  # a bare status from a live runner
        # The connection broke: the process died (or is dying). Say how.
        rc = None
        if proc is not None:
            try:
                rc = await asyncio.wait_for(proc.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
        self._ready = False
        how = (f"was killed by signal {-rc}" if rc is not None and rc < 0
               else f"exited with code {rc}" if rc is not None else "stopped answering")
        log.error("%s %s runner %s during a call", self.algorithm, self.version, how)
        return error("RUNNER_CRASHED", f"{self.algorithm} {self.version}: the algorithm's process {how} "
                     "during the call; it restarts on the next call",
                     algorithm=self.algorithm, version=self.version, exit_code=str(rc))
