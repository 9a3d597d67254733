"""Prometheus /metrics on the control plane and on every sidecar, scraped over real HTTP."""
import re
import urllib.request

import pytest

import algomesh
from tests.conftest import EXAMPLES, write_algorithm


@pytest.fixture(scope="module", autouse=True)
def published(mesh, tmp_path_factory):
    for folder in ("tokenize", "clean"):
        mesh.publish(EXAMPLES / "quickstart" / folder)
    mesh.publish(write_algorithm(tmp_path_factory.mktemp("m") / "boom", "met/boom", "1.0.0",
                                 "def apply(x):\n    raise ValueError('no')\n"))


def scrape(address: str) -> dict[str, float]:
    """``name{labels}`` -> value, from a real GET /metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def control_plane_metrics(mesh) -> str:
    return re.search(r"metrics\s+http://(\S+)/metrics", mesh.banner).group(1)


def test_the_control_plane_counts_calls_errors_latency_cold_starts_and_instances(mesh, client):
    first = client.algo("demo/clean").pipe("Hello  THERE")
    assert first.result == ["hello", "there"] and first.metadata.cold_start   # this module's mesh is fresh
    for _ in range(3):
        client.algo("demo/clean").pipe("again").result
    with pytest.raises(algomesh.AlgorithmError):
        client.algo("met/boom").pipe(1).result
    with pytest.raises(algomesh.NotFoundError):
        client.algo("met/nothing").pipe(1).result
    with mesh.client("amk_0123456789abcdef_" + "x" * 43) as bad:
        with pytest.raises(algomesh.PermissionError_):
            bad.algo("demo/clean").pipe(1).result

    m = scrape(control_plane_metrics(mesh))
    labels = 'surface="ingress",algorithm="demo/clean",version="1.0.0"'
    assert m[f"algomesh_calls_total{{{labels}}}"] == 4
    assert m[f"algomesh_call_seconds_count{{{labels}}}"] == 4
    assert m[f'algomesh_call_seconds_bucket{{{labels},le="+Inf"}}'] == 4
    assert 0 < m[f"algomesh_call_seconds_sum{{{labels}}}"]
    assert m[f"algomesh_cold_starts_total{{{labels}}}"] == 1
    assert m['algomesh_errors_total{surface="ingress",algorithm="met/boom",reason="ALGORITHM_ERROR"}'] == 1
    assert m['algomesh_errors_total{surface="ingress",algorithm="met/nothing",reason="ALGORITHM_NOT_FOUND"}'] == 1
    assert m['algomesh_errors_total{surface="ingress",algorithm="demo/clean",reason="UNAUTHENTICATED"}'] == 1
    assert m['algomesh_in_flight{surface="ingress"}'] == 0
    assert m['algomesh_instances{algorithm="demo/clean",version="1.0.0",state="passing"}'] == 1
    assert m['algomesh_instances{algorithm="demo/tokenize",version="1.0.0",state="passing"}'] == 1


def test_every_sidecar_serves_its_own_metrics(mesh, client):
    client.algo("demo/clean").pipe("one more").result   # demo/clean pipes to demo/tokenize inside
    [clean] = client.instances("demo/clean")
    [tokenize] = client.instances("demo/tokenize")
    assert clean.metrics_address and tokenize.metrics_address != clean.metrics_address
    m = scrape(clean.metrics_address)
    assert m['algomesh_calls_total{surface="inbound",algorithm="demo/clean",version="1.0.0"}'] >= 1
    assert m['algomesh_calls_total{surface="outbound",algorithm="demo/tokenize",version="1.0.0"}'] >= 1
    t = scrape(tokenize.metrics_address)
    assert t['algomesh_calls_total{surface="inbound",algorithm="demo/tokenize",version="1.0.0"}'] >= 1
    assert not any("surface=\"outbound\"" in k and "_total" in k for k in t)   # tokenize pipes to nobody


def test_metrics_never_carry_keys_or_payloads(mesh, client):
    client.algo("demo/clean").pipe("a secret sentence").result
    [clean] = client.instances("demo/clean")
    for address in (control_plane_metrics(mesh), clean.metrics_address):
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "secret sentence" not in text and mesh.api_key not in text and "amk_" not in text
