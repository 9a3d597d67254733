"""One trace per pipeline call: every hop a span, stored by the control plane.

The pipeline is the quickstart's: ``sentiment.pipe(clean.pipe(tweet))``, where demo/clean
pipes to demo/tokenize from inside the algorithm. Three stages, two client calls chained
by the SDK, one pipe inside an algorithm: one trace.
"""
import subprocess
import sys
import time

import pytest

import algomesh
from tests.conftest import EXAMPLES, stored_trace

QUICKSTART = EXAMPLES / "quickstart"


@pytest.fixture(scope="module", autouse=True)
def published(mesh):
    for folder in ("tokenize", "clean", "sentiment"):
        mesh.publish(QUICKSTART / folder)


def test_a_three_stage_pipeline_is_one_trace_with_every_hop(client):
    clean, sentiment = client.algo("demo/clean"), client.algo("demo/sentiment")
    sentiment.pipe(clean.pipe("warm up")).result       # cold starts are not what this test is about
    resp = sentiment.pipe(clean.pipe("I LOVE this!! @bob http://x.co"))
    assert resp.result["label"] == "positive"
    trace_id = resp.metadata.trace_id
    assert len(trace_id) == 32

    expected = {
        "call demo/clean", "demo/clean@1.0.0", "apply demo/clean@1.0.0",
        "pipe demo/tokenize", "demo/tokenize@1.0.0", "apply demo/tokenize@1.0.0",
        "call demo/sentiment", "demo/sentiment@1.0.0", "apply demo/sentiment@1.0.0",
    }
    trace = stored_trace(client, trace_id, len(expected))
    spans = {s.name: s for s in trace.spans}
    assert set(spans) == expected, sorted(spans)
    assert len(trace.spans) == len(expected)             # each hop once
    assert {s.trace_id for s in trace.spans} == {trace_id}

    def parent(name: str) -> str:
        by_id = {s.span_id: s.name for s in trace.spans}
        return by_id.get(spans[name].parent_span_id, "")

    # parent links: the chain as it ran, across three processes per stage
    assert parent("call demo/clean") == ""
    assert parent("demo/clean@1.0.0") == "call demo/clean"
    assert parent("apply demo/clean@1.0.0") == "demo/clean@1.0.0"
    assert parent("pipe demo/tokenize") == "apply demo/clean@1.0.0"     # from inside the algorithm
    assert parent("demo/tokenize@1.0.0") == "pipe demo/tokenize"
    assert parent("apply demo/tokenize@1.0.0") == "demo/tokenize@1.0.0"
    assert parent("call demo/sentiment") == "call demo/clean"             # the SDK's chain
    assert parent("demo/sentiment@1.0.0") == "call demo/sentiment"
    assert parent("apply demo/sentiment@1.0.0") == "demo/sentiment@1.0.0"

    # durations nest: every span lies within its parent (clocks: one machine)
    by_id = {s.span_id: s for s in trace.spans}
    for s in trace.spans:
        assert s.end_unix_nano >= s.start_unix_nano
        p = by_id.get(s.parent_span_id)
        if p is not None and not s.name.startswith("call "):   # a chained call starts after its parent
            assert p.start_unix_nano <= s.start_unix_nano and s.end_unix_nano <= p.end_unix_nano, (s.name, p.name)

    # attributes: who, which version, caller, sizes; never payloads or keys
    ingress = spans["call demo/clean"]
    assert ingress.service == "algomesh-ingress" and ingress.kind == "server"
    assert ingress.attributes["algomesh.version"] == "1.0.0"
    assert ingress.attributes["algomesh.key_owner"] == "admin"
    assert spans["demo/tokenize@1.0.0"].attributes["algomesh.caller"] == "demo/clean@1.0.0"
    assert spans["demo/tokenize@1.0.0"].service == "demo/tokenize@1.0.0"
    assert spans["pipe demo/tokenize"].kind == "client"
    assert int(spans["demo/clean@1.0.0"].attributes["algomesh.request_bytes"]) > 0
    everything = str(trace)
    assert "LOVE" not in everything and "bob" not in everything and client.api_key not in everything


def test_the_control_plane_learns_call_edges_from_the_spans(mesh, client):
    from algomesh.sidecar.edges import CallGraph

    clean, sentiment = client.algo("demo/clean"), client.algo("demo/sentiment")
    resp = sentiment.pipe(clean.pipe("edges, please"))
    stored_trace(client, resp.metadata.trace_id, 9)
    graph = CallGraph(mesh.data_dir / "edges.db")      # the control plane's own file (SQLite, WAL)
    try:
        edges = {(e.caller, e.callee): e for e in graph.edges()}
    finally:
        graph.close()
    assert edges["demo/clean@1.0.0", "demo/tokenize@1.0.0"].share > 0.99    # clean always pipes to tokenize (decay: not exactly 1)
    assert edges["client", "demo/clean@1.0.0"].calls >= 2 and edges["client", "demo/sentiment@1.0.0"].calls >= 2
    assert not any(callee.startswith("apply") or caller.startswith("call ") for caller, callee in edges)


def test_a_failing_stage_is_marked_with_its_reason(mesh, client, tmp_path):
    from tests.conftest import write_algorithm

    mesh.publish(write_algorithm(tmp_path / "boom", "trace/boom", "1.0.0",
                                 "def apply(x):\n    raise ValueError('no')\n"))
    with pytest.raises(algomesh.AlgorithmError) as e:
        client.algo("trace/boom").pipe(1).result
    trace_id = e.value.metadata["trace_id"]          # the error names its trace too
    trace = stored_trace(client, trace_id, 3)
    failed = {s.name: s for s in trace.spans if s.error}
    assert {"call trace/boom", "trace/boom@1.0.0", "apply trace/boom@1.0.0"} <= set(failed)
    assert failed["apply trace/boom@1.0.0"].attributes["algomesh.error_reason"] == "ALGORITHM_ERROR"


def test_algomesh_trace_prints_the_waterfall(mesh, client):
    resp = client.algo("demo/clean").pipe("Hello  THERE")
    stored_trace(client, resp.metadata.trace_id, 6)
    out = mesh.cli("trace", resp.metadata.trace_id)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    lines = text.splitlines()
    assert lines[0].startswith(f"trace {resp.metadata.trace_id}  6 spans")
    assert "call demo/clean" in lines[1] and "█" in lines[1]

    def column(name: str) -> int:  # where a span's name starts: deeper spans start further right
        for line in lines[1:]:
            rest = line.split("█")[-1]
            if rest.strip().split(" (")[0].split("  [")[0] == name:
                return len(line) - len(rest.lstrip())
        raise AssertionError(f"{name} not in the waterfall")

    chain = ["call demo/clean", "demo/clean@1.0.0", "apply demo/clean@1.0.0", "pipe demo/tokenize",
             "demo/tokenize@1.0.0", "apply demo/tokenize@1.0.0"]
    assert [column(n) for n in chain] == sorted({column(n) for n in chain})  # each one deeper


def test_traces_are_the_owners_own(mesh, client):
    resp = client.algo("demo/tokenize").pipe("a b")
    stored_trace(client, resp.metadata.trace_id, 3)
    other_key = client.create_key("someone").secret
    with mesh.client(other_key) as other:
        with pytest.raises(algomesh.NotFoundError) as e:
            other.trace(resp.metadata.trace_id)
        assert e.value.reason == "TRACE_NOT_FOUND"
    with pytest.raises(algomesh.InvalidError):
        client.trace("not-a-trace-id")
    out = subprocess.run([sys.executable, "-m", "algomesh.cli", "--address", mesh.address, "--api-key",
                          mesh.api_key, "trace", "0" * 32], capture_output=True, timeout=60)
    assert out.returncode == 1 and b"TRACE_NOT_FOUND" in out.stderr


class _Collector:
    """A real OTLP/gRPC TraceService in the test process, standing in for Jaeger or Tempo."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.requests: list = []

        def export(body: bytes, context) -> bytes:
            self.requests.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            return trace_service_pb2.ExportTraceServiceResponse().SerializeToString()

        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def spans(self) -> dict[str, set[str]]:
        """service name -> the trace ids of its spans"""
        out: dict[str, set[str]] = {}
        for r in self.requests:
            for rs in r.resource_spans:
                service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                for ss in rs.scope_spans:
                    out.setdefault(service, set()).update(s.trace_id.hex() for s in ss.spans)
        return out


def test_standard_otel_variables_send_traces_to_a_collector_too(tmp_path, monkeypatch):
    from tests.conftest import start_mesh

    collector = _Collector()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-mesh")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    m = start_mesh(tmp_path / "mesh")
    try:
        m.publish(QUICKSTART / "tokenize")
        with m.client() as c:
            resp = c.algo("demo/tokenize").pipe("to the collector")
            resp.result
            trace_id = resp.metadata.trace_id
            stored_trace(c, trace_id, 3)                      # the control plane keeps it as well
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and {"my-mesh", "demo/tokenize@1.0.0"} - {
                s for s, ids in collector.spans().items() if trace_id in ids}:
            time.sleep(0.2)
        got = collector.spans()
        assert trace_id in got.get("my-mesh", set()), got
        assert trace_id in got.get("demo/tokenize@1.0.0", set()), got
    finally:
        m.stop()
        collector.server.stop(0)


def test_the_sampler_is_honoured(tmp_path, monkeypatch):
    from tests.conftest import start_mesh

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    m = start_mesh(tmp_path / "mesh")
    try:
        m.publish(QUICKSTART / "tokenize")
        with m.client() as c:
            resp = c.algo("demo/tokenize").pipe("not sampled")
            assert resp.result == ["not", "sampled"] and len(resp.metadata.trace_id) == 32
            time.sleep(1.5)                              # two export intervals
            with pytest.raises(algomesh.NotFoundError):
                c.trace(resp.metadata.trace_id)
    finally:
        m.stop()
