"""Clients in other languages (issue 7, point 4; docs/clients.md): each example client in
examples/clients is built once per session (examples/clients/setup.sh) and run as a
subprocess against a real mesh serving the quickstart's algorithms.

Every client speaks the same command line and prints the same lines, so one set of cases
runs against all of them: Node.js, Go, Rust and C++ with stubs generated from proto/, and
two with no stubs at all, grpcurl and a Python client, which learn every message from the
mesh's server reflection.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import algomesh
from tests.conftest import EXAMPLES, ROOT

CLIENTS = EXAMPLES / "clients"
QUICKSTART = EXAMPLES / "quickstart"
CACHE = Path(os.environ.get("ALGOMESH_BUILD_CACHE") or Path.home() / ".cache" / "algomesh" / "build") / "clients"

# reflect.py runs with the algomesh package and every google.rpc module made unimportable,
# so the only way it can know a message is to ask the server.
NO_STUBS = ("import runpy, sys\n"
            "for name in ('algomesh', 'google.rpc', 'google.rpc.status_pb2', 'google.rpc.error_details_pb2'):\n"
            "    sys.modules[name] = None\n"
            "path = sys.argv.pop(1)\n"
            "sys.argv[0] = path\n"
            "runpy.run_path(path, run_name='__main__')\n")

# How each client is run once examples/clients/setup.sh LANGUAGE has built it.
COMMANDS = {
    "node": ["node", str(CLIENTS / "node" / "client.js")],
    "go": [str(CACHE / "go" / "algomesh-client")],
    "rust": [str(CACHE / "rust-target" / "release" / "algomesh-client")],
    "cpp": [str(CACHE / "cpp-build" / "algomesh-client")],
    "grpcurl": ["bash", str(CLIENTS / "reflection" / "grpcurl.sh")],
    "reflect": [sys.executable, "-c", NO_STUBS, str(CLIENTS / "reflection" / "reflect.py")],
}
REFLECTION = ("grpcurl", "reflect")

TWEET = "I LOVE this!! So much fun @bob http://x.co/abc #great"
TOKENS = ["i", "love", "this", "!", "!", "so", "much", "fun", "great"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"

    def result(self):
        """The decoded JSON result the client printed."""
        lines = [line for line in self.out.splitlines() if line.startswith("result (json): ")]
        assert len(lines) == 1, self
        return json.loads(lines[0].removeprefix("result (json): "))

    def trace_id(self) -> str:
        m = re.search(r"^trace-id: ([0-9a-f]{32})$", self.out, re.M)
        assert m, self
        return m.group(1)


@pytest.fixture(scope="session", params=list(COMMANDS))
def language(request) -> str:
    """Each client, built once per session (toolchains installed when missing)."""
    name = request.param
    started = time.monotonic()
    built = subprocess.run(["bash", str(CLIENTS / "setup.sh"), name], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, f"examples/clients/setup.sh {name} failed:\n{built.stdout}\n{built.stderr}"
    print(f"\n{name} client ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return name


def test_the_cpp_client_builds_in_a_cached_tree_another_checkout_configured(tmp_path):
    """The build cache is shared by every checkout (~/.cache/algomesh/build by default). A C++
    tree configured from a checkout since deleted is one CMake refuses ("The source directory
    ... does not exist"): setup.sh starts it afresh and builds."""
    def checkout(name: str) -> Path:
        root = tmp_path / name
        for part in ("examples/clients/setup.sh", "examples/clients/cpp", "examples/clients/proto",
                     "runners/cpp/setup.sh", "tests/apt-install.sh", "proto"):
            (root / part).parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy2
            copy(ROOT / part, root / part)
        return root

    subprocess.run(["bash", str(ROOT / "runners" / "cpp" / "setup.sh")], check=True, capture_output=True, timeout=1800)
    cache = tmp_path / "cache"
    tree = cache / "clients" / "cpp-build"
    gone = checkout("first")
    subprocess.run(["cmake", "-S", str(gone / "examples/clients/cpp"), "-B", str(tree), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True, timeout=300)
    shutil.rmtree(gone)
    second = checkout("second")
    built = subprocess.run(["bash", str(second / "examples/clients/setup.sh"), "cpp"], capture_output=True, text=True,
                           timeout=1800, env={**os.environ, "ALGOMESH_BUILD_CACHE": str(cache)})
    assert built.returncode == 0, f"setup.sh cpp failed:\n{built.stdout}\n{built.stderr}"
    assert f"CMAKE_HOME_DIRECTORY:INTERNAL={second / 'examples/clients/cpp'}\n" in (tree / "CMakeCache.txt").read_text()
    usage = subprocess.run([str(tree / "algomesh-client"), "--help"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage: algomesh-client" in usage.stdout + usage.stderr, usage


@pytest.fixture(scope="module")
def published(mesh):
    for folder in ("tokenize", "clean", "sentiment"):
        mesh.publish(QUICKSTART / folder)


@pytest.fixture
def run(language, mesh, published, tmp_path):
    """Run the client for ``language``. By default the mesh's address and admin key come from
    $ALGOMESH_ADDRESS and $ALGOMESH_API_KEY; ``env`` adds to or overrides the environment."""
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
        environ = {k: v for k, v in os.environ.items() if k not in ("ALGOMESH_ADDRESS", "ALGOMESH_API_KEY")}
        environ.update({"ALGOMESH_ADDRESS": mesh.address, "ALGOMESH_API_KEY": mesh.api_key, **(env or {})})
        p = subprocess.run([*COMMANDS[language], *args], capture_output=True, text=True, timeout=timeout,
                           env=environ, cwd=tmp_path)  # not the checkout: no proto/ nearby to read
        return Run(p.returncode, p.stdout, p.stderr)
    return run


def stored_trace(client, trace_id: str, names: set[str], timeout: float = 15.0) -> set[str]:
    """The names of the spans of ``trace_id`` the control plane holds, once it holds ``names``
    (sidecars send their spans in batches)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while True:
        try:
            seen = {s.name for s in client.trace(trace_id).spans}
        except algomesh.NotFoundError:
            pass
        if names <= seen or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_a_call_prints_the_decoded_result_who_answered_and_a_trace_id(run, client):
    r = run("call", "demo/clean", json.dumps(TWEET))
    assert r.code == 0, r
    assert r.result() == TOKENS                                     # demo/clean piped it to demo/tokenize
    assert r.result() == client.algo("demo/clean").pipe(TWEET).result  # as the Python SDK gets it
    assert re.search(r"^algorithm: demo/clean 1\.0\.0$", r.out, re.M), r
    # The trace id is the call's: the control plane keeps its spans, the pipe inside included.
    want = {"call demo/clean", "apply demo/clean@1.0.0", "pipe demo/tokenize", "apply demo/tokenize@1.0.0"}
    assert want <= stored_trace(client, r.trace_id(), want)


def test_a_client_chains_two_calls_with_structured_json(run):
    tokens = run("call", "demo/clean", json.dumps("Terrible service, not happy at all"))
    assert tokens.code == 0, tokens
    scored = run("call", "demo/sentiment/1.0.0", json.dumps(tokens.result()))  # an exact version
    assert scored.code == 0, scored
    assert scored.result() == {"label": "negative", "score": -7.0, "hits": [["terrible", -4], ["happy", -3]]}
    assert re.search(r"^algorithm: demo/sentiment 1\.0\.0$", scored.out, re.M), scored
    assert scored.trace_id() != tokens.trace_id()


def test_an_unknown_algorithm_is_ALGORITHM_NOT_FOUND(run):
    r = run("call", "demo/no-such-algorithm", "1")
    assert r.code == 1, r
    assert "error: ALGORITHM_NOT_FOUND (gRPC NOT_FOUND): no algorithm named demo/no-such-algorithm" in r.err, r
    assert re.search(r"^  algorithm: demo/no-such-algorithm$", r.err, re.M), r  # ErrorInfo.metadata
    r.trace_id()                                                                  # errors are traced too
    assert "result" not in r.out


def test_an_algorithm_that_raises_is_ALGORITHM_ERROR_with_its_stack_trace(run):
    r = run("call", "demo/sentiment", json.dumps("not a list of tokens"))
    assert r.code == 1, r
    assert "error: ALGORITHM_ERROR (gRPC UNKNOWN): demo/sentiment takes a list of tokens" in r.err, r
    assert re.search(r"^  error_type: TypeError$", r.err, re.M), r
    # The DebugInfo's stack trace: the algorithm's own frame and the exception.
    stack = r.err.split("stack trace:\n", 1)[1]
    assert 'sentiment.py", line' in stack and "raise TypeError(" in stack, r
    r.trace_id()


def test_a_wrong_key_is_UNAUTHENTICATED(run):
    r = run("--key", "amk_0000000000000000_wrong", "call", "demo/clean", json.dumps("hi"))
    assert r.code == 1, r
    assert "error: UNAUTHENTICATED (gRPC UNAUTHENTICATED): the API key is not valid" in r.err, r
    r = run("list", env={"ALGOMESH_API_KEY": ""})                  # no key at all
    assert r.code == 1 and "error: UNAUTHENTICATED (gRPC UNAUTHENTICATED)" in r.err, r


def test_a_mesh_that_is_not_there_is_MESH_UNAVAILABLE(run):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run("--address", f"127.0.0.1:{port}", "--timeout", "5", "call", "demo/clean", json.dumps("hi"))
    assert r.code == 1, r
    assert re.search(r"^error: MESH_UNAVAILABLE \(gRPC UNAVAILABLE\): ", r.err, re.M), r  # no ErrorInfo: by its code


def test_input_that_is_not_json_is_refused_before_calling(run):
    r = run("call", "demo/clean", "not json")
    assert r.code == 2 and "INPUT_JSON is not JSON" in r.err, r


def test_list_calls_the_registry(run, mesh, client):
    r = run("--address", mesh.address, "--key", mesh.api_key, "list", env={"ALGOMESH_ADDRESS": "127.0.0.1:1"})
    assert r.code == 0, r
    listed = [line.split("  ", 2) for line in r.out.splitlines()]
    expected = [[a.name, a.latest_version, a.description] for a in client.algorithms()]
    assert expected and listed == expected, r
    assert ["demo/tokenize", "1.0.0", "Split cleaned text into tokens, keeping ! and ? as their own tokens"] in listed


@pytest.mark.parametrize("language", REFLECTION, indirect=True)
def test_the_reflection_clients_list_the_services_and_describe_Call(run):
    r = run("services", env={"ALGOMESH_API_KEY": ""})              # reflection needs no key
    assert r.code == 0, r
    for service in ("algomesh.v1.Mesh", "algomesh.v1.Registry", "grpc.health.v1.Health"):
        assert re.search(rf"^{re.escape(service)}$", r.out, re.M), r
    assert re.search(r"rpc Call ?\( ?\.?algomesh\.v1\.CallRequest ?\) returns \( ?\.?algomesh\.v1\.CallResponse ?\)", r.out), r
