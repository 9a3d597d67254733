"""The whole mesh on the Consul store.

Runs against a real Consul agent when CONSUL_HTTP_ADDR is set; otherwise against
tests/fakes/consul_fake.py, a FAKE of Consul's HTTP API (no Consul binary can be
installed where this project is built), faithful to its documented KV, catalog, health
and blocking-query behaviour.
"""
import os
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import algomesh
from tests.conftest import ALGORITHMS, write_algorithm, start_mesh
from tests.fakes.consul_fake import FakeConsul

REAL = os.environ.get("CONSUL_HTTP_ADDR")


@pytest.fixture
def consul():
    if REAL:
        yield REAL, None
        return
    fake = FakeConsul()
    address = fake.start()
    try:
        yield address, fake
    finally:
        fake.stop()


@pytest.fixture
def consul_mesh(consul, tmp_path):
    address, fake = consul
    prefix = f"algomesh-e2e-{uuid.uuid4().hex[:8]}"
    mesh = start_mesh(tmp_path, "--registry", f"consul://{address}/{prefix}")
    try:
        yield mesh, fake
    finally:
        mesh.stop()


def _view_health(address: str, mesh=None) -> int:
    """The control plane's own (public port), or with ``mesh`` a sidecar's (mTLS)."""
    with (mesh.mesh_channel(address) if mesh else grpc.insecure_channel(address)) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="algomesh.registry-view"), timeout=5).status


def test_publish_call_and_switch_versions_on_consul(consul_mesh, tmp_path):
    mesh, _ = consul_mesh
    assert "registry  consul://" in mesh.banner
    code = "def apply(x):\n    return '{v}'\n"
    mesh.publish(write_algorithm(tmp_path / "a", "cx/x", "1.2.0", code.format(v="1.2.0")))
    with mesh.client() as c:
        x = c.algo("cx/x/1.*")
        assert x.pipe(0).result == "1.2.0"
        [inst] = c.instances("cx/x")
        assert inst.state == "passing" and inst.version == "1.2.0"
        mesh.publish(write_algorithm(tmp_path / "b", "cx/x", "1.3.0", code.format(v="1.3.0")))
        deadline, seen = time.monotonic() + 20, []
        while time.monotonic() < deadline and "1.3.0" not in seen:
            seen.append(x.pipe(0).result)  # every call succeeds while the view moves
        assert seen[-1] == "1.3.0"
        assert [v.manifest.version for v in c.versions("cx/x")] == ["1.3.0", "1.2.0"]
        with pytest.raises(algomesh.VersionExistsError):
            c.publish(write_algorithm(tmp_path / "c", "cx/x", "1.3.0", code.format(v="other")))


def test_mesh_keeps_serving_from_its_last_view_when_consul_goes_away(consul_mesh):
    mesh, fake = consul_mesh
    if fake is None:
        pytest.skip("needs the fake: a real agent cannot be stopped from here")  # only with CONSUL_HTTP_ADDR
    mesh.publish(ALGORITHMS / "cleaning")
    with mesh.client() as c:
        clean = c.algo("username/cleaning")
        assert clean.pipe("Before  it WENT").result == "before it went"
        assert _view_health(mesh.address) == health_pb2.HealthCheckResponse.SERVING
        fake.stop()
        assert [clean.pipe(f"Still {i}!").result for i in range(10)] == [f"still {i}" for i in range(10)]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _view_health(mesh.address) != health_pb2.HealthCheckResponse.NOT_SERVING:
            time.sleep(0.2)
        assert _view_health(mesh.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        [instance] = [i for i in _instances_from_view(mesh)]
        assert _view_health(instance, mesh) == health_pb2.HealthCheckResponse.NOT_SERVING  # the sidecar says so too
        assert clean.pipe("After  it WENT").result == "after it went"
        with pytest.raises(algomesh.UnavailableError) as e:
            c.publish(ALGORITHMS / "preprocessing")
        assert e.value.reason == "REGISTRY_UNAVAILABLE"
    assert "registry store unreachable" in "".join(_log(mesh))


def _instances_from_view(mesh):
    """Sidecar addresses, read from the processes (the registry itself is unreachable)."""
    from tests.conftest import descendants

    out = []
    for pid in descendants(mesh.process.pid):
        cmd = open(f"/proc/{pid}/cmdline").read().split("\0")
        if "algomesh.sidecar" in cmd:
            iid = cmd[cmd.index("--instance-id") + 1]
            log = next((mesh.data_dir / "logs").glob(f"*{iid}.log")).read_text()
            out.append(log.split(" ready at ")[1].split()[0])
    return out


def _log(mesh):
    time.sleep(0.2)
    return mesh.output
