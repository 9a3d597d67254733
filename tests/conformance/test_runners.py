"""One conformance suite, every runner (tests/conformance/README.md).

Each case publishes ``conformance/<language>`` once (running its build step, if any) into
one real mesh and calls it through the ingress like a user would. A language whose
runner fails to build or serve fails its cases; nothing here is skipped.
"""
import concurrent.futures
import time
from pathlib import Path

import grpc
import pytest

import algomesh
from algomesh._errors import from_rpc_error
from algomesh.v1 import payload_pb2

HERE = Path(__file__).parent
# The runners that exist, in the order they landed; issue 7 ends with all seven here.
LANGUAGES = ["python", "node", "go", "rust", "java", "cpp", "exec"]
LIMIT = 10 * 1024 * 1024  # the mesh's default payload limit (algomesh up --max-payload-mb)


@pytest.fixture(scope="module")
def published(mesh):
    mesh.publish(HERE / "relay")
    done: dict[str, Exception | None] = {}

    def publish(language: str) -> str:
        if language not in done:
            try:
                mesh.publish(HERE / "algorithms" / language)
                done[language] = None
            except Exception as exc:  # reported by every case of that language
                done[language] = exc
        if done[language] is not None:
            raise AssertionError(f"publishing conformance/{language} failed: {done[language]}")
        return f"conformance/{language}"
    return publish


@pytest.fixture(params=LANGUAGES)
def target(request, published):
    return published(request.param)


@pytest.fixture
def algo(target, client):
    return client.algo(target)


def test_load_runs_once_per_process(algo):
    counts = {algo.pipe({"op": "loads"}).result for _ in range(5)}
    assert counts == {1}


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [True, None, 2.5, "x"], "nested": {"deep": [1, [2, [3]]]}},
    [1, 2, 3], 42, -7.25, True, None,
])
def test_json_in_json_out(algo, value):
    resp = algo.pipe({"op": "echo", "value": value})
    assert resp.result == value
    assert resp.metadata.content_type == "json"


def test_text_in_text_out(algo):
    resp = algo.pipe("plain text, not JSON: {")
    assert (resp.result, resp.metadata.content_type) == ("plain text, not JSON: {", "text")


def test_binary_in_binary_out(algo):
    data = bytes(range(256)) * 4
    resp = algo.pipe(data)
    assert (resp.result, resp.metadata.content_type) == (data[::-1], "binary")


def test_json_in_text_and_binary_out(algo):
    text = algo.pipe({"op": "text", "value": "from JSON to text"})
    assert (text.result, text.metadata.content_type) == ("from JSON to text", "text")
    raw = algo.pipe({"op": "bytes", "value": "héllo"})
    assert (raw.result, raw.metadata.content_type) == ("héllo".encode(), "binary")


UNICODE = "héllo wörld — 世界 🎉 \u0000 zero and \U0001F600 astral"


def test_unicode_both_ways(algo):
    assert algo.pipe(UNICODE).result == UNICODE
    assert algo.pipe({"op": "echo", "value": {"k€y": UNICODE}}).result == {"k€y": UNICODE}
    assert algo.pipe({"op": "bytes", "value": UNICODE}).result == UNICODE.encode()


def test_large_payload_up_to_the_limit(algo):
    data = (bytes(range(251)) * (LIMIT // 251))[: LIMIT - 4096]  # room for the envelope
    resp = algo.set_options(timeout=120).pipe(data)
    assert len(resp.result) == len(data) and resp.result == data[::-1]
    with pytest.raises(algomesh.LimitError) as e:
        algo.pipe(data + b"x" * 8192).result
    assert e.value.reason == "PAYLOAD_TOO_LARGE"


def test_an_algorithm_that_raises(algo):
    with pytest.raises(algomesh.AlgorithmError) as e:
        algo.pipe({"op": "raise", "message": "conformance says no"}).result
    assert e.value.reason == "ALGORITHM_ERROR"
    assert "conformance says no" in e.value.message
    assert e.value.stacktrace.strip(), "an algorithm error carries the algorithm's stack trace"
    assert algo.pipe({"op": "echo", "value": "after"}).result == "after"  # the instance lives on


def test_an_algorithm_that_crashes(algo):
    with pytest.raises(algomesh.AlgomeshError) as e:
        algo.pipe({"op": "crash"}).result
    assert e.value.reason == "RUNNER_CRASHED", e.value
    # The next call restarts the runner, and load() runs again in the new process.
    assert algo.pipe({"op": "echo", "value": "back"}).result == "back"
    assert algo.pipe({"op": "loads"}).result == 1


def test_captured_output(algo):
    quiet = algo.pipe({"op": "print", "value": "not asked for"})
    resp = algo.set_options(stdout=True).pipe({"op": "print", "value": "to stdout ✓"})
    assert resp.result == "printed"
    assert resp.metadata.stdout is not None and "to stdout ✓" in resp.metadata.stdout
    assert quiet.metadata.stdout is None


def test_malformed_input_is_invalid_input(mesh, target):
    for content_type, data in ((payload_pb2.CONTENT_TYPE_JSON, b'{"op": '),
                               (payload_pb2.CONTENT_TYPE_TEXT, b"\xff\xfe not utf-8")):
        req = payload_pb2.CallRequest(input=payload_pb2.Payload(content_type=content_type, data=data))
        with grpc.insecure_channel(mesh.address) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/algomesh.v1.Mesh/Call")(
                    req.SerializeToString(), metadata=(("algomesh-target", target),) + mesh.auth,
                    timeout=30)
        assert from_rpc_error(e.value).reason == "INVALID_INPUT"


def test_pipes_onward_to_python(algo, target, published):
    published("python")
    resp = algo.pipe({"op": "pipe", "target": "conformance/python", "input": {"op": "echo", "value": [1, "ü"]}})
    assert resp.result["result"] == [1, "ü"]
    assert resp.result["via"] == target.split("/")[1]


def test_pipe_carries_the_trace(client, algo, target, published):
    published("python")
    resp = algo.pipe({"op": "pipe", "target": "conformance/python", "input": {"op": "echo", "value": 1}})
    trace_id = resp.metadata.trace_id
    assert trace_id
    wanted = {f"call {target}", "pipe conformance/python", "conformance/python@1.0.0"}
    deadline = time.monotonic() + 15
    while True:  # spans arrive in batches, each process's on its own
        names = [s.name for s in client.trace(trace_id).spans] if _has_trace(client, trace_id) else []
        if wanted <= set(names) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert wanted <= set(names), names


def _has_trace(client, trace_id: str) -> bool:
    try:
        client.trace(trace_id)
        return True
    except algomesh.NotFoundError:
        return False


def test_pipe_errors_keep_their_reason(algo):
    with pytest.raises(algomesh.NotFoundError) as e:
        algo.pipe({"op": "pipe", "target": "conformance/does-not-exist", "input": 1}).result
    assert e.value.reason == "ALGORITHM_NOT_FOUND"


def test_pipe_carries_the_call_token(algo, target):
    # X -> relay -> X is a cycle; only a runner that forwards the call's token to its
    # pipes lets the mesh see it (a pipe without it would start a fresh pipeline).
    loop = {"op": "pipe", "target": "conformance/relay",
            "input": {"target": target, "input": {"op": "echo", "value": 1}}}
    with pytest.raises(algomesh.PipelineError) as e:
        algo.pipe(loop).result
    assert e.value.reason == "CALL_CYCLE"
    assert target in e.value.message and "conformance/relay" in e.value.message


def test_concurrent_calls(algo):
    algo.pipe({"op": "sleep", "ms": 1}).result  # warm
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: algo.pipe({"op": "sleep", "ms": 800}).result, range(4)))
    took = time.monotonic() - t0
    assert results == ["slept"] * 4
    assert took < 2.4, f"4 calls of 0.8 s with concurrency 4 took {took:.2f}s: the runner serialised them"
