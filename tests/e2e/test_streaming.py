"""Streamed calls on a real mesh: 200 MiB through the ingress and through a two-stage pipe
at bounded memory in every process, typed errors at every step of a stream, spans."""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time

import pytest

import algomesh
from tests.conftest import descendants, give_up_mid_stream, start_mesh, stop_mesh, stored_trace, write_algorithm

MiB = 1 << 20
BIG = 200            # MiB streamed by the memory tests
GROWTH_BOUND = 64    # MiB any one process may grow by while they run (issue 9's bound)

ROT = "bytes((i + {n}) % 256 for i in range(256))"

# rotates every byte by 1, chunk by chunk (a generator: the answer streams back)
ROT1 = f"""
TABLE = {ROT.format(n=1)}

def apply(stream):
    for chunk in stream:
        yield chunk.translate(TABLE)
"""

# rotates by 1 and streams the result on to st/rot2 from inside apply; answers with its answer
RELAY = f"""
import algomesh

TABLE = {ROT.format(n=1)}
client = algomesh.client()

def apply(stream):
    return client.algo("{{target}}").stream(chunk.translate(TABLE) for chunk in stream)
"""

ROT2 = f"""
TABLE = {ROT.format(n=2)}

def apply(stream):
    for chunk in stream:
        yield chunk.translate(TABLE)
"""

# passes its stream on untouched and answers with the next stage's answer: the chunks go
# on as they came both ways (sdk/_stream.py, runners/python/runner.py), its printing still its own
PASS = """
import algomesh

client = algomesh.client()

def apply(stream):
    print("passing", stream.content_type)
    return client.algo("{target}"){options}.stream(stream)
"""

# the same from an async apply, with the async client
APASS = """
import algomesh

client = None

async def apply(stream):
    global client
    client = client or algomesh.async_client()
    return client.algo("{target}").stream(stream)
"""

CAN_CALL = '[permissions]\ncan_call = ["{}"]\n'

# what carries a blocking apply's streamed pipes in a runner process (sdk/_onloop.py)
VIA = """
import algomesh

def apply(x):
    return type(algomesh.client()._call_stream).__name__
"""

# streams back what it reads, and fails once it has read 3 MiB
HALF = """
def apply(stream):
    seen = 0
    for chunk in stream:
        seen += len(chunk)
        if seen > 3 * 1024 * 1024:
            raise ValueError(f"gave up after {seen} bytes")
        yield chunk
"""

# reads the stream as a file; a JSON answer (a value, not an iterator) and captured output
COUNT = """
import hashlib

def apply(stream):
    h, n = hashlib.sha256(), 0
    while block := stream.read(100_000):
        h.update(block)
        n += len(block)
    print("counted", n, stream.content_type)
    return {"bytes": n, "sha256": h.hexdigest(), "content_type": stream.content_type}
"""

# dies in the middle of a stream
DIES = """
import os

def apply(stream):
    for i, chunk in enumerate(stream):
        if i == 2:
            os._exit(3)
        yield chunk
"""

# an async apply: reads with `async for`, answers with an async generator; a unary call
# to the same algorithm still gets the decoded value
ASYNC_UPPER = """
import algomesh

async def apply(value):
    if not isinstance(value, algomesh.Stream):
        return value.upper()
    async def out():
        async for chunk in value:
            yield chunk.upper()
    return out()
"""

EXEC = """#!/bin/sh
echo '{"ready": true}'
while read -r line; do echo '{"id": 1, "type": "text", "data": "unary only"}'; done
"""


def blocks(n: int, table: bytes | None = None, digest=None):
    """``n`` MiB of random bytes, made as they are sent (each MiB numbered, so a lost or
    reordered chunk changes the digest); ``digest`` is fed what ``table`` makes of them."""
    block = bytearray(os.urandom(MiB))
    for i in range(n):
        block[:8] = i.to_bytes(8, "big")
        out = bytes(block)
        if digest is not None:
            digest.update(out.translate(table) if table else out)
        yield out


def status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class Peaks:
    """Peak resident memory of processes over a span of time: ``clear_refs`` resets each
    one's high-water mark (VmHWM) to its current RSS at the start."""

    def __init__(self, pids: list[int]) -> None:
        self.start = {}
        for pid in pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            self.start[pid] = status(pid, "VmRSS")

    def growth(self) -> dict[int, int]:
        return {pid: status(pid, "VmHWM") - rss for pid, rss in self.start.items()}


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def label(pid: int) -> str:
    cmd = cmdline(pid).split()
    if pid == os.getpid():
        return "client"
    if "up" in cmd:
        return "ingress"
    if "algomesh.sidecar" in cmd:
        return f"sidecar {cmd[cmd.index('--algorithm') + 1]}"
    with open(f"/proc/{pid}/stat") as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
    return "runner " + label(parent).split()[-1]


def on_the_way(mesh, *algorithms: str) -> list[int]:
    """This process, the control plane (the ingress) and the sidecars and runners of
    ``algorithms``."""
    pids = [os.getpid(), mesh.process.pid]
    for pid in descendants(mesh.process.pid):
        sidecar = cmdline(pid)
        if any(f"--algorithm {a} " in sidecar for a in algorithms):
            pids += [pid, *descendants(pid)]
    return pids


@pytest.fixture(scope="module")
def published(mesh, tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    for folder, name, code, toml in [
        ("rot", "st/rot", ROT1, ""),
        ("rot2", "st/rot2", ROT2, ""),
        ("relay", "st/relay", RELAY.format(target="st/rot2"), '[permissions]\ncan_call = ["st/rot2"]\n'),
        ("sneaky", "st/sneaky", RELAY.format(target="st/rot2"), ""),
        ("half", "st/half", HALF, ""),
        ("count", "st/count", COUNT, ""),
        ("dies", "st/dies", DIES, ""),
        ("aupper", "st/aupper", ASYNC_UPPER, ""),
        ("pass", "st/pass", PASS.format(target="st/rot2", options=""), CAN_CALL.format("st/rot2")),
        ("apass", "st/apass", APASS.format(target="st/rot2"), CAN_CALL.format("st/rot2")),
        ("pcount", "st/pcount", PASS.format(target="st/count", options=""), CAN_CALL.format("st/count")),
        ("pcount2", "st/pcount2", PASS.format(target="st/count", options=".set_options(stdout=True)"),
         CAN_CALL.format("st/count")),
        ("aphalf", "st/aphalf", APASS.format(target="st/half"), CAN_CALL.format("st/half")),
        ("phalf", "st/phalf", PASS.format(target="st/half", options=""), CAN_CALL.format("st/half")),
        ("via", "st/via", VIA, ""),
    ]:
        mesh.publish(write_algorithm(root / folder, name, "1.0.0", code, extra_toml=toml))
    exe = root / "exec"
    write_algorithm(exe, "st/exec", "1.0.0", EXEC, entrypoint="run.sh")
    (exe / "algomesh.toml").write_text('name = "st/exec"\nversion = "1.0.0"\nruntime = "exec"\nentrypoint = "run.sh"\n')
    (exe / "run.sh").chmod(0o755)
    mesh.publish(exe)


def test_200_mib_through_the_ingress_at_bounded_memory(mesh, client, published):
    rot = client.algo("st/rot")
    assert rot.stream(b"hal").read() == b"ibm"  # warm: the instance runs before we measure
    peaks = Peaks(on_the_way(mesh, "st/rot"))
    assert len(peaks.start) == 4  # this process, the ingress, the sidecar, the runner
    want, got, size = hashlib.sha256(), hashlib.sha256(), 0
    t0 = time.monotonic()
    answer = rot.stream(blocks(BIG, bytes((i + 1) % 256 for i in range(256)), want))
    for chunk in answer.chunks():
        got.update(chunk)
        size += len(chunk)
    seconds = time.monotonic() - t0
    assert size == BIG * MiB and got.digest() == want.digest()
    grown = {label(p): g // MiB for p, g in peaks.growth().items()}
    assert max(grown.values()) < GROWTH_BOUND, grown
    meta = answer.metadata
    assert (meta.algorithm, meta.version, meta.content_type) == ("st/rot", "1.0.0", "binary")
    assert meta.duration > 0 and meta.trace_id
    print(f"{BIG} MiB in {seconds:.2f}s; growth MiB by process: {grown}")


def test_200_mib_through_a_two_stage_pipe_at_bounded_memory(mesh, client, published):
    relay = client.algo("st/relay")
    assert relay.stream(b"hal").read() == b"kdo"  # +1 in st/relay, +2 in st/rot2
    peaks = Peaks(on_the_way(mesh, "st/relay", "st/rot2"))
    assert len(peaks.start) == 6
    want, got, size = hashlib.sha256(), hashlib.sha256(), 0
    answer = relay.stream(blocks(BIG, bytes((i + 3) % 256 for i in range(256)), want))
    for chunk in answer.chunks():
        got.update(chunk)
        size += len(chunk)
    assert size == BIG * MiB and got.digest() == want.digest()
    grown = {label(p): g // MiB for p, g in peaks.growth().items()}
    assert max(grown.values()) < GROWTH_BOUND, grown
    print(f"growth MiB by process: {grown}")
    # one trace: the client's call, the relay's apply and its pipe, the second stage's apply
    trace = stored_trace(client, answer.metadata.trace_id, 6, names=["pipe st/rot2", "apply st/rot2@1.0.0"])
    spans = {s.name: s for s in trace.spans}
    assert {"call st/relay", "st/relay@1.0.0", "apply st/relay@1.0.0", "pipe st/rot2", "st/rot2@1.0.0",
            "apply st/rot2@1.0.0"} <= set(spans)


@pytest.mark.parametrize("relay", ["st/pass", "st/apass"])
def test_a_stage_passes_its_stream_on_and_the_answer_back(client, published, relay):
    algo = client.algo(relay)
    assert algo.stream(b"hal").read() == b"jcn"  # +2 in st/rot2, nothing in the relay
    empty = algo.stream(b"")
    assert empty.read() == b"" and empty.content_type == "binary"
    want, got, size = hashlib.sha256(), hashlib.sha256(), 0
    answer = algo.stream(blocks(20, bytes((i + 2) % 256 for i in range(256)), want))
    for chunk in answer.chunks():
        got.update(chunk)
        size += len(chunk)
    assert size == 20 * MiB and got.digest() == want.digest()
    assert answer.metadata.algorithm == relay and answer.metadata.duration > 0


@pytest.mark.parametrize("relay", ["st/pcount", "st/pcount2"])  # pcount2 asks st/count for its printing
def test_passed_on_a_stream_keeps_its_content_type_and_the_caller_gets_the_relays_printing(client, published,
                                                                                          relay):
    import json
    answer = client.algo(relay).set_options(stdout=True).stream("héllo" * 100_000)
    assert json.loads(answer.read()) == {"bytes": 600_000, "content_type": "text",
                                         "sha256": hashlib.sha256(("héllo" * 100_000).encode()).hexdigest()}
    assert answer.content_type == "json"
    assert answer.metadata.stdout == "passing text\n"  # its own, not st/count's "counted ..."
    assert client.algo(relay).stream(b"").read() == b'{"bytes":0,"sha256":"' + \
        hashlib.sha256(b"").hexdigest().encode() + b'","content_type":"binary"}'


@pytest.mark.parametrize("relay", ["st/phalf", "st/aphalf"])
def test_an_error_mid_stream_comes_back_typed_through_a_stage_that_passes_it_on(client, published, relay):
    got = 0
    with pytest.raises(algomesh.AlgorithmError) as e:
        for chunk in client.algo(relay).stream(blocks(10)).chunks():
            got += len(chunk)
    assert e.value.reason == "ALGORITHM_ERROR" and "gave up after" in e.value.message
    assert e.value.algorithm == "st/half" and 0 < got <= 4 * MiB


def test_a_blocking_stage_passes_its_stream_on_on_its_runners_loop(client, published):
    # the relay's thread only waits: the chunks go from the runner's loop to the sidecar's
    # outbound socket and back there (sdk/_onloop.py); st/pass above checks what arrives
    assert client.algo("st/via").pipe(None).result == "LoopStream"
    give_up_mid_stream(client, "st/pass", b"z", b"abc", b"cde")  # both stages free again at once


def test_a_garbage_chunk_passed_on_is_invalid_input_where_it_is_read(mesh, published):
    """A stage passes chunks on undecoded: a caller's chunk that is not a CallChunk is
    refused by the stage that reads it, with the same typed error, and nothing hangs."""
    import grpc
    from algomesh._errors import from_rpc_error
    from algomesh.v1 import payload_pb2
    head = payload_pb2.CallChunk(content_type=payload_pb2.CONTENT_TYPE_BINARY, data=b"hal").SerializeToString()
    with grpc.insecure_channel(mesh.address) as ch:
        call = ch.stream_stream("/algomesh.v1.Mesh/CallStream")
        with pytest.raises(grpc.RpcError) as e:
            list(call(iter([head, b"\xff\xff\xff\xff garbage"]),
                      metadata=(("algomesh-target", "st/pass"),) + mesh.auth, timeout=20))
    err = from_rpc_error(e.value)
    assert err.reason == "INVALID_INPUT" and "not an algomesh.v1.CallChunk" in err.message


def test_a_stream_is_traced_like_a_unary_call(client, published):
    answer = client.algo("st/rot").stream(blocks(3))
    assert sum(len(c) for c in answer.chunks()) == 3 * MiB
    trace = stored_trace(client, answer.metadata.trace_id, 3, names=["apply st/rot@1.0.0"])
    names = [s.name for s in trace.spans]
    assert names.count("call st/rot") == 1 and names.count("st/rot@1.0.0") == 1
    assert names.count("apply st/rot@1.0.0") == 1
    inbound = next(s for s in trace.spans if s.name == "st/rot@1.0.0")
    attrs = dict(inbound.attributes)
    assert attrs["algomesh.stream"] == "true"
    assert int(attrs["algomesh.request_bytes"]) >= 3 * MiB and int(attrs["algomesh.response_bytes"]) >= 3 * MiB


def test_a_value_answer_a_file_source_and_captured_output(client, published, tmp_path):
    data = os.urandom(5 * MiB + 123)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        answer = client.algo("st/count").set_options(stdout=True).stream(f)
        out = answer.read()
    import json
    assert json.loads(out) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                               "content_type": "binary"}
    assert answer.content_type == "json" and answer.metadata.stdout == f"counted {len(data)} binary\n"
    assert client.algo("st/count").stream("héllo").read() == b'{"bytes":6,"sha256":"' + \
        hashlib.sha256("héllo".encode()).hexdigest().encode() + b'","content_type":"text"}'


def test_save_and_the_async_client(mesh, published, tmp_path):
    want = hashlib.sha256()

    async def source():
        for block in blocks(4, bytes((i + 1) % 256 for i in range(256)), want):
            yield block

    async def main():
        async with algomesh.async_client(mesh.api_key, mesh.address) as c:
            answer = c.algo("st/rot").stream(source())
            n = await answer.save(tmp_path / "out.bin")
            return n, answer.metadata

    n, meta = asyncio.run(main())
    assert n == 4 * MiB and meta.algorithm == "st/rot" and meta.content_type == "binary"
    assert hashlib.sha256((tmp_path / "out.bin").read_bytes()).digest() == want.digest()


def test_an_async_apply_streams_both_ways(client, published):
    aupper = client.algo("st/aupper")
    answer = aupper.stream(b"abc" * (3 * MiB))  # 9 MiB, cut into chunks
    assert sum(len(c) for c in answer.chunks()) == 9 * MiB and answer.content_type == "binary"
    assert aupper.stream("hello").read() == b"HELLO"  # bytes out: the chunks are bytes
    assert aupper.pipe("unary").result == "UNARY"


def test_an_algorithm_error_mid_stream_is_typed_with_its_trace(client, published):
    answer = client.algo("st/half").stream(blocks(10))
    got = 0
    with pytest.raises(algomesh.AlgorithmError) as e:
        for chunk in answer.chunks():
            got += len(chunk)
    assert e.value.reason == "ALGORITHM_ERROR" and "gave up after" in e.value.message
    assert "ValueError" in e.value.stacktrace and "raise ValueError" in e.value.stacktrace
    assert e.value.algorithm == "st/half"
    assert 0 < got <= 4 * MiB  # what it streamed before it failed arrived first
    assert client.algo("st/half").stream(b"fine").read() == b"fine"  # and it serves the next


def test_a_runner_that_dies_mid_stream_is_runner_crashed(client, published):
    t0 = time.monotonic()
    with pytest.raises(algomesh.RunnerCrashedError):
        client.algo("st/dies").stream(blocks(20)).read()
    assert time.monotonic() - t0 < 20
    assert client.algo("st/dies").stream(b"ab").read() == b"ab"  # restarted by the next call


def test_a_client_that_gives_up_frees_the_instance(client, published):
    give_up_mid_stream(client, "st/rot", b"y", b"abc", b"bcd")  # (its concurrency is 1)


def test_a_stream_past_its_deadline_is_deadline_exceeded(client, published):
    def slow():
        while True:
            time.sleep(0.05)
            yield b"s" * 1000

    t0 = time.monotonic()
    with pytest.raises(algomesh.DeadlineExceededError):
        for _ in client.algo("st/rot").set_options(timeout=1.5).stream(slow()).chunks():
            pass
    assert time.monotonic() - t0 < 5
    assert client.algo("st/rot").stream(b"a").read() == b"b"


def test_the_cli_streams_files_and_stdin(mesh, published, tmp_path):
    out = mesh.cli("call", "st/rot", "--stream", "-f", "-", input=b"abc")
    assert out.returncode == 0 and out.stdout == b"bcd", out.stderr
    data = os.urandom(3 * MiB)
    (tmp_path / "in.bin").write_bytes(data)
    out = mesh.cli("call", "st/rot", "--stream", "-f", str(tmp_path / "in.bin"), "-o", str(tmp_path / "out.bin"),
                   "--meta")
    assert out.returncode == 0 and b"st/rot 1.0.0  binary" in out.stderr and b"streamed" in out.stderr
    assert (tmp_path / "out.bin").read_bytes() == data.translate(bytes((i + 1) % 256 for i in range(256)))
    out = mesh.cli("call", "st/exec", "--stream", "-t", "x")
    assert out.returncode != 0 and b"STREAMING_UNSUPPORTED" in out.stderr


def test_a_runner_without_streams_is_streaming_unsupported(client, published):
    assert client.algo("st/exec").pipe("x").result == "unary only"
    with pytest.raises(algomesh.InvalidError) as e:
        client.algo("st/exec").stream(b"x" * 10).read()
    assert e.value.reason == "STREAMING_UNSUPPORTED" and "exec runner" in e.value.message


def test_permissions_apply_to_streams(mesh, client, published):
    with pytest.raises(algomesh.PermissionError_) as e:
        client.algo("st/sneaky").stream(b"abc").read()
    assert e.value.reason == "PERMISSION_DENIED" and "permissions.can_call" in e.value.message
    with algomesh.client("amk_nobody_wrong", mesh.address) as stranger:
        with pytest.raises(algomesh.PermissionError_) as e:
            stranger.algo("st/rot").stream(b"abc").read()
    assert e.value.reason == "UNAUTHENTICATED"
    key = client.create_key("st", algorithms=["st/count"]).secret  # may call st/count only
    with algomesh.client(key, mesh.address) as scoped:
        assert scoped.algo("st/count").stream(b"ok").read().startswith(b'{"bytes":2')
        with pytest.raises(algomesh.PermissionError_) as e:
            scoped.algo("st/rot").stream(b"abc").read()
    assert e.value.reason == "PERMISSION_DENIED"


def test_bad_sources_are_invalid_input(client, published):
    with pytest.raises(algomesh.InvalidError):
        client.algo("st/rot").stream(42)
    with pytest.raises(algomesh.InvalidError):
        client.algo("st/rot").stream(b"x", content_type="yaml")
    with pytest.raises(algomesh.InvalidError) as e:
        client.algo("st/rot").stream([b"fine", 7]).read()
    assert "bytes or str" in e.value.message


@pytest.fixture(scope="module")
def small_mesh(tmp_path_factory):
    m = start_mesh(tmp_path_factory.mktemp("small"), "--max-stream-mb", "2")
    yield m
    stop_mesh(m)


AMPLIFY = """
import algomesh

client = algomesh.client()

def apply(stream):
    data = stream.read()
    return client.algo("st/rot2").stream(data for _ in range(8))
"""


def test_a_stream_over_the_limit_is_payload_too_large_on_every_hop(small_mesh, tmp_path):
    small_mesh.publish(write_algorithm(tmp_path / "rot2", "st/rot2", "1.0.0", ROT2))
    small_mesh.publish(write_algorithm(tmp_path / "amp", "st/amp", "1.0.0", AMPLIFY,
                                       extra_toml='[permissions]\ncan_call = ["st/rot2"]\n'))
    with small_mesh.client() as c:
        assert len(c.algo("st/rot2").stream(blocks(1)).read()) == MiB  # under the limit
        t0 = time.monotonic()
        with pytest.raises(algomesh.LimitError) as e:  # the ingress counts and stops it
            c.algo("st/rot2").stream(blocks(50)).read()
        assert e.value.reason == "PAYLOAD_TOO_LARGE" and e.value.metadata["limit"] == str(2 * MiB)
        assert time.monotonic() - t0 < 10
        # 512 KiB in, 4 MiB out of st/amp to st/rot2: its own sidecar stops the pipe, and
        # the typed error reaches the client through the algorithm
        with pytest.raises(algomesh.LimitError) as e:
            c.algo("st/amp").stream(b"z" * (MiB // 2)).read()
        assert e.value.reason == "PAYLOAD_TOO_LARGE"


def test_inside_its_sidecar_a_stream_keeps_the_limit_and_the_deadline(small_mesh, tmp_path):
    """isolation = "shared" (the algorithm in its sidecar's process) streams through the same
    stacks: the limit on every hop, the deadline, and the instance serves on after both."""
    shared = 'isolation = "shared"\n'
    small_mesh.publish(write_algorithm(tmp_path / "srot", "st/srot2", "1.0.0", ROT2, extra_toml=shared))
    small_mesh.publish(write_algorithm(tmp_path / "samp", "st/samp", "1.0.0", AMPLIFY.replace("st/rot2", "st/srot2"),
                                       extra_toml=shared + '[permissions]\ncan_call = ["st/srot2"]\n'))
    slow = "import time\ndef apply(stream):\n    for chunk in stream:\n        time.sleep(0.5)\n        yield chunk\n"
    small_mesh.publish(write_algorithm(tmp_path / "sslow", "st/sslow", "1.0.0", slow, extra_toml=shared))
    with small_mesh.client() as c:
        assert len(c.algo("st/srot2").stream(blocks(1)).read()) == MiB
        with pytest.raises(algomesh.LimitError) as e:
            c.algo("st/srot2").stream(blocks(50)).read()
        assert e.value.reason == "PAYLOAD_TOO_LARGE"
        with pytest.raises(algomesh.LimitError) as e:  # its own sidecar stops the pipe it streams on
            c.algo("st/samp").stream(b"z" * (MiB // 2)).read()
        assert e.value.reason == "PAYLOAD_TOO_LARGE"
        t0 = time.monotonic()
        with pytest.raises(algomesh.AlgomeshError) as e:
            c.algo("st/sslow").set_options(timeout=1.5).stream(blocks(1)).read()
        assert e.value.reason == "DEADLINE_EXCEEDED" and time.monotonic() - t0 < 5
        assert c.algo("st/sslow").set_options(timeout=10).stream(b"ok").read() == b"ok"
        assert len(c.algo("st/srot2").stream(blocks(1)).read()) == MiB


def test_a_sidecar_that_dies_mid_stream_ends_it_typed(mesh, client, published):
    relay = client.algo("st/relay")
    assert relay.stream(b"a").read() == b"d"
    second = [p for p in descendants(mesh.process.pid) if "--algorithm st/rot2 " in cmdline(p)
              and "algomesh.sidecar" in cmdline(p)]
    assert second

    def slow():
        for i, block in enumerate(blocks(400)):
            if i == 40:  # well past the first chunk: the stream cannot be sent again elsewhere
                for pid in second:
                    os.kill(pid, signal.SIGKILL)
            yield block

    t0 = time.monotonic()
    with pytest.raises(algomesh.AlgomeshError) as e:
        for _ in relay.stream(slow()).chunks():
            pass
    assert time.monotonic() - t0 < 30
    # the relay's pipe broke: its sidecar says so, typed, and the relay passes it on as it came
    assert isinstance(e.value, algomesh.UnavailableError), repr(e.value)
