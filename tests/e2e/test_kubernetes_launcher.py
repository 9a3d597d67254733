"""The Kubernetes launcher against a FAKE Kubernetes (tests/fakes/kube_fake.py). NOT a cluster.

The fake is a real HTTP API server that the official ``kubernetes`` client talks to, with a
Deployment/ReplicaSet controller and a fake kubelet that runs each pod's containers as local
processes: the sidecar container really is ``python -m algomesh.sidecar --external-runner
--cert-dir ...`` and the runner container the Python runner, sharing an emptyDir for the
runner's socket. The control plane half is real too (registry on SQLite, the mesh port with
mTLS from a mesh CA), assembled in-process here so each launcher operation can be driven
on its own (tests/e2e/test_kubernetes_up.py runs ``algomesh up --launcher kubernetes``
itself against the same fake). The fake enforces the RBAC Role in deploy/kubernetes/rbac.yaml, so a call
the launcher makes that the manifests do not allow fails these tests.
"""
from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from algomesh import _wire
from algomesh._archive import pack
from algomesh._errors import AlgomeshError, from_rpc_error
from algomesh._payload import decode, encode
from algomesh.registry.artifacts import ArtifactStore
from algomesh.registry.keys import ANYONE, Principal
from algomesh.registry.resolve import owner_of
from algomesh.registry.service import MESH_METHODS, Registry, RegistryServicer, registry_handler
from algomesh.registry.store import open_store
from algomesh.registry.view import RegistryView
from algomesh.sidecar.kubernetes_launcher import (KubernetesLauncher, deployment_name,
                                                  make_kubernetes_launcher)
from algomesh.sidecar.meshtls import CA_LIFETIME, CONTROL_PLANE, MeshCA, MeshTransport, peer_identity
from algomesh.sidecar.server import new_server
from algomesh.sidecar.traces import TRACE_SERVICE, TraceStore, collector_handler
from algomesh.v1 import payload_pb2, registry_pb2

from tests.fakes.kube_fake import FakeKube

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "deploy" / "kubernetes" / "rbac.yaml"
NS = "algomesh"
SIDECAR_IMAGE = "algomesh/sidecar:test"
RUNNER_IMAGE = "algomesh/runner-python:test"
NATIVE_IMAGE = "algomesh/runner-native:test"
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name

pytestmark = pytest.mark.timeout(300)


def role_rules() -> list[dict]:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    [role] = [d for d in docs if d["kind"] == "Role"]
    return role["rules"]


class ControlPlane:
    """The control plane's parts the launcher needs, on an event loop in a thread of its
    own (the fake's controllers and kubelet are threads too): registry, mesh port (mTLS),
    span collector, and the launcher, built by make_kubernetes_launcher as ``algomesh up``
    would."""

    def __init__(self, data: Path, kube: FakeKube) -> None:
        self.data, self.kube = data, kube
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ca = MeshCA()
        self.run(self._start())

    def run(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.store = open_store(f"sqlite:///{self.data / 'registry.db'}")
        self.artifacts = ArtifactStore(self.data / "artifacts")
        self.registry = Registry(self.store, self.artifacts, instance_ttl=30)
        self.view = RegistryView(self.store)
        await self.view.start()
        self.registry.view = self.view
        transport = MeshTransport(self.ca.issue(CONTROL_PLANE, lifetime=CA_LIFETIME))
        self.server, health = new_server([REGISTRY_SERVICE, TRACE_SERVICE])
        port = transport.listen(self.server, "127.0.0.1:0")
        self.launcher = self.new_launcher(f"127.0.0.1:{port}")
        self.traces = TraceStore(self.data / "traces.db")

        def identify_sidecar(context) -> Principal:
            identity = peer_identity(context) or ""
            name, _, version = identity.rpartition("@")
            return Principal(owner=owner_of(name), algorithm=identity) if name else ANYONE

        servicer = RegistryServicer(self.registry, self.view, identify_sidecar, self.launcher.ensure,
                                    self.launcher.scale)
        self.server.add_generic_rpc_handlers((registry_handler(servicer, only=MESH_METHODS),
                                              collector_handler(self.traces)))
        await self.server.start()
        await health.serving()
        await health.view(None)
        self.caller = transport  # calls come as the ingress makes them

    def new_launcher(self, registry_address: str, sidecar_image: str = SIDECAR_IMAGE) -> KubernetesLauncher:
        return make_kubernetes_launcher(
            registry=self.registry, registry_address=registry_address, artifacts=self.artifacts,
            launch_timeout=60, issue=self.ca.issue, api_url=self.kube.url, namespace=NS,
            sidecar_image=sidecar_image, runner_images={"python": RUNNER_IMAGE, "cpp": NATIVE_IMAGE},
            artifacts_claim="algomesh-artifacts", max_total=8)

    def publish(self, folder: Path) -> registry_pb2.VersionInfo:
        info, _ = self.run(self.registry.publish(pack(folder)))
        return info

    async def call(self, instance: registry_pb2.Instance, value, timeout: float = 30):
        channel = self.caller.channel(instance.address, options=_wire.CHANNEL_OPTIONS)
        try:
            body = payload_pb2.CallRequest(input=encode(value)).SerializeToString()
            raw = await channel.unary_unary(_wire.CALL_METHOD)(
                body, metadata=((_wire.TARGET_KEY, f"{instance.algorithm}/{instance.version}"),), timeout=timeout)
            return decode(payload_pb2.CallResponse.FromString(raw).output)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            await channel.close()

    def close(self) -> None:
        async def stop():
            await self.launcher.stop_all()
            await self.server.stop(1)
            self.view.stop()
            self.store.close()
            self.traces.close()
        try:
            self.run(stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def algorithm(folder: Path, name: str, version: str, code: str, runtime: str = "python",
              entrypoint: str = "main.py", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "algomesh.toml").write_text(f'name = "{name}"\nversion = "{version}"\nruntime = "{runtime}"\n'
                                          f'entrypoint = "{entrypoint}"\n' + textwrap.dedent(extra))
    (folder / entrypoint).write_text(textwrap.dedent(code))
    return folder


ECHO = """
    import os
    def apply(value):
        return {"echo": value, "pod": os.environ.get("HOSTNAME", ""), "pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Unix socket paths are short: the fake kubelet's folders live under a short temp dir.
    work = Path(tempfile.mkdtemp(prefix="kk-"))
    data = tmp_path_factory.mktemp("cp")
    (data / "artifacts").mkdir()
    kube = FakeKube(namespace=NS, rules=role_rules(), user=f"system:serviceaccount:{NS}:algomesh",
                    images={SIDECAR_IMAGE: {"python": sys.executable}, SIDECAR_IMAGE + "2": {"python": sys.executable},
                            RUNNER_IMAGE: {"python": sys.executable}, NATIVE_IMAGE: {}},
                    claims={"algomesh-artifacts": data / "artifacts"}, backoff_scale=0.05, workdir=work)
    kube.start()
    cp = ControlPlane(data, kube)
    try:
        yield cp
    finally:
        try:
            cp.close()
        finally:
            kube.stop()
            import shutil
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def echo(cluster, tmp_path_factory):
    return cluster.publish(algorithm(tmp_path_factory.mktemp("echo"), "demo/echo", "1.0.0", ECHO))


def pods_of(kube: FakeKube, info: registry_pb2.VersionInfo, *, live: bool = True) -> list[dict]:
    name = deployment_name(info.manifest.name, info.manifest.version)
    return [p for p in kube.list("pods", selector=f"algomesh.dev/deployment={name}")
            if not (live and p["metadata"].get("deletionTimestamp"))]


def wait_for(predicate, timeout: float = 30, what: str = "", kube: FakeKube | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{kube.logs()}" if kube else ""))


# --------------------------------------------------------------------------------------------


def test_ensure_cold_starts_a_pod_whose_sidecar_registers_and_answers(cluster, echo):
    kube = cluster.kube
    t0 = time.monotonic()
    instances, cold = cluster.run(cluster.launcher.ensure(echo))
    assert cold and len(instances) == 1, instances
    inst = instances[0]
    [pod] = pods_of(kube, echo)
    assert inst.id == pod["metadata"]["name"]           # the instance id is the pod's name
    assert inst.address.startswith("127.0.0.1:")        # --host $(POD_IP): the fake's pod IP
    answer = cluster.run(cluster.call(inst, "hi"))
    assert answer["echo"] == "hi" and answer["pod"] == inst.id
    pids = kube.pids(inst.id)
    # the runner is the pod's other container, not the sidecar's child
    assert answer["pid"] == pids["runner"] and pids["sidecar"] != pids["runner"]
    assert _ppid(pids["runner"]) != pids["sidecar"]
    again, cold = cluster.run(cluster.launcher.ensure(echo))
    assert not cold and [i.id for i in again] == [inst.id]
    [running] = [r for r in cluster.launcher.running() if r.id == inst.id]
    assert (running.state, running.reason, running.name, running.version) == ("warm", "cold-start", "demo/echo",
                                                                               "1.0.0")
    assert running.metrics_address and 0 <= running.age < time.monotonic() - t0 + 5


def test_deployment_and_secret_are_what_the_docs_say(cluster, echo):
    cluster.run(cluster.launcher.ensure(echo))
    m = echo.manifest
    name = deployment_name(m.name, m.version)
    assert re.fullmatch(r"am-demo-echo-1-0-0-[0-9a-f]{8}", name) and len(name) <= 42
    dep = cluster.kube.get("deployments", name)
    labels = {"app.kubernetes.io/managed-by": "algomesh", "app.kubernetes.io/component": "algorithm",
              "algomesh.dev/algorithm": "demo.echo", "algomesh.dev/version": "1.0.0",
              "algomesh.dev/deployment": name}
    assert dep["metadata"]["labels"] == labels
    assert dep["metadata"]["annotations"]["algomesh.dev/algorithm"] == "demo/echo"
    assert dep["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "algomesh",
                                                       "algomesh.dev/deployment": name}}
    tpl = dep["spec"]["template"]
    assert tpl["metadata"]["labels"] == labels
    spec = tpl["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    runner, sidecar = spec["containers"]
    assert (runner["name"], runner["image"], sidecar["name"], sidecar["image"]) == \
        ("runner", RUNNER_IMAGE, "sidecar", SIDECAR_IMAGE)
    path = str(cluster.artifacts.path(echo.digest))
    assert runner["command"] == ["python", "-X", "faulthandler", "-m", "algomesh.runners.python",
                                 "--socket", "/run/algomesh/$(POD_NAME).runner.sock", "--path", path,
                                 "--entrypoint", "main.py", "--concurrency", "1"]
    assert runner["workingDir"] == path
    assert runner["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert runner["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in runner["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ALGOMESH_ADDRESS"] == "unix:///run/algomesh/$(POD_NAME).out.sock"
    assert sidecar["command"] == ["python", "-m", "algomesh.sidecar"]
    args = sidecar["args"]
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--instance-id"] == "$(POD_NAME)" and pairs["--algorithm"] == "demo/echo"
    assert pairs["--version"] == "1.0.0" and pairs["--path"] == path and pairs["--socket-dir"] == "/run/algomesh"
    assert args[args.index("--host") + 1] == "$(POD_IP)"
    assert "--external-runner" in args and "--insecure" not in args
    assert args[args.index("--cert-dir") + 1] == "/etc/algomesh/mesh"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["sockets"]["emptyDir"] == {}
    assert volumes["artifact"]["persistentVolumeClaim"] == {"claimName": "algomesh-artifacts", "readOnly": True}
    assert volumes["mesh-cert"]["secret"]["secretName"] == f"{name}-mesh"
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in spec["containers"]}
    assert mounts["runner"]["artifact"] == {"name": "artifact", "mountPath": path, "subPath": echo.digest,
                                            "readOnly": True}
    assert "mesh-cert" not in mounts["runner"]               # the algorithm never sees the mesh key
    assert mounts["sidecar"]["mesh-cert"]["mountPath"] == "/etc/algomesh/mesh"
    assert "artifact" not in mounts["sidecar"]

    secret = cluster.kube.get("secrets", f"{name}-mesh")
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "demo/echo@1.0.0"
    assert base64.b64decode(secret["data"]["ca.crt"]) == cluster.ca.ca_pem
    ca = x509.load_pem_x509_certificate(cluster.ca.ca_pem)
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def test_scale_up_then_down(cluster, echo):
    launcher, kube = cluster.launcher, cluster.kube
    before = {i.id for i in launcher.ready("demo/echo", "1.0.0")}
    ready = cluster.run(launcher.scale(echo, 3))
    assert len({i.id for i in ready}) == 3
    assert {p["metadata"]["name"] for p in pods_of(kube, echo)} == {i.id for i in ready}
    answers = {cluster.run(cluster.call(i, 1))["pod"] for i in ready}
    assert answers == {i.id for i in ready}
    name = deployment_name("demo/echo", "1.0.0")
    assert kube.get("deployments", name)["spec"]["replicas"] == 3
    cluster.run(launcher.scale(echo, 1))
    assert kube.get("deployments", name)["spec"]["replicas"] == 1
    wait_for(lambda: len(pods_of(kube, echo, live=False)) == 1, what="two pods to terminate", kube=kube)
    wait_for(lambda: len(launcher.ready("demo/echo", "1.0.0")) == 1, what="two instances to withdraw")
    # a plain scale-down keeps the oldest pod (the ReplicaSet removes the newest ready ones first)
    assert before and {i.id for i in launcher.ready("demo/echo", "1.0.0")} <= before
    wait_for(lambda: [r.state for r in launcher.running() if (r.name, r.version) == ("demo/echo", "1.0.0")]
             == ["warm"], what="the launcher's pod list to catch up (it lists every second)")


def test_stop_removes_that_instance_even_when_it_is_not_the_newest(cluster, echo):
    launcher, kube = cluster.launcher, cluster.kube
    cluster.run(launcher.scale(echo, 3))
    pods = pods_of(kube, echo)
    by_age = sorted(launcher.running(), key=lambda r: -r.age)
    victim = by_age[0].id  # the oldest: a plain scale-down would keep it
    cluster.run(launcher.stop(victim))
    assert victim not in {i.id for i in launcher.ready("demo/echo", "1.0.0")}
    wait_for(lambda: kube.get("pods", victim) is None, what=f"pod {victim} to go", kube=kube)
    left = {p["metadata"]["name"] for p in pods_of(kube, echo)}
    assert left == {p["metadata"]["name"] for p in pods} - {victim}
    assert kube.get("deployments", deployment_name("demo/echo", "1.0.0"))["spec"]["replicas"] == 2
    patches = [r for r in kube.requests if r.resource == "pods" and r.verb == "patch"]
    assert patches and patches[-1].name == victim
    cluster.run(launcher.stop("no-such-pod"))  # already gone: nothing to do
    cluster.run(launcher.stop(victim))
    assert kube.get("deployments", deployment_name("demo/echo", "1.0.0"))["spec"]["replicas"] == 2


def test_a_runner_that_dies_is_restarted_by_the_kubelet_and_serves_again(cluster, echo):
    launcher, kube = cluster.launcher, cluster.kube
    [inst, *_] = cluster.run(launcher.ensure(echo))[0]
    first = cluster.run(cluster.call(inst, "a"))["pid"]
    os.kill(kube.pids(inst.id)["runner"], signal.SIGKILL)
    wait_for(lambda: kube.pids(inst.id).get("runner") not in (None, first), what="the runner's restart", kube=kube)
    deadline = time.monotonic() + 30
    while True:  # a call may meet the socket going away (RUNNER_CRASHED); the next one reconnects
        try:
            answer = cluster.run(cluster.call(inst, "b"))
            break
        except AlgomeshError as exc:
            assert exc.reason in ("RUNNER_CRASHED", "LAUNCH_FAILED", "MESH_UNAVAILABLE"), exc
            assert time.monotonic() < deadline, kube.logs(inst.id)
            time.sleep(0.2)
    assert answer["pid"] == kube.pids(inst.id)["runner"] != first
    status = next(c for c in kube.get("pods", inst.id)["status"]["containerStatuses"] if c["name"] == "runner")
    assert status["restartCount"] >= 1


def test_a_runner_that_cannot_start_is_a_typed_launch_failed(cluster, tmp_path):
    folder = algorithm(tmp_path / "broken", "demo/broken", "1.0.0", "#!/bin/sh\necho 'cannot open model.bin' >&2\n"
                       "exit 3\n", runtime="cpp", entrypoint="run.sh")
    (folder / "run.sh").chmod(0o755)
    info = cluster.publish(folder)
    with pytest.raises(AlgomeshError) as raised:
        cluster.run(cluster.launcher.ensure(info))
    exc = raised.value
    assert exc.reason == "LAUNCH_FAILED" and exc.metadata["algorithm"] == "demo/broken"
    assert "runner container exited with code 3" in exc.message and "cannot open model.bin" in exc.message
    name = deployment_name("demo/broken", "1.0.0")
    assert cluster.kube.get("deployments", name)["spec"]["replicas"] == 0  # taken back
    wait_for(lambda: not pods_of(cluster.kube, info, live=False), what="the failed pod to go")
    assert not cluster.launcher.ready("demo/broken", "1.0.0")


def test_a_runtime_without_a_runner_image_is_a_typed_launch_failed(cluster, tmp_path):
    info = cluster.publish(algorithm(tmp_path / "n", "demo/nodeish", "1.0.0", "exports.apply = x => x\n",
                                     runtime="node", entrypoint="index.js"))
    with pytest.raises(AlgomeshError) as raised:
        cluster.run(cluster.launcher.ensure(info))
    assert raised.value.reason == "LAUNCH_FAILED" and "--k8s-runner-image node=IMAGE" in raised.value.message
    assert cluster.kube.get("deployments", deployment_name("demo/nodeish", "1.0.0")) is None


def test_bad_counts_are_refused(cluster, echo, tmp_path):
    with pytest.raises(AlgomeshError) as raised:
        cluster.run(cluster.launcher.scale(echo, -1))
    assert raised.value.reason == "INVALID_INPUT"
    capped = cluster.publish(algorithm(tmp_path / "c", "demo/capped", "1.0.0", ECHO,
                                       extra="[scaling]\nmax_instances = 1\n"))
    with pytest.raises(AlgomeshError) as raised:
        cluster.run(cluster.launcher.scale(capped, 2))
    assert raised.value.reason == "INVALID_INPUT" and "max_instances" in raised.value.message
    with pytest.raises(AlgomeshError) as raised:  # the cluster-wide bound (max_total=8)
        cluster.run(cluster.launcher.scale(echo, 9))
    assert raised.value.reason == "INVALID_INPUT" and "--max-instances" in raised.value.message
    assert cluster.launcher.fits(echo)


def test_stop_all_scales_everything_to_zero_and_a_new_run_cleans_up(cluster, echo):
    launcher, kube = cluster.launcher, cluster.kube
    cluster.run(launcher.ensure(echo))
    cluster.run(launcher.stop_all())
    name = deployment_name("demo/echo", "1.0.0")
    assert kube.get("deployments", name)["spec"]["replicas"] == 0
    assert not launcher.ready("demo/echo", "1.0.0")
    wait_for(lambda: not pods_of(kube, echo, live=False), what="every pod to go", kube=kube)
    assert not [i for i in cluster.store.instances() if i.algorithm == "demo/echo"]  # all withdrew
    with pytest.raises(AlgomeshError) as raised:
        cluster.run(launcher.ensure(echo))
    assert raised.value.reason == "LAUNCH_FAILED"

    # A new run (a restarted control plane) finds a Deployment left with replicas: it goes to 0.
    cluster.run(_scale_directly(cluster, name, 1))
    wait_for(lambda: pods_of(kube, echo), what="a leftover pod")
    fresh = cluster.new_launcher(launcher.settings.registry_address)
    cluster.run(fresh.start())
    assert kube.get("deployments", name)["spec"]["replicas"] == 0
    wait_for(lambda: not pods_of(kube, echo, live=False), what="the leftover pod to go", kube=kube)
    uid = kube.get("deployments", name)["metadata"]["uid"]
    cluster.launcher = fresh
    instances, cold = cluster.run(fresh.ensure(echo))  # it starts instances again, on the same Deployment
    assert cold and cluster.run(cluster.call(instances[0], "again"))["echo"] == "again"
    assert kube.get("deployments", name)["metadata"]["uid"] == uid

    # A run with other settings (a new sidecar image) replaces the Deployment.
    cluster.run(fresh.stop_all())
    other = cluster.new_launcher(launcher.settings.registry_address, sidecar_image=SIDECAR_IMAGE + "2")
    cluster.launcher = other
    instances, cold = cluster.run(other.ensure(echo))
    dep = kube.get("deployments", name)
    assert dep["metadata"]["uid"] != uid
    assert dep["spec"]["template"]["spec"]["containers"][1]["image"] == SIDECAR_IMAGE + "2"
    assert cluster.run(cluster.call(instances[0], "replaced"))["pod"] == instances[0].id


async def _scale_directly(cluster, name: str, replicas: int) -> None:
    await asyncio.to_thread(cluster.launcher._apps.patch_namespaced_deployment_scale, name, NS,
                            {"spec": {"replicas": replicas}})


def test_the_launcher_uses_exactly_what_the_role_allows(cluster):
    """Every request of this module went through the fake's RBAC check with the Role in
    deploy/kubernetes/rbac.yaml; none was refused, and every rule was used."""
    refused = [r for r in cluster.kube.requests if r.code == 403]
    assert not refused, refused
    used = {(r.group, r.resource, r.verb) for r in cluster.kube.requests}
    allowed = {(g, res, verb) for rule in role_rules() for g in rule["apiGroups"] for res in rule["resources"]
               for verb in rule["verbs"]}
    assert used == allowed, (sorted(allowed - used), sorted(used - allowed))


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_the_manifests_agree_with_the_launchers_defaults():
    """deploy/kubernetes/ and KubernetesSettings name the same claim, Service, account and images."""
    from algomesh.sidecar.kubernetes_launcher import KubernetesSettings

    docs = [d for f in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")) if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    defaults = KubernetesSettings()
    claim = kinds[("PersistentVolumeClaim", defaults.artifacts_claim)]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    host, port = defaults.registry_address.split(":")
    mesh = kinds[("Service", host)]
    assert [p["port"] for p in mesh["spec"]["ports"]] == [int(port)]
    cp = kinds[("Deployment", "algomesh")]["spec"]["template"]["spec"]
    [binding] = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"][0]["name"] == cp["serviceAccountName"] and \
        ("ServiceAccount", cp["serviceAccountName"]) in kinds
    args = dict(a.split("=", 1) for a in cp["containers"][0]["args"] if a.startswith("--"))
    assert args["--k8s-sidecar-image"] == defaults.sidecar_image
    assert args["--k8s-runner-image"] == f"python={defaults.runner_images['python']}"
    assert args["--k8s-artifacts-claim"] == defaults.artifacts_claim
    assert args["--k8s-registry-address"].split(".")[0] == host and args["--mesh-port"] == port
    mounts = {m["name"]: m["mountPath"] for m in cp["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in cp["volumes"]}
    artifacts = next(n for n, c in volumes.items() if c == defaults.artifacts_claim)
    assert mounts[artifacts] == args["--data-dir"] + "/artifacts"  # the path algorithm pods mount it at
    assert int(args["--max-instances"]) == defaults.max_total


@pytest.mark.parametrize("files, flags, says", [
    ("demo/other@1.0.0", [], "the mesh certificate names demo/other@1.0.0, not demo/echo@1.0.0"),
    (None, [], "cannot read the mesh certificate"),
    ("demo/echo@1.0.0", ["--insecure"], "not allowed with argument --cert-dir"),
])
def test_a_sidecar_refuses_a_cert_dir_that_is_not_its_own(tmp_path, files, flags, says):
    import subprocess

    if files:
        creds = MeshCA().issue(files)
        for name, data in (("ca.crt", creds.ca), ("tls.crt", creds.cert), ("tls.key", creds.key)):
            (tmp_path / name).write_bytes(data)
    r = subprocess.run([sys.executable, "-m", "algomesh.sidecar", "--instance-id", "p", "--algorithm", "demo/echo",
                        "--version", "1.0.0", "--runtime", "python", "--entrypoint", "main.py", "--path", str(tmp_path),
                        "--registry", "127.0.0.1:9", "--socket-dir", str(tmp_path), "--external-runner",
                        "--cert-dir", str(tmp_path), *flags], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and says in r.stderr, r.stderr
