"""The exec runner process (``python -m algomesh.runners.exec``): algomesh.v1.Runner for
any executable that speaks JSON lines on stdin/stdout (docs/exec.md is the protocol).

The runner starts ``ALGOMESH_CONCURRENCY`` copies of ``$ALGOMESH_PATH/$ALGOMESH_ENTRYPOINT``
at Load, waits for each to say ``{"ready": true}``, and hands each call to an idle copy
as one line; the copy answers with one line (a result or an error) and may pipe to other
algorithms in between (the runner makes the Mesh.Call with the call's headers and answers
with one line). What a copy writes to stderr goes to the instance log. A copy that exits
after it was ready takes the runner down with its exit code, so the sidecar reports
RUNNER_CRASHED and starts afresh on the next call.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

import algomesh
from algomesh import _wire
from algomesh._context import CALL_CONTEXT, forwarded
from algomesh._errors import STATUS_DETAILS_KEY, AlgomeshError, error, from_status, to_status
from algomesh._payload import Payload, content_type_name, decode
from algomesh.sidecar.server import new_server
from algomesh.v1 import payload_pb2, runner_pb2

log = logging.getLogger("algomesh.runner.exec")

PROTOCOL = 1
# A line holds at most one payload: 64 MiB of bytes is ~86 MiB of base64, plus the envelope.
LINE_LIMIT = 128 * 1024 * 1024
TAIL_BYTES = 2560      # of stderr, kept for stack traces (the error trailer's budget)
QUOTE_BYTES = 200      # of a malformed line, quoted in the error
STOP_GRACE = 2.0
_CODES = {c.value[0]: c for c in grpc.StatusCode}


class ProtocolError(Exception):
    """A line from the executable that breaks the protocol; the text names the problem."""


def _tail(buf: bytearray, data: bytes, limit: int = TAIL_BYTES) -> None:
    buf += data
    if len(buf) > limit:
        del buf[: len(buf) - limit]


def _quote(raw: bytes) -> str:
    text = raw[:QUOTE_BYTES].decode("utf-8", "replace").rstrip("\n")
    return text + ("…" if len(raw) > QUOTE_BYTES else "")


def _dumps(doc: Any) -> bytes:
    """One line: compact JSON, UTF-8 (newlines inside strings are escaped by JSON)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def input_fields(kind: str, value: Any) -> dict[str, Any]:
    """A decoded payload as the executable sees it: {"type": json|text|binary, "data": ...}
    (JSON as a value, text as a string, bytes as base64)."""
    if kind == "binary":
        return {"type": "binary", "data": base64.b64encode(value).decode("ascii")}
    return {"type": kind, "data": value}


def output_payload(doc: dict[str, Any]) -> payload_pb2.Payload:
    """{"type", "data"} from the executable -> a Payload; ProtocolError names what is wrong."""
    kind = doc.get("type", "json")
    if "data" not in doc:
        raise ProtocolError('no "data"')
    data = doc["data"]
    if kind == "json":
        try:
            raw = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except (ValueError, UnicodeEncodeError) as exc:
            raise ProtocolError(f"json data cannot be sent: {exc}") from None
        return Payload(raw, "json").to_proto()
    if kind == "text":
        if not isinstance(data, str):
            raise ProtocolError(f'"type": "text" needs a string "data", not {type(data).__name__}')
        try:
            return Payload(data.encode("utf-8"), "text").to_proto()
        except UnicodeEncodeError as exc:
            raise ProtocolError(f"text data is not valid Unicode: {exc}") from None
    if kind == "binary":
        if not isinstance(data, str):
            raise ProtocolError(f'"type": "binary" needs base64 in a string "data", not {type(data).__name__}')
        try:
            return Payload(base64.b64decode(data, validate=True), "binary").to_proto()
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"binary data is not base64: {exc}") from None
    raise ProtocolError(f'unknown "type" {kind!r} (json, text or binary)')


def error_fields(exc: AlgomeshError) -> dict[str, Any]:
    """A pipe's error as the executable sees it; "status" lets it answer a call with the
    very same status (the reason survives to the caller)."""
    code, _, trailing = to_status(exc)
    return {"reason": exc.reason, "code": code.name, "message": exc.message, "metadata": exc.metadata,
            "stacktrace": exc.stacktrace, "status": base64.b64encode(trailing[0][1]).decode("ascii")}


def _stacktrace(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return value if isinstance(value, str) else ""


@dataclass
class Call:
    id: int
    forward: tuple[tuple[str, str], ...]   # algomesh-call, traceparent, tracestate: for its pipes
    deadline: float | None                 # time.monotonic() seconds
    capture: bool                          # the caller wants what it printed
    future: asyncio.Future
    stderr: bytearray = field(default_factory=bytearray)  # what the copy wrote to stderr meanwhile


class Copy:
    """One process of the executable, one call at a time."""

    def __init__(self, runner: "ExecRunner", index: int) -> None:
        self.runner, self.index = runner, index
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: f.exception())  # a copy stopped while another failed
        self.call: Call | None = None
        self.abandoned: set[int] = set()   # calls failed on a malformed line; their late answers are dropped
        self.stderr_tail = bytearray()
        self._write = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        pid = self.proc.pid if self.proc else "-"
        return f"{self.runner.entrypoint} (copy {self.index}, pid {pid})"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(self.runner.executable), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=str(self.runner.path), limit=LINE_LIMIT)
        self._stderr_task = asyncio.create_task(self._read_stderr())
        self._stdout_task = asyncio.create_task(self._read_stdout())

    # input ---------------------------------------------------------------------------

    async def send(self, line: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        async with self._write:
            try:
                self.proc.stdin.write(line)
                await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it exited: its stdout's end says so, and the runner goes down with it

    def begin(self, call: Call) -> None:
        self.call = call
        call.future.add_done_callback(lambda _: self._release(call))

    def _release(self, call: Call) -> None:
        call.future.exception()  # retrieved: the Apply may have given up on it
        if self.call is call:
            self.call = None
            self.runner.idle.put_nowait(self)

    # output --------------------------------------------------------------------------

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        out = sys.stderr.buffer
        while chunk := await self.proc.stderr.read(65536):
            out.write(chunk)
            out.flush()
            _tail(self.stderr_tail, chunk)
            call = self._current()
            if call is not None:
                _tail(call.stderr, chunk)

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # longer than LINE_LIMIT (the reader skipped it)
                self._malformed(f"it wrote a line longer than {LINE_LIMIT} bytes", b"")
                continue
            if not line:
                break
            if not line.endswith(b"\n"):
                self._malformed("it wrote a last line without a newline", line)
                break
            self._line(line)
        await self._exited()

    async def _exited(self) -> None:
        assert self.proc is not None
        try:
            rc = await asyncio.wait_for(self.proc.wait(), 2.0)
        except asyncio.TimeoutError:  # closed its stdout but lives on: it can no longer answer
            self.proc.kill()
            rc = await self.proc.wait()
        try:
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 2.0)  # its last words, for the trace
        except asyncio.TimeoutError:
            pass
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        if not self.ready.done():
            self.ready.set_exception(error(
                "ALGORITHM_LOAD_FAILED", f"{self.runner.entrypoint} {how} before it was ready",
                stacktrace=self._stderr_trace(self.stderr_tail), error_type="ExecExit"))
            return
        if self.ready.exception() is not None:
            return  # its load failed, and Load says so
        self.runner.copy_exited(self, rc, how)

    def _stderr_trace(self, buf: bytearray) -> str:
        text = bytes(buf).decode("utf-8", "replace").strip()
        return (f"stderr of {self.name}:\n{text}" if text
                else f"{self.name} wrote nothing to stderr")

    def _line(self, raw: bytes) -> None:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self._malformed(f"it wrote a line that is not JSON ({exc})", raw)
            return
        if not isinstance(doc, dict):
            self._malformed(f"it wrote a line that is a JSON {type(doc).__name__}, not an object", raw)
            return
        if "pipe" in doc:
            self._pipe(doc["pipe"], raw)
        elif not self.ready.done():
            self._before_ready(doc, raw)
        elif "id" in doc:
            self._answer(doc, raw)
        else:
            self._malformed('it wrote an object with neither "id" nor "pipe"', raw)

    def _before_ready(self, doc: dict[str, Any], raw: bytes) -> None:
        if doc.get("ready") is True:
            self.ready.set_result(None)
            return
        if "error" in doc:
            exc = self._algorithm_error(doc["error"], "ALGORITHM_LOAD_FAILED", self.stderr_tail)
        else:
            exc = error("ALGORITHM_LOAD_FAILED",
                        f'{self.runner.entrypoint} broke the exec protocol: it wrote {_quote(raw)!r} before '
                        '{"ready": true}', stacktrace=self._stderr_trace(self.stderr_tail),
                        error_type="ExecProtocolError")
        self.ready.set_exception(exc)

    def _current(self) -> Call | None:
        """The call in flight on this copy (not yet answered)."""
        call = self.call
        return call if call is not None and not call.future.done() else None

    def _answer(self, doc: dict[str, Any], raw: bytes) -> None:
        call, answered = self._current(), doc["id"]
        if call is None or answered != call.id:
            if isinstance(answered, int) and answered in self.abandoned:
                self.abandoned.discard(answered)
                log.warning("%s answered call %s late (after a protocol error); dropped", self.name, answered)
            elif call is None:
                log.warning("%s answered call %r, but no call is in flight on it; dropped", self.name, answered)
            else:
                self._malformed(f"it wrote an answer to call {answered!r} while call {call.id} is in flight", raw)
            return
        printed = doc.get("stdout", "")
        if not isinstance(printed, str):
            self._malformed(f'its answer to call {call.id} has a "stdout" that is not a string', raw)
            return
        if "error" in doc:
            exc = self._algorithm_error(doc["error"], "ALGORITHM_ERROR", call.stderr)
            if call.capture:
                if printed and exc.reason == "ALGORITHM_ERROR":
                    exc.metadata.setdefault("stdout", printed)
            else:
                self._print(printed)
            call.future.set_exception(exc)
            return
        try:
            payload = output_payload(doc)
        except ProtocolError as exc:
            self._malformed(f"its answer to call {call.id}: {exc}", raw)
            return
        call.future.set_result((payload, printed))

    def _algorithm_error(self, err: Any, reason: str, stderr: bytearray) -> AlgomeshError:
        """The executable's {"error": ...}: a message (or a whole object with message, type,
        stacktrace), or a pipe's error passed on with its "status" (kept as it came)."""
        if isinstance(err, dict) and isinstance(err.get("status"), str) and reason == "ALGORITHM_ERROR":
            passed = self._passed_status(err["status"])
            if passed is not None:
                if not passed.stacktrace:
                    passed.stacktrace = _stacktrace(err.get("stacktrace")) or (
                        f"{self.name} passed on a pipe's error without a stack trace\n" + self._stderr_trace(stderr))
                return passed
        if isinstance(err, dict):
            message = err.get("message")
            message = message if isinstance(message, str) and message else json.dumps(err, ensure_ascii=False)
            kind = err.get("type") if isinstance(err.get("type"), str) and err.get("type") else "Error"
            trace = _stacktrace(err.get("stacktrace"))
        else:
            message = err if isinstance(err, str) else json.dumps(err, ensure_ascii=False)
            kind, trace = "Error", ""
        if reason == "ALGORITHM_LOAD_FAILED":
            message = f"{kind}: {message}"
        return error(reason, message, stacktrace=trace or self._stderr_trace(stderr), error_type=kind)

    @staticmethod
    def _passed_status(text: str) -> AlgomeshError | None:
        from google.rpc import status_pb2
        try:
            raw = base64.b64decode(text, validate=True)
            status = status_pb2.Status.FromString(raw)
        except (binascii.Error, ValueError, DecodeError):
            return None
        code = _CODES.get(status.code)
        if code is None or code is grpc.StatusCode.OK:
            return None
        exc = from_status(code, status.message, {STATUS_DETAILS_KEY: raw})
        return exc if exc.reason != "INTERNAL" else None

    def _malformed(self, problem: str, raw: bytes) -> None:
        """A line that breaks the protocol fails the call in flight (ALGORITHM_ERROR naming
        the problem), or is logged when there is none."""
        message = f"{self.runner.entrypoint} broke the exec protocol: {problem}"
        if raw:
            message += f"; the line: {_quote(raw)!r}"
        call = self._current()
        if not self.ready.done():
            self.ready.set_exception(error("ALGORITHM_LOAD_FAILED", message,
                                           stacktrace=self._stderr_trace(self.stderr_tail),
                                           error_type="ExecProtocolError"))
            return
        if call is None:
            log.warning("%s; no call is in flight on %s", message, self.name)
            return
        self.abandoned.add(call.id)
        call.future.set_exception(error("ALGORITHM_ERROR", message, error_type="ExecProtocolError",
                                        stacktrace=self._stderr_trace(call.stderr)))

    def _print(self, printed: str) -> None:
        if printed:
            sys.stdout.write(printed)
            sys.stdout.flush()

    # pipes ---------------------------------------------------------------------------

    def _pipe(self, spec: Any, raw: bytes) -> None:
        if not isinstance(spec, dict):
            self._malformed('it wrote a "pipe" that is not an object', raw)
            return
        task = asyncio.create_task(self._do_pipe(spec, self._current()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _do_pipe(self, spec: dict[str, Any], call: Call | None) -> None:
        reply: dict[str, Any] = {"id": spec.get("id")}
        try:
            target = spec.get("target")
            if not isinstance(target, str):
                raise error("INVALID_TARGET", 'a pipe needs a "target": "owner/name[/version]"')
            try:
                payload = output_payload(spec)
            except ProtocolError as exc:
                raise error("INVALID_INPUT", f"the pipe's input: {exc}") from None
            CALL_CONTEXT.set(call.forward if call else ())  # this task's own context
            timeout = _wire.DEFAULT_TIMEOUT
            if call is not None and call.deadline is not None:
                timeout = min(timeout, max(call.deadline - time.monotonic(), 0.001))
            algo = self.runner.client.algo(target).set_options(timeout=timeout)
            resp = await algo.pipe(Payload(payload.data, content_type_name(payload.content_type)))
            reply.update(input_fields(resp.metadata.content_type, resp.result))
        except AlgomeshError as exc:
            reply["error"] = error_fields(exc)
        except Exception as exc:  # never leave the executable waiting for its reply
            log.exception("pipe from %s failed", self.name)
            reply["error"] = error_fields(error("INTERNAL", f"the exec runner failed to pipe: {exc!r}"))
        await self.send(_dumps({"pipe": reply}))

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except (ProcessLookupError, asyncio.TimeoutError):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


class ExecRunner:
    """algomesh.v1.Runner: Load (typed messages) and Apply (raw bytes)."""

    def __init__(self, path: Path, entrypoint: str, concurrency: int) -> None:
        self.path, self.entrypoint, self.concurrency = path, entrypoint, max(1, concurrency)
        self.executable = (path / entrypoint)
        self.copies: list[Copy] = []
        self.idle: asyncio.Queue[Copy] = asyncio.Queue()
        self.client = algomesh.async_client(address=os.environ.get(_wire.ENV_ADDRESS))
        self.stopping = False
        self._ids = itertools.count(1)
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._load_seconds = 0.0

    def runtime(self) -> str:
        try:
            with open(self.executable, "rb") as f:
                first = f.readline(200)
        except OSError:
            first = b""
        how = first[2:].decode("utf-8", "replace").strip() if first.startswith(b"#!") else "a program"
        return f"exec {PROTOCOL} ({how})"

    async def _load(self) -> float:
        t0 = time.perf_counter()
        self.stopping = False
        if not self.executable.is_file():
            raise error("ALGORITHM_LOAD_FAILED", f"FileNotFoundError: {self.entrypoint} is not a file",
                        error_type="FileNotFoundError")
        if not os.access(self.executable, os.X_OK):
            raise error("ALGORITHM_LOAD_FAILED", f"PermissionError: {self.entrypoint} is not executable "
                        "(chmod +x it, and start it with #!)", error_type="PermissionError")
        self.copies = [Copy(self, i) for i in range(self.concurrency)]
        try:
            for c in self.copies:
                await c.start()
            await asyncio.gather(*(c.ready for c in self.copies))
        except AlgomeshError:
            await self.stop_copies()
            raise
        except OSError as exc:  # could not start it at all (a bad #! line, ...)
            await self.stop_copies()
            raise error("ALGORITHM_LOAD_FAILED", f"{type(exc).__name__}: cannot run {self.entrypoint}: {exc}",
                        error_type=type(exc).__name__) from None
        for c in self.copies:
            self.idle.put_nowait(c)
        return time.perf_counter() - t0

    async def Load(self, request, context):
        async with self._load_lock:
            if not self._loaded:
                try:
                    self._load_seconds = await self._load()
                except AlgomeshError as exc:
                    await context.abort(*to_status(exc))
                self._loaded = True
        return runner_pb2.LoadResponse(duration=self._load_seconds, runtime=self.runtime())

    async def Apply(self, body: bytes, context) -> bytes:
        try:
            if not self._loaded:
                raise error("INTERNAL", "Apply before Load")
            try:
                request = payload_pb2.CallRequest.FromString(body)
            except DecodeError:
                raise error("INVALID_INPUT", "the request body is not an algomesh.v1.CallRequest") from None
            value = decode(request.input)  # malformed JSON / non-UTF-8 text: INVALID_INPUT
            left = context.time_remaining()
            call = Call(id=next(self._ids), forward=forwarded(context.invocation_metadata()),
                        deadline=None if left is None else time.monotonic() + left,
                        capture=request.capture_stdout, future=asyncio.get_running_loop().create_future())
            line = _dumps({"id": call.id, **input_fields(content_type_name(request.input.content_type), value)})
            copy = await self.idle.get()
            copy.begin(call)
            t0 = time.perf_counter()
            # Shielded: a caller that gives up must not cut a line in half; the copy stays
            # busy with the call until it answers.
            await asyncio.shield(copy.send(line))
            payload, printed = await asyncio.shield(call.future)
            duration = time.perf_counter() - t0
            if not request.capture_stdout:
                copy._print(printed)
                printed = ""
            return payload_pb2.CallResponse(output=payload, stdout=printed, duration=duration).SerializeToString()
        except AlgomeshError as exc:
            await context.abort(*to_status(exc))

    def copy_exited(self, copy: Copy, rc: int, how: str) -> None:
        """A copy died after it was ready: the runner exits with its code (so the sidecar
        reports RUNNER_CRASHED to the call in flight and restarts the runner)."""
        if self.stopping:
            return
        self.stopping = True
        log.error("%s %s; the exec runner exits", copy.name, how)
        for other in self.copies:
            if other is not copy and other.proc is not None and other.proc.returncode is None:
                other.proc.kill()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc if 0 <= rc < 256 else 128 + (-rc if rc < 0 else 1))

    async def stop_copies(self) -> None:
        self.stopping = True
        await asyncio.gather(*(c.stop() for c in self.copies), return_exceptions=True)


RUNNER_SERVICE = runner_pb2.DESCRIPTOR.services_by_name["Runner"].full_name


def _watch_children_with_pidfds() -> None:
    """Python 3.11's default child watcher waits in a thread per child and now and then
    loses a fast exit ("Unknown child process"); pidfds do not (3.12 uses them by itself)."""
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)


async def serve(socket: str, path: Path, entrypoint: str, concurrency: int) -> None:
    _watch_children_with_pidfds()
    runner = ExecRunner(path, entrypoint, concurrency)
    server, health = new_server([RUNNER_SERVICE])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RUNNER_SERVICE, {
        "Load": grpc.unary_unary_rpc_method_handler(
            runner.Load, request_deserializer=runner_pb2.LoadRequest.FromString,
            response_serializer=runner_pb2.LoadResponse.SerializeToString),
        "Apply": grpc.unary_unary_rpc_method_handler(runner.Apply),  # bytes in, bytes out
    }),))
    Path(socket).unlink(missing_ok=True)
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    await health.serving()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.stop_copies()
    await server.stop(grace=1)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env = os.environ
    missing = [k for k in ("ALGOMESH_RUNNER_SOCKET", "ALGOMESH_ENTRYPOINT") if not env.get(k)]
    if missing:
        sys.exit(f"algomesh exec runner: {', '.join(missing)} not set (see docs/runners.md)")
    path = Path(env.get("ALGOMESH_PATH") or os.getcwd()).resolve()
    concurrency = int(env.get("ALGOMESH_CONCURRENCY") or "1")
    asyncio.run(serve(env["ALGOMESH_RUNNER_SOCKET"], path, env["ALGOMESH_ENTRYPOINT"], concurrency))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
