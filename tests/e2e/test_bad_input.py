"""Bad input gets a clear, typed error within the deadline, and the mesh keeps serving."""
import time

import grpc
import pytest

import algomesh
from algomesh._errors import from_rpc_error
from algomesh.v1 import mesh_pb2_grpc, payload_pb2
from tests.conftest import ALGORITHMS


@pytest.fixture(scope="module", autouse=True)
def published(mesh):
    for folder in ("bad", "loadfail", "cleaning"):
        mesh.publish(ALGORITHMS / folder)


@pytest.fixture
def still_serving(client):
    """After each test: a normal call through the same mesh still works."""
    yield
    assert client.algo("username/cleaning").pipe("Still  HERE!").result == "still here"


def raised(fn, within: float):
    t0 = time.monotonic()
    with pytest.raises(algomesh.AlgomeshError) as e:
        fn()
    took = time.monotonic() - t0
    assert took < within, f"took {took:.1f}s, allowed {within}s"
    return e.value


def test_unknown_algorithm(client, still_serving):
    e = raised(lambda: client.algo("nobody/nothing").pipe(1).result, within=5)
    assert isinstance(e, algomesh.NotFoundError) and e.reason == "ALGORITHM_NOT_FOUND"
    assert "nobody/nothing" in e.message


def test_unknown_version(client, still_serving):
    e = raised(lambda: client.algo("test/bad/7.*").pipe(1).result, within=5)
    assert e.reason == "VERSION_NOT_FOUND" and "1.0.0" in e.message  # it says what exists


@pytest.mark.parametrize("ref, reason", [("test/bad/one.two", "INVALID_VERSION"), ("test/bad/1.2.3.4", "INVALID_VERSION")])
def test_malformed_version(client, still_serving, ref, reason):
    e = raised(lambda: client.algo(ref).pipe(1).result, within=5)
    assert isinstance(e, algomesh.InvalidError) and e.reason == reason


@pytest.mark.parametrize("ref", ["justaname", "a/b/c/d", "", "bad name/x"])
def test_malformed_reference_is_refused_by_the_sdk(client, ref):
    e = raised(lambda: client.algo(ref), within=1)
    assert e.reason == "INVALID_TARGET"


def _raw_call(mesh, request: bytes, metadata) -> algomesh.AlgomeshError:
    """A caller with only generated stubs (any language) sees the same typed errors."""
    with grpc.insecure_channel(mesh.address) as ch:
        call = ch.unary_unary("/algomesh.v1.Mesh/Call")
        with pytest.raises(grpc.RpcError) as e:
            call(request, metadata=tuple(metadata) + mesh.auth, timeout=10)
    return from_rpc_error(e.value)


def test_malformed_json_declared_as_json(mesh, still_serving):
    req = payload_pb2.CallRequest(input=payload_pb2.Payload(content_type=payload_pb2.CONTENT_TYPE_JSON, data=b'{"a": '))
    e = _raw_call(mesh, req.SerializeToString(), (("algomesh-target", "test/bad"),))
    assert e.reason == "INVALID_INPUT" and "not valid JSON" in e.message


def test_text_that_is_not_utf8(mesh, still_serving):
    req = payload_pb2.CallRequest(input=payload_pb2.Payload(content_type=payload_pb2.CONTENT_TYPE_TEXT, data=b"\xff\xfe"))
    e = _raw_call(mesh, req.SerializeToString(), (("algomesh-target", "test/bad"),))
    assert e.reason == "INVALID_INPUT"


def test_body_that_is_not_a_call_request(mesh, still_serving):
    e = _raw_call(mesh, b"\xff\xff\xff\xff garbage", (("algomesh-target", "test/bad"),))
    assert e.reason == "INVALID_INPUT"


def test_missing_target_metadata(mesh, still_serving):
    e = _raw_call(mesh, payload_pb2.CallRequest().SerializeToString(), ())
    assert e.reason == "INVALID_TARGET"


def test_algorithm_that_raises_carries_message_and_stack_trace(client, still_serving):
    e = raised(lambda: client.algo("test/bad").pipe({"do": "raise", "value": "x"}).result, within=10)
    assert isinstance(e, algomesh.AlgorithmError) and e.reason == "ALGORITHM_ERROR"
    assert e.message == "cannot handle 'x'" and e.error_type == "ValueError"
    assert "helper_that_fails" in e.stacktrace and "bad.py" in e.stacktrace
    assert "algomesh/runners" not in e.stacktrace  # the user's frames, not ours
    assert (e.algorithm, e.version) in (("test/bad", "1.0.0"), (None, None))


def test_algorithm_returning_an_unencodable_value(client, still_serving):
    e = raised(lambda: client.algo("test/bad").pipe({"do": "unencodable"}).result, within=10)
    assert e.reason == "ALGORITHM_ERROR" and "cannot be sent" in e.message


@pytest.mark.parametrize("how, words", [("exit", "exited with code 3"), ("kill", "killed by signal 9")])
def test_runner_that_dies_mid_call_is_restarted_on_the_next_call(client, still_serving, how, words):
    bad = client.algo("test/bad")
    before = bad.pipe({"do": "pid"}).result
    e = raised(lambda: bad.pipe({"do": how}).result, within=10)
    assert isinstance(e, algomesh.RunnerCrashedError) and e.reason == "RUNNER_CRASHED"
    assert words in e.message
    after = bad.pipe({"do": "pid"}).result
    assert after != before  # a fresh runner process


def test_call_past_its_timeout(client, still_serving):
    bad = client.algo("test/bad")
    slow = client.algo("test/bad").set_options(timeout=1.0)
    e = raised(lambda: slow.pipe({"do": "sleep", "seconds": 30}).result, within=3)
    assert isinstance(e, algomesh.DeadlineExceededError) and e.reason == "DEADLINE_EXCEEDED"
    t0 = time.monotonic()
    assert bad.pipe({"do": "pid"}).result > 0  # the overrunning runner was recycled, not waited for
    assert time.monotonic() - t0 < 10


def test_load_failure_is_typed_and_other_algorithms_keep_working(client, still_serving):
    e = raised(lambda: client.algo("test/loadfail").pipe(1).result, within=30)
    assert isinstance(e, algomesh.AlgorithmError) and e.reason == "ALGORITHM_LOAD_FAILED"
    assert "model file missing: weights.bin" in e.message and "loadfail.py" in e.stacktrace
    e2 = raised(lambda: client.algo("test/loadfail").pipe(1).result, within=30)
    assert e2.reason == "ALGORITHM_LOAD_FAILED"  # retried, and still failing the same typed way


def test_oversize_message_is_refused_typed(client, still_serving):
    e = raised(lambda: client.algo("test/bad").pipe(b"x" * (65 * 1024 * 1024)).result, within=20)
    assert isinstance(e, algomesh.LimitError) and e.reason == "PAYLOAD_TOO_LARGE"


def test_mesh_not_running(tmp_path):
    with algomesh.client("k", "127.0.0.1:9") as c:  # nothing listens on the discard port
        e = raised(lambda: c.algo("a/b").set_options(timeout=5).pipe(1).result, within=8)
    assert isinstance(e, algomesh.UnavailableError) and e.reason == "MESH_UNAVAILABLE"
    assert "cannot reach the mesh" in e.message


def test_many_bad_calls_at_once_leave_the_mesh_healthy(client, still_serving):
    bad = client.algo("test/bad")
    responses = [bad.pipe({"do": "raise", "value": i}) for i in range(40)]
    reasons = set()
    for r in responses:
        with pytest.raises(algomesh.AlgorithmError) as e:
            r.result
        reasons.add(e.value.reason)
    assert reasons == {"ALGORITHM_ERROR"}
