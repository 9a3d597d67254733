"""The exec runner's line protocol (docs/exec.md), driven over its real Runner socket.

Each test starts ``python -m algomesh.runners.exec`` on an executable written here (a
Python script, so every line it writes is exactly what the test wants) and calls
Load/Apply as the sidecar does. The happy paths through a real mesh are the conformance
suite's (tests/conformance, conformance/exec); this file covers what only an exec
executable can get wrong: malformed lines, early exits, the handshake, passing a pipe's
status on, and what a pipe carries to the sidecar.
"""
from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from algomesh._errors import AlgomeshError, error, from_rpc_error, to_status
from algomesh._payload import BINARY, JSON, TEXT
from algomesh.v1 import payload_pb2, runner_pb2, runner_pb2_grpc

# The test executable: reads requests, answers by the op in a JSON request's data.
ALGO = r'''#!{python}
import base64, json, os, sys, time

def out(doc):
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()

{load}
out({{"ready": True}})
for line in sys.stdin:
    req = json.loads(line)
    rid, data = req["id"], req["data"]
    op = data.get("op") if req["type"] == "json" and isinstance(data, dict) else None
    if op is None:
        out({{"id": rid, "type": req["type"], "data": data}})
    elif op == "request":
        out({{"id": rid, "type": "json", "data": req}})
    elif op == "raw":  # lines as given, then (if "then") the proper answer, late
        for raw in data["lines"]:
            sys.stdout.write(raw + "\n")
        sys.stdout.flush()
        if data.get("then"):
            out({{"id": rid, "type": "json", "data": "late"}})
    elif op == "answer":  # an answer made of these fields
        out(dict(data["fields"], id=rid))
    elif op == "print":
        out({{"id": rid, "type": "json", "data": "printed", "stdout": data["value"]}})
    elif op == "stderr":
        sys.stderr.write(data["value"] + "\n")
        sys.stderr.flush()
        out({{"id": rid, "error": {{"message": "see stderr"}}}})
    elif op == "exit":
        sys.exit(data["code"])
    elif op == "sleep":
        time.sleep(data["s"])
        out({{"id": rid, "type": "json", "data": os.getpid()}})
    elif op == "loads":
        out({{"id": rid, "type": "json", "data": LOADS}})
    elif op in ("pipe", "pass"):
        out({{"pipe": {{"id": "p1", "target": data["target"], "type": "json", "data": data["input"]}}}})
        reply = json.loads(sys.stdin.readline())["pipe"]
        if op == "pass" and "error" in reply:
            out({{"id": rid, "error": reply["error"]}})
        else:
            out({{"id": rid, "type": "json", "data": reply}})
'''

LOADS = "LOADS = 1"


def write_algo(folder: Path, load: str = LOADS, *, name: str = "algo.py", body: str | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body if body is not None else ALGO.format(python=sys.executable, load=load))
    path.chmod(0o755)
    return name


class Runner:
    """One exec runner process, called as its sidecar would."""

    def __init__(self, folder: Path, entrypoint: str, *, concurrency: int = 1, address: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="amx", dir="/tmp"))  # a short Unix socket path
        self.socket = str(self.dir / "r.sock")
        self.log = self.dir / "stdout.log"      # the instance log: the runner's stdout
        self.errors = self.dir / "stderr.log"
        env = dict(os.environ, ALGOMESH_RUNNER_SOCKET=self.socket, ALGOMESH_PATH=str(folder),
                   ALGOMESH_ENTRYPOINT=entrypoint, ALGOMESH_CONCURRENCY=str(concurrency),
                   ALGOMESH_PARENT_PID=str(os.getpid()))
        if address:
            env["ALGOMESH_ADDRESS"] = address
        with open(self.log, "wb") as out, open(self.errors, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "algomesh.runners.exec"], env=env, cwd=folder,
                                         stdout=out, stderr=err)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = runner_pb2_grpc.RunnerStub(self.channel)
        self._apply = self.channel.unary_unary("/algomesh.v1.Runner/Apply")

    def load(self) -> runner_pb2.LoadResponse:
        return self.stub.Load(runner_pb2.LoadRequest(algorithm="t/exec", version="1.0.0"), timeout=30)

    def load_error(self) -> AlgomeshError:
        with pytest.raises(grpc.RpcError) as e:
            self.load()
        return from_rpc_error(e.value)

    def apply(self, value, *, capture: bool = False, timeout: float = 20, metadata=()) -> payload_pb2.CallResponse:
        if isinstance(value, bytes):
            payload = payload_pb2.Payload(content_type=BINARY, data=value)
        elif isinstance(value, str):
            payload = payload_pb2.Payload(content_type=TEXT, data=value.encode())
        else:
            payload = payload_pb2.Payload(content_type=JSON, data=json.dumps(value).encode())
        body = payload_pb2.CallRequest(input=payload, capture_stdout=capture).SerializeToString()
        return payload_pb2.CallResponse.FromString(self._apply(body, timeout=timeout, metadata=metadata or None))

    def result(self, value, **kw):
        out = self.apply(value, **kw).output
        return json.loads(out.data) if out.content_type == JSON else out.data

    def error(self, value, **kw) -> tuple[grpc.StatusCode, AlgomeshError]:
        with pytest.raises(grpc.RpcError) as e:
            self.apply(value, **kw)
        return e.value.code(), from_rpc_error(e.value)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class FakeSidecar:
    """The sidecar's outbound socket: Mesh/Call, recording what each pipe carried."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ams", dir="/tmp")
        self.address = f"unix://{self.dir}/out.sock"
        self.seen: list[dict] = []
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("algomesh.v1.Mesh", {
            "Call": grpc.unary_unary_rpc_method_handler(self.call)}),))
        self.server.add_insecure_port(self.address)
        self.server.start()

    def call(self, body: bytes, context) -> bytes:
        md = dict(context.invocation_metadata())
        request = payload_pb2.CallRequest.FromString(body)
        self.seen.append({"metadata": md, "remaining": context.time_remaining(),
                          "input": json.loads(request.input.data)})
        if md["algomesh-target"] == "t/missing":
            code, message, trailing = to_status(error("ALGORITHM_NOT_FOUND", "no algorithm named t/missing",
                                                      algorithm="t/missing"))
            context.set_trailing_metadata(trailing)
            context.abort(code, message)
        return payload_pb2.CallResponse(output=payload_pb2.Payload(
            content_type=TEXT, data=f"echo: {request.input.data.decode()}".encode())).SerializeToString()

    def stop(self) -> None:
        self.server.stop(0)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def start(tmp_path):
    runners: list[Runner] = []

    def _start(entrypoint: str | None = None, **kw) -> Runner:
        r = Runner(tmp_path, entrypoint or write_algo(tmp_path), **kw)
        runners.append(r)
        return r
    yield _start
    for r in runners:
        r.close()


@pytest.fixture(scope="module")
def sidecar():
    s = FakeSidecar()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, sidecar):
    """One loaded runner (one copy) for the tests that leave it as they found it."""
    folder = tmp_path_factory.mktemp("shared")
    r = Runner(folder, write_algo(folder), address=sidecar.address)
    r.load()
    yield r
    r.close()


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


# ---------------------------------------------------------------------------- the happy path


def test_values_cross_as_json_text_and_base64(shared):
    r = shared
    seen = r.result({"op": "request"})  # the request line as the executable read it
    assert isinstance(seen.pop("id"), int) and seen == {"type": "json", "data": {"op": "request"}}
    got = r.apply(b"\x00\xffbytes")
    assert (got.output.content_type, got.output.data) == (BINARY, b"\x00\xffbytes")
    got = r.apply("tëxt \u0000 ✓\nline two")
    assert (got.output.content_type, got.output.data.decode()) == (TEXT, "tëxt \u0000 ✓\nline two")
    assert r.result({"a": [1, 2.5, None, True, "ü"]}) == {"a": [1, 2.5, None, True, "ü"]}


def test_the_answer_picks_its_type(shared):
    r = shared
    for fields, ct, data in (({"type": "text", "data": "t"}, TEXT, b"t"),
                             ({"type": "binary", "data": base64.b64encode(b"\x01\x02").decode()}, BINARY, b"\x01\x02"),
                             ({"data": "a JSON string"}, JSON, b'"a JSON string"')):  # json by default
        out = r.apply({"op": "answer", "fields": fields}).output
        assert (out.content_type, out.data) == (ct, data)


def test_load_is_the_handshake_and_runs_once(start, tmp_path):
    r = start(write_algo(tmp_path, "import time; time.sleep(0.4); LOADS = 1"))
    first = r.load()
    assert first.duration >= 0.4 and first.runtime.startswith("exec 1 (")
    t0 = time.monotonic()
    again = r.load()
    assert time.monotonic() - t0 < 0.3 and again.duration == first.duration
    assert r.result({"op": "loads"}) == 1


def test_apply_before_load_is_internal(start):
    r = start()
    code, err = r.error({"op": "loads"})
    assert err.reason == "INTERNAL" and "before Load" in err.message


def test_copies_serve_calls_at_once(start):
    r = start(concurrency=3)
    r.load()
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        pids = list(pool.map(lambda _: r.result({"op": "sleep", "s": 0.6}), range(3)))
    assert time.monotonic() - t0 < 1.5, "three copies ran the calls one after another"
    assert len(set(pids)) == 3
    assert sorted(pids) == sorted(children(r.proc.pid))


def test_captured_output(shared):
    r = shared
    resp = r.apply({"op": "print", "value": "to the caller ✓\n"}, capture=True)
    assert resp.stdout == "to the caller ✓\n"
    resp = r.apply({"op": "print", "value": "to the log ✓\n"})
    assert resp.stdout == ""
    deadline = time.monotonic() + 5
    while "to the log ✓" not in r.log.read_text("utf-8") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "to the log ✓" in r.log.read_text("utf-8")
    assert "to the caller" not in r.log.read_text("utf-8")


# ---------------------------------------------------------------------------- errors


def test_an_error_answer_is_algorithm_error(shared):
    r = shared
    code, err = r.error({"op": "answer", "fields": {"error": {
        "message": "no good", "type": "ValueError", "stacktrace": ["frame 1", "frame 2"]}, "stdout": "said\n"}},
        capture=True)
    assert code == grpc.StatusCode.UNKNOWN and err.reason == "ALGORITHM_ERROR"
    assert (err.message, err.error_type, err.stacktrace) == ("no good", "ValueError", "frame 1\nframe 2")
    assert err.metadata["stdout"] == "said\n"
    _, err = r.error({"op": "answer", "fields": {"error": "just a message"}})
    assert (err.message, err.error_type) == ("just a message", "Error")
    assert err.stacktrace.strip()  # never empty: the copy's stderr stands in
    _, err = r.error({"op": "stderr", "value": "Traceback: it broke here"})
    assert "it broke here" in err.stacktrace


@pytest.mark.parametrize("lines, problem", [
    (["this is not JSON"], "not JSON"),
    (["[1, 2]"], "a JSON list, not an object"),
    (['{"hello": 1}'], 'neither "id" nor "pipe"'),
    (['{"id": 999, "data": 1}'], "an answer to call 999 while call"),
    (['{"id": "1", "data": 1}'], "an answer to call '1' while call"),
])
def test_a_malformed_line_fails_the_call_and_the_copy_serves_on(shared, lines, problem):
    r = shared
    code, err = r.error({"op": "raw", "lines": lines, "then": True}, timeout=10)
    assert code == grpc.StatusCode.UNKNOWN and err.reason == "ALGORITHM_ERROR"
    assert "broke the exec protocol" in err.message and problem in err.message, err.message
    assert err.error_type == "ExecProtocolError" and err.stacktrace.strip()
    # The late answer to the failed call is dropped; the next call gets its own.
    assert r.result({"n": 2}) == {"n": 2}


@pytest.mark.parametrize("fields, problem", [
    ({"type": "binary", "data": "not base64!"}, "not base64"),
    ({"type": "text", "data": 5}, "needs a string"),
    ({"type": "yaml", "data": "x"}, "unknown \"type\" 'yaml'"),
    ({"type": "json"}, 'no "data"'),
    ({"data": 1, "stdout": 5}, '"stdout" that is not a string'),
])
def test_a_bad_answer_names_the_problem(shared, fields, problem):
    r = shared
    _, err = r.error({"op": "answer", "fields": fields}, timeout=10)
    assert err.reason == "ALGORITHM_ERROR" and problem in err.message, err.message
    assert r.result(7) == 7


def test_a_copy_exiting_mid_call_takes_the_runner_down_with_its_code(start):
    r = start(concurrency=2)
    r.load()
    copies = children(r.proc.pid)
    code, _ = r.error({"op": "exit", "code": 3}, timeout=10)
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED)
    assert r.proc.wait(10) == 3  # the sidecar sees the runner die: RUNNER_CRASHED
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in copies):
        assert time.monotonic() < deadline, "the other copy outlived the runner"
        time.sleep(0.05)


@pytest.mark.parametrize("load, reason_text, trace_text", [
    ("sys.stderr.write('cannot open model.bin\\n'); sys.exit(4)", "exited with code 4 before it was ready",
     "cannot open model.bin"),
    ("out({'error': {'message': 'no model', 'type': 'IOError', 'stacktrace': 'at load'}}); sys.exit(1)",
     "IOError: no model", "at load"),
    ("print('Loading...', flush=True)", "broke the exec protocol", "Loading..."),
])
def test_load_failures(start, tmp_path, load, reason_text, trace_text):
    r = start(write_algo(tmp_path, load + "\nLOADS = 1"))
    err = r.load_error()
    assert err.reason == "ALGORITHM_LOAD_FAILED", err
    assert reason_text in err.message
    assert trace_text in err.message + err.stacktrace
    assert children(r.proc.pid) == []


def test_an_entrypoint_that_is_not_executable(start, tmp_path):
    (tmp_path / "plain.sh").write_text("echo hi\n")
    err = start("plain.sh").load_error()
    assert err.reason == "ALGORITHM_LOAD_FAILED" and "not executable" in err.message


def test_sigterm_stops_the_copies(start):
    r = start(concurrency=2)
    r.load()
    copies = children(r.proc.pid)
    assert len(copies) == 2
    r.proc.send_signal(signal.SIGTERM)
    assert r.proc.wait(10) == 0
    assert all(not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split()[2] == "Z"
               for p in copies)


# ---------------------------------------------------------------------------- pipes


def test_a_pipe_forwards_the_calls_headers_and_deadline(shared, sidecar):
    r = shared
    headers = (("algomesh-call", "tok-123"), ("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
               ("tracestate", "k=v"), ("algomesh-unrelated", "not forwarded"))
    got = r.result({"op": "pipe", "target": "t/echo", "input": {"x": "ü"}}, metadata=headers, timeout=20)
    assert got == {"id": "p1", "type": "text", "data": 'echo: {"x":"ü"}'}
    md = sidecar.seen[-1]["metadata"]
    assert md["algomesh-target"] == "t/echo"
    assert (md["algomesh-call"], md["tracestate"]) == ("tok-123", "k=v")
    assert md["traceparent"].startswith("00-" + "a" * 32)
    assert "algomesh-unrelated" not in md
    # What remains of the Apply's 20 s, not the default 300 s (grpc-timeout rounds up a little).
    assert 0 < sidecar.seen[-1]["remaining"] <= 21
    assert sidecar.seen[-1]["input"] == {"x": "ü"}


def test_a_pipes_error_reaches_the_executable_and_can_be_passed_on(shared, sidecar):
    r = shared
    reply = r.result({"op": "pipe", "target": "t/missing", "input": 1})
    assert reply["id"] == "p1"
    assert (reply["error"]["reason"], reply["error"]["code"]) == ("ALGORITHM_NOT_FOUND", "NOT_FOUND")
    assert reply["error"]["message"] == "no algorithm named t/missing" and reply["error"]["status"]
    # Answering the call with that error object returns the pipe's status as it came.
    code, err = r.error({"op": "pass", "target": "t/missing", "input": 1})
    assert code == grpc.StatusCode.NOT_FOUND
    assert (err.reason, err.message, err.metadata.get("algorithm")) == (
        "ALGORITHM_NOT_FOUND", "no algorithm named t/missing", "t/missing")
    assert err.stacktrace.strip()
    # A bad target is the executable's own mistake, told in the reply (it never hangs).
    reply = r.result({"op": "pipe", "target": "not a target", "input": 1})
    assert reply["error"]["reason"] == "INVALID_TARGET"
