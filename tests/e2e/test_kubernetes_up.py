"""``algomesh up --launcher kubernetes`` against a FAKE Kubernetes (tests/fakes/kube_fake.py),
NOT a cluster: the real control plane process scales Deployments through the official
client, the fake's kubelet runs each pod's sidecar and runner containers as local
processes, and a user's calls go through the ingress to them. The fake enforces the Role
in deploy/kubernetes/rbac.yaml."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import start_mesh, stop_mesh, write_algorithm
from tests.e2e.test_kubernetes_launcher import NS, RUNNER_IMAGE, SIDECAR_IMAGE, role_rules
from tests.fakes.kube_fake import FakeKube

pytestmark = pytest.mark.timeout(300)

ECHO = """\
import os
def apply(value):
    return {"echo": value, "pod": os.environ.get("HOSTNAME", "")}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    data = tmp_path_factory.mktemp("k8s-up")
    (data / "artifacts").mkdir()
    work = Path(tempfile.mkdtemp(prefix="ku-"))  # short: Unix socket paths live under it
    kube = FakeKube(namespace=NS, rules=role_rules(), user=f"system:serviceaccount:{NS}:algomesh",
                    images={SIDECAR_IMAGE: {"python": sys.executable}, RUNNER_IMAGE: {"python": sys.executable}},
                    claims={"algomesh-artifacts": data / "artifacts"}, backoff_scale=0.05, workdir=work)
    kube.start()
    mesh = start_mesh(data, "--launcher", "kubernetes", "--k8s-api-url", kube.url, "--k8s-namespace", NS,
                      "--k8s-sidecar-image", SIDECAR_IMAGE, "--k8s-runner-image", f"python={RUNNER_IMAGE}",
                      "--k8s-artifacts-claim", "algomesh-artifacts")
    try:
        yield mesh, kube
    finally:
        try:
            stop_mesh(mesh)
        finally:
            kube.stop()


def _deployments(kube: FakeKube) -> dict[str, int]:
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in kube.list("deployments")}


def test_calls_reach_pods_the_control_plane_scaled(cluster, tmp_path):
    mesh, kube = cluster
    assert "launcher  kubernetes" in mesh.output
    mesh.publish(write_algorithm(tmp_path / "echo", "k8s/echo", "1.0.0", ECHO))
    with mesh.client() as client:
        resp = client.algo("k8s/echo").pipe("hello")
        assert resp.result["echo"] == "hello" and resp.metadata.cold_start
        pod = resp.result["pod"]
        assert pod in {p["metadata"]["name"] for p in kube.list("pods")}  # it ran in the pod
        [instance] = client.instances("k8s/echo")
        assert instance.id == pod
        assert list(_deployments(kube).values()) == [1]
        assert client.algo("k8s/echo").pipe("again").result["pod"] == pod  # warm: the same pod

        client.scale("k8s/echo", 0)
        deadline = time.monotonic() + 30
        while client.instances("k8s/echo") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not client.instances("k8s/echo") and list(_deployments(kube).values()) == [0]


def test_the_manifests_flags_are_algomesh_ups():
    """deploy/kubernetes/controlplane.yaml runs `algomesh up` with flags it really has."""
    import subprocess

    import yaml

    manifest = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "controlplane.yaml"
    [deployment] = [d for d in yaml.safe_load_all(manifest.read_text()) if d and d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    helptext = subprocess.run([sys.executable, "-m", "algomesh.cli", "up", "--help"], capture_output=True,
                              text=True, timeout=60, check=True).stdout
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    assert "--launcher" in flags and len(flags) >= 8
    missing = [f for f in flags if f not in helptext]
    assert not missing, f"controlplane.yaml passes flags algomesh up does not have: {missing}"
