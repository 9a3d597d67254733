"""isolation = "shared": a Python algorithm inside its sidecar's process (sidecar/embedded.py).

The same programming model as a runner process (load once, apply per call, pipes, errors
with stack traces, captured output, typed bad input), with no runner process under the
sidecar."""
import os

import pytest

import algomesh
from tests.conftest import descendants, give_up_mid_stream, write_algorithm

SHARED = 'isolation = "shared"\n'

ECHO = """\
import os
LOADS = []
def load():
    LOADS.append(1)
def apply(x):
    print("echoing", x)
    return {"x": x, "pid": os.getpid(), "loads": len(LOADS), "cwd": os.getcwd()}
"""

PIPE = """\
import algomesh
def apply(x):
    return algomesh.client().algo("emb/echo").pipe(x).result
"""

FAIL = """\
def apply(x):
    return helper(x)
def helper(x):
    raise ValueError(f"no good: {x}")
"""

ANY = """\
import algomesh
def apply(x):
    c = algomesh.client()
    return {"via": type(c._call).__name__, "answer": c.algo(x).pipe("hi").result}
"""

# streams: rotate every byte by one (a generator); upper-case with `async for`; relay on
SROT = """\
TABLE = bytes((i + 1) % 256 for i in range(256))
def apply(stream):
    for chunk in stream:
        if chunk.startswith(b"boom"):
            raise ValueError("no boom")
        yield chunk.translate(TABLE)
"""

SUPPER = """\
async def apply(stream):
    async def out():
        async for chunk in stream:
            yield chunk.upper()
    return out()
"""

SRELAY = """\
import algomesh
TABLE = bytes((i + 1) % 256 for i in range(256))
def apply(stream):
    return algomesh.client().algo("emb/srot").stream(chunk.translate(TABLE) for chunk in stream)
"""

# the same from an async apply, with the async client
ASRELAY = """\
import algomesh
async def apply(stream):
    answer = algomesh.async_client().algo("emb/srot").stream(stream)
    async def out():
        async for chunk in answer.chunks():
            yield chunk
    return out()
"""

# passes its input on and answers with the answer, both as they came (a blocking apply)
SPASS = """\
import algomesh
def apply(stream):
    print("passing", stream.content_type)
    return algomesh.client().algo("emb/srot").stream(stream)
"""

# streams on a source that gives out after two chunks
SBADSRC = """\
import algomesh
def apply(stream):
    def source():
        for i, chunk in enumerate(stream):
            if i == 2:
                raise KeyError("the source gave out")
            yield chunk
    return algomesh.client().algo("emb/srot").stream(source())
"""

# what carries a streamed pipe from inside the algorithm, blocking and async
SVIA = """\
import algomesh
async def apply(x):
    c = algomesh.async_client()
    c._stub()
    return {"sync": type(algomesh.client()._call_stream).__name__, "async": type(c._stream_multicallable).__name__}
"""

ASYNC = """\
import algomesh
async def apply(x):
    return (await algomesh.async_client().algo("emb/echo").pipe(x))._raw().response.output.data.decode()
"""


@pytest.fixture(scope="module", autouse=True)
def published(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("emb")
    mesh.publish(write_algorithm(d / "echo", "emb/echo", "1.0.0", ECHO, extra_toml=SHARED))
    mesh.publish(write_algorithm(d / "pipe", "emb/pipe", "1.0.0", PIPE,
                                 extra_toml=SHARED + '[permissions]\ncan_call = ["emb/echo"]\n'))
    mesh.publish(write_algorithm(d / "fail", "emb/fail", "1.0.0", FAIL, extra_toml=SHARED))
    mesh.publish(write_algorithm(d / "broken", "emb/broken", "1.0.0", "raise ImportError('missing thing')\n",
                                 extra_toml=SHARED))
    mesh.publish(write_algorithm(d / "any", "emb/any", "1.0.0", ANY,
                                 extra_toml=SHARED + '[permissions]\ncan_call = ["emb/echo"]\n'))
    mesh.publish(write_algorithm(d / "async", "emb/async", "1.0.0", ASYNC,
                                 extra_toml=SHARED + '[permissions]\ncan_call = ["emb/echo"]\n'))
    mesh.publish(write_algorithm(d / "srot", "emb/srot", "1.0.0", SROT, extra_toml=SHARED))
    mesh.publish(write_algorithm(d / "supper", "emb/supper", "1.0.0", SUPPER, extra_toml=SHARED))
    mesh.publish(write_algorithm(d / "srelay", "emb/srelay", "1.0.0", SRELAY,
                                 extra_toml=SHARED + '[permissions]\ncan_call = ["emb/srot"]\n'))
    for name, code in (("asrelay", ASRELAY), ("sbadsrc", SBADSRC), ("spass", SPASS)):
        mesh.publish(write_algorithm(d / name, f"emb/{name}", "1.0.0", code,
                                     extra_toml=SHARED + '[permissions]\ncan_call = ["emb/srot"]\n'))
    mesh.publish(write_algorithm(d / "svia", "emb/svia", "1.0.0", SVIA, extra_toml=SHARED))


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline") as f:
        return f.read().replace("\0", " ")


def test_the_algorithm_runs_in_its_sidecars_process(mesh, client):
    resp = client.algo("emb/echo").set_options(stdout=True).pipe("hi")
    out = resp.result
    assert out["x"] == "hi" and out["loads"] == 1
    assert "algomesh.sidecar" in _cmdline(out["pid"]), "the answer did not come from the sidecar's own process"
    assert os.path.isfile(os.path.join(out["cwd"], "main.py"))  # it runs in its own folder, as a runner does
    assert resp.metadata.stdout == "echoing hi\n"
    assert (resp.metadata.algorithm, resp.metadata.version) == ("emb/echo", "1.0.0")
    # no runner process below it
    assert [p for p in descendants(out["pid"])] == []
    assert client.algo("emb/echo").pipe("again").result["loads"] == 1  # load() once


def test_pipes_errors_and_async_apply(client):
    assert client.algo("emb/pipe").pipe("through").result["x"] == "through"
    with pytest.raises(algomesh.AlgorithmError) as e:
        client.algo("emb/fail").pipe(3).result
    assert e.value.reason == "ALGORITHM_ERROR" and "no good: 3" in e.value.message
    assert "helper" in e.value.stacktrace and e.value.metadata["algorithm"] == "emb/fail"
    with pytest.raises(algomesh.AlgomeshError) as e:
        client.algo("emb/broken").pipe(1).result
    assert e.value.reason == "ALGORITHM_LOAD_FAILED" and "missing thing" in e.value.message
    assert '"x":"async"' in client.algo("emb/async").pipe("async").result


def test_its_pipes_reach_its_sidecar_in_process_through_the_same_checks(client):
    out = client.algo("emb/any").pipe("emb/echo").result
    assert out["via"] == "LocalUnary" and out["answer"]["x"] == "hi"  # no socket between them
    with pytest.raises(algomesh.PermissionError_) as e:  # the outbound stack still decides
        client.algo("emb/any").pipe("emb/fail").result
    assert "may not pipe to emb/fail" in e.value.message
    with pytest.raises(algomesh.InvalidError) as e:  # a malformed name: the SDK's own typed error, passed on
        client.algo("emb/any").pipe("not a name").result
    assert e.value.reason == "INVALID_TARGET"


def test_it_streams_both_ways_and_on_to_another_algorithm(client):
    # a blocking apply reads its stream on a worker thread and streams its answer back
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB: the mesh cuts it into chunks
    answer = client.algo("emb/srot").stream(data)
    assert answer.read() == data.translate(bytes((i + 1) % 256 for i in range(256)))
    assert (answer.metadata.algorithm, answer.metadata.version) == ("emb/srot", "1.0.0")
    # an async one with `async for`, and one that streams on to emb/srot from inside apply
    assert client.algo("emb/supper").stream(b"abc" * 1000).read() == b"ABC" * 1000
    assert client.algo("emb/srelay").stream(b"\x00\x01" * 5000).read() == b"\x02\x03" * 5000


def test_its_streamed_pipes_reach_its_sidecar_in_process_too(client):
    assert client.algo("emb/svia").pipe(None).result == {"sync": "LocalStream", "async": "AioLocalStream"}
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB, 12 chunks each way through the stack's queues
    twice = data.translate(bytes((i + 2) % 256 for i in range(256)))
    assert client.algo("emb/srelay").stream(data).read() == twice
    assert client.algo("emb/asrelay").stream(data).read() == data.translate(bytes((i + 1) % 256 for i in range(256)))
    # the callee's error mid-stream reaches the caller typed, through either relay
    for relay, boom in (("emb/srelay", b"annl"), ("emb/asrelay", b"boom")):  # (srelay adds 1 first)
        with pytest.raises(algomesh.AlgorithmError) as e:
            client.algo(relay).stream(boom + b"x" * 100).read()
        assert "no boom" in e.value.message, relay
        assert client.algo(relay).stream(b"\x00").read()[-1:] in (b"\x01", b"\x02"), relay
    # a source that fails mid-stream ends the pipe with its own error, and the next call works
    with pytest.raises(algomesh.AlgorithmError) as e:
        client.algo("emb/sbadsrc").stream(data).read()
    assert "the source gave out" in e.value.message and "KeyError" in e.value.stacktrace
    assert client.algo("emb/sbadsrc").stream(b"\x00\x01").read() == b"\x01\x02"


def test_a_blocking_apply_passes_its_stream_on_in_process_and_the_answer_back(client):
    # its pipe's chunks go on as they came, moved on the sidecar's loop (sdk/_local.py)
    import hashlib

    block = bytes(range(256)) * 4096  # 1 MiB
    want = hashlib.sha256(block.translate(bytes((i + 1) % 256 for i in range(256))) * 20).digest()
    got, size = hashlib.sha256(), 0
    answer = client.algo("emb/spass").set_options(stdout=True).stream(block for _ in range(20))
    for chunk in answer.chunks():
        got.update(chunk)
        size += len(chunk)
    assert size == 20 << 20 and got.digest() == want
    assert answer.metadata.algorithm == "emb/spass" and answer.metadata.stdout == "passing binary\n"
    assert client.algo("emb/spass").stream("abc").read() == b"bcd"
    empty = client.algo("emb/spass").stream(b"")
    assert empty.read() == b"" and empty.content_type == "binary"
    with pytest.raises(algomesh.AlgorithmError) as e:  # emb/srot's error mid-stream, typed
        client.algo("emb/spass").stream(iter([b"x" * 1000, b"boom"])).read()
    assert "no boom" in e.value.message and e.value.algorithm == "emb/srot"
    give_up_mid_stream(client, "emb/spass", b"y", b"\x00", b"\x01")  # both stages free again at once


def test_a_failing_stream_is_typed_and_the_next_one_works(client):
    with pytest.raises(algomesh.AlgorithmError) as e:
        client.algo("emb/srot").stream(b"boom" + b"x" * 100).read()
    assert "no boom" in e.value.message and "ValueError" in e.value.stacktrace
    assert e.value.algorithm == "emb/srot"
    assert client.algo("emb/srot").stream(b"\x00").read() == b"\x01"


def test_the_manifest_checks_it(tmp_path, client):
    folder = write_algorithm(tmp_path / "n", "emb/node", "1.0.0", "x", extra_toml=SHARED)
    (folder / "algomesh.toml").write_text((folder / "algomesh.toml").read_text().replace('"python"', '"node"'))
    with pytest.raises(algomesh.InvalidError) as e:
        client.publish(folder)
    assert "runtime python only" in e.value.message
    folder = write_algorithm(tmp_path / "b", "emb/bad", "1.0.0", "x", extra_toml='isolation = "thread"\n')
    with pytest.raises(algomesh.InvalidError) as e:
        client.publish(folder)
    assert "isolation must be process or shared" in e.value.message


def test_a_call_past_its_deadline_is_answered_in_time(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "slow", "emb/slow", "1.0.0",
                                 "import time\ndef apply(x):\n    time.sleep(x)\n    return x\n", extra_toml=SHARED))
    assert client.algo("emb/slow").pipe(0).result == 0
    import time
    t0 = time.monotonic()
    with pytest.raises(algomesh.DeadlineExceededError):
        client.algo("emb/slow").set_options(timeout=1).pipe(5).result
    assert time.monotonic() - t0 < 3
