"""`algomesh up` as an operator sees it: where it listens, health, reflection, shutdown."""
import os
import re
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import ALGORITHMS, alive, descendants, start_mesh, stop_mesh


def _wait_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def _warm(mesh, *names):
    with mesh.client() as c:
        for name in names:
            c.algo(name).pipe("warm me").result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_everything(tmp_path, sig):
    mesh = start_mesh(tmp_path)
    try:
        assert f"listening on {mesh.address}" in mesh.banner and str(tmp_path) in mesh.banner
        mesh.publish(ALGORITHMS / "cleaning")
        mesh.publish(ALGORITHMS / "preprocessing")
        _warm(mesh, "username/cleaning", "username/preprocessing")
        pids = descendants(mesh.process.pid)
        assert len(pids) >= 4  # two sidecars, two runners
        assert mesh.stop(sig) == 0
        assert _wait_gone(pids) == []
    finally:
        mesh.stop(signal.SIGKILL)


def test_ctrl_c_to_the_whole_foreground_group(tmp_path):
    # A terminal's Ctrl-C signals every process in the foreground group at once.
    mesh = start_mesh(tmp_path, own_group=True)
    try:
        mesh.publish(ALGORITHMS / "cleaning")
        _warm(mesh, "username/cleaning")
        pids = descendants(mesh.process.pid)
        assert os.getpgid(mesh.process.pid) == mesh.process.pid != os.getpgid(0)
        os.killpg(mesh.process.pid, signal.SIGINT)
        assert mesh.process.wait(30) == 0
        assert _wait_gone(pids) == []
    finally:
        mesh.stop(signal.SIGKILL)


def test_a_killed_control_plane_takes_its_instances_with_it(tmp_path):
    mesh = start_mesh(tmp_path)
    mesh.publish(ALGORITHMS / "cleaning")
    _warm(mesh, "username/cleaning")
    pids = descendants(mesh.process.pid)
    mesh.process.kill()  # no chance to clean up: the parent-death signal must do it
    mesh.process.wait(10)
    assert _wait_gone(pids) == []


def test_the_next_start_removes_the_socket_folder_a_killed_control_plane_left(tmp_path):
    running, killed = start_mesh(tmp_path / "running"), start_mesh(tmp_path / "killed")
    try:
        for m in (running, killed):
            m.publish(ALGORITHMS / "cleaning")
            _warm(m, "username/cleaning")
        kept, left = _socket_dir(running), _socket_dir(killed)
        pids = descendants(killed.process.pid)
        killed.process.kill()  # no chance to remove its folder
        killed.process.wait(10)
        assert _wait_gone(pids) == []
        assert left.is_dir()
        later = start_mesh(tmp_path / "later")
        try:
            assert not left.exists()
            # a running mesh's folder stays, with its instance's sockets, and it still answers
            assert len(list(kept.glob("*.sock"))) == 2
            with running.client() as c:
                assert c.algo("username/cleaning").pipe("Still  HERE").result == "still here"
        finally:
            stop_mesh(later)
    finally:
        killed.stop(signal.SIGKILL)
        stop_mesh(running)
    assert not kept.exists()  # and a graceful stop removes its own


def _channel(address: str, mesh=None) -> grpc.Channel:
    """Plain, or with ``mesh`` carrying a mesh certificate (a sidecar's inbound port is mTLS)."""
    return mesh.mesh_channel(address) if mesh else grpc.insecure_channel(address)


def _health(address: str, service: str = "", mesh=None) -> int:
    with _channel(address, mesh) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _services(address: str, mesh=None) -> set[str]:
    with _channel(address, mesh) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        return {s.name for r in responses for s in r.list_services_response.service}


def test_health_and_reflection_on_every_server(mesh):
    serving = health_pb2.HealthCheckResponse.SERVING
    assert _health(mesh.address) == serving
    assert _health(mesh.address, "algomesh.v1.Mesh") == serving
    assert _health(mesh.address, "algomesh.v1.Registry") == serving
    assert {"algomesh.v1.Mesh", "algomesh.v1.Registry", "grpc.health.v1.Health"} <= _services(mesh.address)

    mesh.publish(ALGORITHMS / "cleaning")
    _warm(mesh, "username/cleaning")
    with mesh.client() as c:
        [instance] = c.instances("username/cleaning")
    assert instance.state == "passing" and instance.version == "0.1.0"
    assert _health(instance.address, mesh=mesh) == serving  # the algorithm's sidecar, over mTLS
    # its view of the registry is current
    assert _health(instance.address, "algomesh.registry-view", mesh=mesh) == serving
    assert _health(mesh.address, "algomesh.registry-view") == serving
    assert "algomesh.v1.Mesh" in _services(instance.address, mesh=mesh)

    sockets = [p for p in _socket_dir(mesh).iterdir() if p.name.startswith(instance.id)]
    runner = next(p for p in sockets if p.name.endswith(".runner.sock"))
    outbound = next(p for p in sockets if p.name.endswith(".out.sock"))
    assert _health(f"unix://{runner}") == serving  # the runner
    assert "algomesh.v1.Runner" in _services(f"unix://{runner}")
    assert _health(f"unix://{outbound}") == serving  # the sidecar's outbound surface


def _socket_dir(mesh):
    from pathlib import Path

    for pid in descendants(mesh.process.pid):
        try:
            cmd = open(f"/proc/{pid}/cmdline").read().split("\0")
        except OSError:
            continue
        if "--socket-dir" in cmd:
            return Path(cmd[cmd.index("--socket-dir") + 1])
    raise AssertionError("no sidecar running")


def test_registry_survives_a_restart(tmp_path):
    mesh = start_mesh(tmp_path)
    try:
        mesh.publish(ALGORITHMS / "cleaning")
        _warm(mesh, "username/cleaning")
    finally:
        mesh.stop()
    again = start_mesh(tmp_path)
    try:
        with again.client() as c:
            assert [a.name for a in c.algorithms()] == ["username/cleaning"]
            assert c.instances() == []  # the old run's instances are gone
            resp = c.algo("username/cleaning").pipe("Back  AGAIN")
            assert resp.result == "back again" and resp.metadata.cold_start
    finally:
        again.stop()


def test_port_in_use_is_a_clear_error(mesh, tmp_path):
    import subprocess
    import sys

    port = mesh.address.rsplit(":", 1)[1]
    out = subprocess.run([sys.executable, "-m", "algomesh.cli", "up", "--data-dir", str(tmp_path), "--port", port],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in (out.stdout + out.stderr)


def test_admin_key_printed_once_and_new_admin_key_on_request(tmp_path):
    first = start_mesh(tmp_path)
    first_key = first.api_key
    first.stop()
    assert first_key and first_key in first.banner
    again = start_mesh(tmp_path)                      # keys exist: no key in the banner
    try:
        assert "amk_" not in again.banner and "security  API keys" in again.banner
        with again.client(first_key) as c:
            assert c.algorithms() == []
    finally:
        again.stop()
    third = start_mesh(tmp_path, "--new-admin-key")   # the operator lost it: another one
    try:
        new_key = re.search(r"admin key (amk_\S+)", third.banner).group(1)
        assert new_key != first_key
        with third.client(new_key) as c:
            assert {k.owner for k in c.keys()} == {"admin"} and len(c.keys()) == 2
    finally:
        third.stop()
