"""The Kubernetes launcher: instances of a version are the pods of one Deployment.

``algomesh up --launcher kubernetes`` runs the control plane in a cluster (deploy/kubernetes/)
and this launcher, with the official Python client, keeps one Deployment per algorithm
version in its namespace and scales it. It never changes a Deployment's pod template
after creating it in a run; it changes ``replicas`` (the ``scale`` subresource) and, to
choose which pod goes on a scale-down, one pod annotation.

    Deployment  am-<slug of owner/name@version>-<hash>          (DNS-1123, at most 42 chars)
      labels    app.kubernetes.io/managed-by=algomesh, app.kubernetes.io/component=algorithm,
                algomesh.dev/algorithm=<owner.name>, algomesh.dev/version=<version>
                (label-safe forms, for kubectl -l) and algomesh.dev/deployment=<its name>
                (the selector: the only one of them unique per version)
      annotations algomesh.dev/algorithm, algomesh.dev/version (exact), algomesh.dev/spec
                (a hash of the spec this launcher wrote)
    pod         runner container   the runtime's runner image (``runner_images``), serving
                                   Runner on /run/algomesh/<pod>.runner.sock
                sidecar container  ``python -m algomesh.sidecar`` with the local launcher's
                                   arguments plus --external-runner, --host $(POD_IP) and
                                   --cert-dir /etc/algomesh/mesh (or --insecure)
                volumes            sockets: emptyDir shared by both at /run/algomesh
                                   mesh-cert: the version's Secret, in the sidecar only
                                   artifact: the PersistentVolumeClaim holding the control
                                   plane's artifact folder (ReadWriteMany), mounted read-only
                                   with subPath <digest> at the control plane's own path, so
                                   a pod sees its version's files and nothing else
    Secret      am-…-<hash>-mesh, type kubernetes.io/tls: ca.crt, tls.crt, tls.key, the
                version's mesh certificate (``issue(owner/name@version)``), written on the
                version's first start in a run and replaced as it ages

The instance id is the pod's name (the downward API's ``metadata.name``), and an instance is
ready when its sidecar registers with the registry, as with the local launcher. The
launcher lists its pods (``app.kubernetes.io/managed-by=algomesh``) every ``poll`` seconds
(faster while a start waits) to see starts fail, pods vanish and which pod is which.

- ``ensure``/``prestart``/``add``/``scale`` raise ``replicas`` and wait for the new pods'
  sidecars to register. A new pod whose container exits, or that cannot pull its image,
  or nothing registering within ``launch_timeout`` is a typed ``LAUNCH_FAILED`` (with the
  container's exit code and log tail, ``terminationMessagePolicy: FallbackToLogsOnError``),
  and the replicas it added are taken back.
- ``stop(pod)`` sets ``controller.kubernetes.io/pod-deletion-cost`` to the lowest value on
  that pod, then lowers ``replicas`` by one: the ReplicaSet controller deletes the pod with
  the lowest cost. This is Kubernetes' documented hint, and it ranks after readiness: a pod
  of the same version that is not Ready yet (still starting) is deleted before it. So a
  stop first waits for the version's starts in flight; what is left is a pod not Ready for
  another reason (a crash-looping container: that one goes instead, and the count is still
  right) or something else scaling the Deployment (kubectl). The kubelet then runs the runner's preStop hook (a short sleep, so
  the sidecar drains its calls first) and SIGTERMs both containers; the sidecar withdraws
  from the registry.
- ``fits``: the sum of the replicas this launcher asked for stays under ``max_total`` (the
  cluster-wide bound on instances, ``--max-instances``). It does not read node
  capacity: pods that do not fit stay Pending (unschedulable), which a start reports.
- ``start()`` (once, at control plane start): Deployments left by a previous run are scaled
  to 0 — their instances hold certificates from a mesh CA that is gone, and the registry
  forgot them.
- ``stop_all``: every Deployment this launcher manages goes to 0 replicas; it waits (at most
  the grace period) for the pods to withdraw. The Deployments and Secrets stay, at 0.
- ``rotate(every)``: the mesh certificate in a version's Secret is replaced once it is
  ``every / 2`` old, and a pod older than ``every / 2`` is replaced (a successor first, then
  ``stop``), so no pod holds a certificate older than ``every``.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from opentelemetry import trace as otel

from algomesh._errors import AlgomeshError, error
from algomesh.registry.artifacts import ArtifactStore
from algomesh.registry.manifest import MAX_INSTANCES
from algomesh.registry.service import Registry
from algomesh.v1 import registry_pb2

from .cache import ENV_CACHE_MB, cache_mb as result_cache_mb
from .launchers import Running, Starts
from .meshtls import MeshCredentials
from .runtimes import RunnerSpec, runner_command, runners_root

log = logging.getLogger("algomesh.launcher.kubernetes")

MANAGED = {"app.kubernetes.io/managed-by": "algomesh"}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=algomesh"
ALGORITHM_KEY = "algomesh.dev/algorithm"
VERSION_KEY = "algomesh.dev/version"
DEPLOYMENT_KEY = "algomesh.dev/deployment"
SPEC_KEY = "algomesh.dev/spec"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
LOWEST_COST = str(-2**31)           # int32 minimum: deleted first among equally ready pods
SOCKET_DIR = "/run/algomesh"         # the emptyDir both containers share
CERT_DIR = "/etc/algomesh/mesh"      # the Secret, in the sidecar container only
RUNNER_ROOT = "/opt/algomesh/runners"  # where runner images keep runners/<language>/
POD_UID = 10001                      # the user in deploy/Dockerfile.sidecar and .runner-python
PRESTOP_SECONDS = 5                  # the runner outlives the sidecar's drain (2 s grace + deregistering)
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# Waiting reasons after which a container will not start by itself.
STUCK = ("ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
         "CreateContainerError", "CrashLoopBackOff", "RunContainerError")


@dataclass(frozen=True)
class KubernetesSettings:
    """Where and how instances run; parsed once from ``algomesh up``'s flags."""
    namespace: str = "algomesh"
    registry_address: str = "algomesh-mesh:7702"   # what pods dial: the control plane's mesh Service
    sidecar_image: str = "algomesh/sidecar:0.1.0"
    runner_images: Mapping[str, str] = field(default_factory=lambda: {"python": "algomesh/runner-python:0.1.0"})
    artifacts_claim: str = "algomesh-artifacts"    # a ReadWriteMany PVC: the control plane's artifact folder
    service_account: str = ""                      # the pods' (no API token is mounted either way)
    image_pull_secrets: tuple[str, ...] = ()
    max_total: int = MAX_INSTANCES * 4             # instances of all versions together, cluster-wide
    termination_grace: int = 15                    # seconds a stopping pod gets before SIGKILL
    poll: float = 1.0                              # seconds between pod lists (0.25 while a start waits)


def deployment_name(name: str, version: str) -> str:
    """A DNS-1123 label of at most 42 characters, unique per version (its hash), so pod
    names (``<deployment>-<10>-<5>``) keep it whole within 63."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{name}-{version}".lower()).strip("-")[:28].strip("-")
    digest = hashlib.sha256(f"{name}@{version}".encode()).hexdigest()[:8]
    return f"am-{slug}-{digest}" if slug else f"am-{digest}"


def label_value(text: str) -> str:
    """A readable label value (at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9_.-]", ".", text)[:63].strip("_.-")


@dataclass
class _Version:
    info: registry_pb2.VersionInfo
    deployment: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False          # its Secret and Deployment are written in this run
    replicas: int = 0            # what this launcher last set
    cert_issued: float = 0.0     # monotonic time its Secret's certificate was issued
    reasons: dict[str, str] = field(default_factory=dict)  # pod -> why it was started
    claimed: set[str] = field(default_factory=set)         # pods a waiting start has taken
    growing: int = 0             # starts waiting for their pods (a stop waits for them)

    @property
    def secret(self) -> str:
        return f"{self.deployment}-mesh"


@dataclass(frozen=True)
class _Pod:
    name: str
    algorithm: str
    version: str
    created: float               # wall clock
    deleting: bool
    failure: str                 # why it cannot start, "" if nothing says so
    pending_reason: str          # the scheduler's word while unscheduled


class KubernetesLauncher(Starts):
    name = "kubernetes"

    def __init__(self, *, registry: Registry, artifacts: ArtifactStore, api: Any, settings: KubernetesSettings,
                 launch_timeout: float = 300.0, max_payload: int = 10 * 1024 * 1024,
                 max_stream: int | None = None, failing: Callable[[str], bool] = lambda _id: False,
                 issue: Callable[[str], MeshCredentials] | None = None,
                 tracer: otel.Tracer | None = None,
                 on_start: Callable[[registry_pb2.VersionInfo], None] | None = None,
                 cache_mb: float | None = None) -> None:
        from kubernetes import client  # the optional extra: algomesh[kubernetes]

        # a deterministic version's result cache, per pod (None: $ALGOMESH_CACHE_MB, else 64)
        self.cache_mb = result_cache_mb(os.environ.get(ENV_CACHE_MB) if cache_mb is None else cache_mb)

        self.registry = registry
        self.artifacts = artifacts
        self.settings = settings
        self.launch_timeout = launch_timeout
        self.max_payload = max_payload
        self.max_stream = max_stream  # a streamed call's bytes (None: the sidecar's default)
        self.max_total = settings.max_total
        super().__init__(tracer=tracer, on_start=on_start)
        self._api = api
        self._apps = client.AppsV1Api(api)
        self._core = client.CoreV1Api(api)
        self._failing = failing
        self._issue = issue
        self._versions: dict[tuple[str, str], _Version] = {}
        self._pods: dict[str, _Pod] = {}                       # the last list, by pod name
        self._instances: dict[str, registry_pb2.Instance] = {}  # registered, by pod name
        self._withdrawn: set[str] = set()                      # registered once, then withdrew
        self._waiting = 0                                      # starts waiting: list faster
        self._wake = asyncio.Event()
        self._poller: asyncio.Future | None = None
        self._started: asyncio.Future | None = None
        registry.on_instance(self._on_instance)

    # registry events and the pod list ------------------------------------------------------

    def _on_instance(self, event: str, instance: registry_pb2.Instance) -> None:
        if event == "register":
            if (instance.algorithm, instance.version) in self._versions:
                self._instances[instance.id] = instance
                self._withdrawn.discard(instance.id)
        elif self._instances.pop(instance.id, None) is not None:
            self._withdrawn.add(instance.id)
        self._notify()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def _changed(self, timeout: float) -> None:
        wake = self._wake
        try:
            await asyncio.wait_for(wake.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            pass

    async def start(self) -> None:
        """Scale Deployments a previous run left to 0 and begin watching pods. Idempotent;
        every other method calls it first."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start_once())
        await asyncio.shield(self._started)

    async def _start_once(self) -> None:
        ns = self.settings.namespace
        deployments = await self._call("list deployments", self._apps.list_namespaced_deployment, ns,
                                       label_selector=MANAGED_SELECTOR)
        for d in deployments.items:
            if d.spec.replicas:
                log.info("scaling %s (left by a previous run, %d replicas) to 0", d.metadata.name, d.spec.replicas)
                try:
                    await self._call("scale", self._apps.patch_namespaced_deployment_scale, d.metadata.name, ns,
                                     {"spec": {"replicas": 0}}, expect=(404,))
                except _ApiError:  # deleted meanwhile
                    pass
        await self._list_pods()
        self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.25 if self._waiting else self.settings.poll)
            try:
                await self._list_pods()
            except AlgomeshError as exc:
                log.warning("could not list pods: %s", exc)

    async def _list_pods(self) -> None:
        pods = await self._call("list pods", self._core.list_namespaced_pod, self.settings.namespace,
                                label_selector=MANAGED_SELECTOR)
        seen: dict[str, _Pod] = {}
        for p in pods.items:
            ann = p.metadata.annotations or {}
            if ALGORITHM_KEY not in ann or VERSION_KEY not in ann:
                continue
            seen[p.metadata.name] = _Pod(p.metadata.name, ann[ALGORITHM_KEY], ann[VERSION_KEY],
                                         _timestamp(p.metadata.creation_timestamp),
                                         p.metadata.deletion_timestamp is not None, _failure(p), _unscheduled(p))
        gone = set(self._pods) - set(seen)
        self._pods = seen
        for name in gone:  # a pod that vanished without withdrawing (its node died, kubectl delete --force)
            if name in self._instances:
                log.warning("pod %s is gone without deregistering; deregistering it", name)
                try:
                    await self.registry.deregister_instance(name)
                except AlgomeshError as exc:
                    log.warning("could not deregister instance %s: %s", name, exc)
            for v in self._versions.values():
                v.reasons.pop(name, None)
                v.claimed.discard(name)
            self._withdrawn.discard(name)
        self._notify()

    # the Kubernetes API, in worker threads (the client is synchronous) ---------------------------

    async def _call(self, what: str, fn: Callable, *args: Any, expect: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """One API call in a worker thread (the client is synchronous). Its failure is a
        typed LAUNCH_FAILED (the one place that maps the client's exceptions), except the
        statuses in ``expect`` (404, 409), which the caller handles (``_ApiError``)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            status = _status(exc)
            if exc.status in expect:
                raise _ApiError(exc.status, status.get("reason", ""), status.get("message", "")) from None
            hint = {401: "the control plane's credentials were refused",
                    403: "the control plane's service account may not do this (deploy/kubernetes/rbac.yaml)",
                    422: "the cluster refused the object (a bad image name or setting?)"}.get(exc.status, "")
            raise error("LAUNCH_FAILED", f"Kubernetes: {what} failed: {exc.status} "
                        f"{status.get('message') or exc.reason}" + (f"; {hint}" if hint else "")) from None
        except Exception as exc:  # urllib3 / connection errors
            raise error("LAUNCH_FAILED", f"Kubernetes: {what} failed: cannot reach the API server "
                        f"({type(exc).__name__}: {exc})") from None

    # what a version's objects are ---------------------------------------------------------------

    def _version(self, info: registry_pb2.VersionInfo) -> _Version:
        m = info.manifest
        key = (m.name, m.version)
        v = self._versions.get(key)
        if v is None:
            v = self._versions[key] = _Version(info, deployment_name(m.name, m.version))
        return v

    def runner_command(self, info: registry_pb2.VersionInfo, pod_socket: str) -> list[str]:
        """The runner container's command: the local runner command for this runtime, with
        the interpreter as the image's ``python`` and runners/ at RUNNER_ROOT."""
        m = info.manifest
        spec = RunnerSpec(socket=pod_socket, path=str(self.artifacts.path(info.digest)), entrypoint=m.entrypoint,
                          concurrency=max(1, m.scaling.concurrency))
        root = str(runners_root())
        out = []
        for word in runner_command(m.runtime, spec):
            word = "python" if word == sys.executable else word
            out.append(RUNNER_ROOT + word[len(root):] if word.startswith(root + "/") else word)
        return out

    def deployment_body(self, v: _Version) -> dict:
        """The Deployment (replicas 0) this launcher writes for a version; see the module
        docstring and docs/kubernetes.md."""
        info, s = v.info, self.settings
        m = info.manifest
        image = s.runner_images.get(m.runtime)
        if not image:
            raise error("LAUNCH_FAILED", f"no runner image for the {m.runtime} runtime on this cluster "
                        f"(algomesh up --k8s-runner-image {m.runtime}=IMAGE)", algorithm=m.name, version=m.version)
        path = str(self.artifacts.path(info.digest))
        try:
            sub_path = str(Path(path).relative_to(self.artifacts.root))
        except ValueError:
            raise error("LAUNCH_FAILED", f"the artifact {path} is outside {self.artifacts.root}") from None
        runner_sock = f"{SOCKET_DIR}/$(POD_NAME).runner.sock"
        sidecar_args = [
            "--instance-id", "$(POD_NAME)", "--algorithm", m.name, "--version", m.version,
            "--runtime", m.runtime, "--entrypoint", m.entrypoint, "--path", path,
            "--registry", s.registry_address, "--socket-dir", SOCKET_DIR,
            "--concurrency", str(max(1, m.scaling.concurrency)),
            "--max-in-flight", str(max(m.scaling.max_in_flight, m.scaling.concurrency, 1)),
            "--max-payload", str(self.max_payload),
            *(("--max-stream", str(self.max_stream)) if self.max_stream is not None else ()),
            "--callability", m.permissions.callability or "public",
            *(arg for glob in m.permissions.can_call for arg in ("--can-call", glob)),
            *(("--deterministic", "--cache-mb", str(self.cache_mb)) if m.deterministic else ()),
            "--host", "$(POD_IP)", "--external-runner",
            *(("--cert-dir", CERT_DIR) if self._issue is not None else ("--insecure",)),
        ]
        downward = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
        sockets = {"name": "sockets", "mountPath": SOCKET_DIR}
        artifact = {"name": "artifact", "mountPath": path, "subPath": sub_path, "readOnly": True}
        runner = {
            "name": "runner", "image": image,
            "command": self.runner_command(info, runner_sock),
            "workingDir": path,
            "env": [*downward,
                    {"name": "ALGOMESH_RUNNER_SOCKET", "value": runner_sock},
                    {"name": "ALGOMESH_PATH", "value": path},
                    {"name": "ALGOMESH_ENTRYPOINT", "value": m.entrypoint},
                    {"name": "ALGOMESH_CONCURRENCY", "value": str(max(1, m.scaling.concurrency))},
                    {"name": "ALGOMESH_ADDRESS", "value": f"unix://{SOCKET_DIR}/$(POD_NAME).out.sock"},
                    {"name": "ALGOMESH_ALGORITHM", "value": m.name},
                    {"name": "ALGOMESH_VERSION", "value": m.version},
                    {"name": "ALGOMESH_RUNNERS", "value": RUNNER_ROOT}],
            "volumeMounts": [sockets, artifact],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
            "securityContext": CONTAINER_SECURITY,
        }
        sidecar = {
            "name": "sidecar", "image": s.sidecar_image,
            "command": ["python", "-m", "algomesh.sidecar"], "args": sidecar_args,
            "env": downward,
            "volumeMounts": [sockets] + ([{"name": "mesh-cert", "mountPath": CERT_DIR, "readOnly": True}]
                                         if self._issue is not None else []),
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": CONTAINER_SECURITY,
        }
        volumes = [{"name": "sockets", "emptyDir": {}},
                   {"name": "artifact", "persistentVolumeClaim": {"claimName": s.artifacts_claim, "readOnly": True}}]
        if self._issue is not None:
            volumes.append({"name": "mesh-cert", "secret": {"secretName": v.secret, "defaultMode": 0o440}})
        labels = {**MANAGED, "app.kubernetes.io/component": "algorithm", ALGORITHM_KEY: label_value(m.name),
                  VERSION_KEY: label_value(m.version), DEPLOYMENT_KEY: v.deployment}
        pod_spec: dict[str, Any] = {
            "containers": [runner, sidecar],   # in order: the runner serves before the sidecar connects
            "volumes": volumes,
            # the images' user; fsGroup makes the Secret (0440) and the emptyDir theirs
            "securityContext": {"runAsNonRoot": True, "runAsUser": POD_UID, "runAsGroup": POD_UID,
                                "fsGroup": POD_UID, "seccompProfile": {"type": "RuntimeDefault"}},
            "automountServiceAccountToken": False,  # an algorithm never holds cluster credentials
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": s.termination_grace,
        }
        if s.service_account:
            pod_spec["serviceAccountName"] = s.service_account
        if s.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
        annotations = {ALGORITHM_KEY: m.name, VERSION_KEY: m.version}
        body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": v.deployment, "labels": labels, "annotations": dict(annotations)},
            "spec": {"replicas": 0, "selector": {"matchLabels": {**MANAGED, DEPLOYMENT_KEY: v.deployment}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}},
        }
        body["metadata"]["annotations"][SPEC_KEY] = hashlib.sha256(
            json.dumps(body["spec"], sort_keys=True).encode()).hexdigest()[:16]
        return body

    def secret_body(self, v: _Version, creds: MeshCredentials) -> dict:
        m = v.info.manifest
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": v.secret, "labels": {**MANAGED, DEPLOYMENT_KEY: v.deployment},
                             "annotations": {ALGORITHM_KEY: m.name, VERSION_KEY: m.version}},
                "data": {k: base64.b64encode(b).decode() for k, b in
                         (("ca.crt", creds.ca), ("tls.crt", creds.cert), ("tls.key", creds.key))}}

    async def _write_secret(self, v: _Version) -> None:
        m = v.info.manifest
        creds = self._issue(f"{m.name}@{m.version}")
        body = self.secret_body(v, creds)
        ns = self.settings.namespace
        try:
            await self._call("create secret", self._core.create_namespaced_secret, ns, body, expect=(409,))
        except _ApiError:  # a previous run's: replace it
            await self._call("replace secret", self._core.replace_namespaced_secret, v.secret, ns, body)
        v.cert_issued = time.monotonic()

    async def _prepare(self, v: _Version) -> None:
        """The version's Secret and Deployment, written once per run (under ``v.lock``)."""
        if v.ready:
            return
        ns = self.settings.namespace
        body = self.deployment_body(v)
        if self._issue is not None:
            await self._write_secret(v)
        try:
            current = await self._call("read deployment", self._apps.read_namespaced_deployment, v.deployment, ns,
                                       expect=(404,))
        except _ApiError:
            current = None
        if current is not None and (current.metadata.annotations or {}).get(SPEC_KEY) == \
                body["metadata"]["annotations"][SPEC_KEY]:
            v.replicas = current.spec.replicas or 0
        else:
            if current is not None:  # written by another run with other settings: replace it
                log.info("replacing deployment %s (its spec changed)", v.deployment)
                try:
                    await self._call("delete deployment", self._apps.delete_namespaced_deployment, v.deployment, ns,
                                     propagation_policy="Background", expect=(404,))
                except _ApiError:
                    pass
            for attempt in range(20):
                try:
                    await self._call("create deployment", self._apps.create_namespaced_deployment, ns, body,
                                     expect=(409,))
                    break
                except _ApiError as exc:
                    if attempt == 19:
                        raise exc.typed("create deployment") from None
                    await asyncio.sleep(0.25)  # the old one is still being deleted
            v.replicas = 0
        v.ready = True

    async def _set_replicas(self, v: _Version, count: int) -> None:
        try:
            await self._call("scale", self._apps.patch_namespaced_deployment_scale, v.deployment,
                             self.settings.namespace, {"spec": {"replicas": count}}, expect=(404,))
        except _ApiError as exc:  # deleted under us (kubectl): written again on the next start
            v.ready = False
            raise exc.typed("scale") from None
        v.replicas = count

    # starting ----------------------------------------------------------------------------------

    def ready(self, name: str, version: str) -> list[registry_pb2.Instance]:
        return [i for pod, i in self._instances.items()
                if i.algorithm == name and i.version == version and not self._failing(pod)
                and not (pod in self._pods and self._pods[pod].deleting)]

    async def _launch(self, info: registry_pb2.VersionInfo, reason: str) -> registry_pb2.Instance:
        [instance] = await self._grow(info, 1, reason)
        return instance

    async def _grow(self, info: registry_pb2.VersionInfo, count: int, reason: str,
                    target: int | None = None) -> list[registry_pb2.Instance]:
        """Add ``count`` pods (or set ``target`` replicas, ``count`` of them new) and wait
        until ``count`` new pods registered."""
        if self._stopping:
            raise error("LAUNCH_FAILED", "the mesh is shutting down")
        await self.start()
        m = info.manifest
        v = self._version(info)
        async with v.lock:
            await self._prepare(v)
            await self._list_pods()
            before = {p.name for p in self._pods.values() if (p.algorithm, p.version) == (m.name, m.version)}
            before |= {pod for pod, i in self._instances.items() if (i.algorithm, i.version) == (m.name, m.version)}
            previous = v.replicas
            await self._set_replicas(v, target if target is not None else v.replicas + count)
        log.info("%s %s %s: %s replicas %d -> %d", reason, m.name, m.version, v.deployment, previous, v.replicas)
        t0 = time.monotonic()
        deadline = t0 + self.launch_timeout
        mine: list[str] = []
        self._waiting += 1
        v.growing += 1
        try:
            while len(mine) < count:
                new = [p for p in self._pods.values() if (p.algorithm, p.version) == (m.name, m.version)
                       and p.name not in before and not p.deleting and p.name not in v.claimed]
                for p in new:
                    v.reasons.setdefault(p.name, reason)
                registered = sorted(n for n, i in self._instances.items()
                                    if (i.algorithm, i.version) == (m.name, m.version)
                                    and n not in before and n not in v.claimed)
                for pod in registered[:count - len(mine)]:
                    v.claimed.add(pod)
                    v.reasons.setdefault(pod, reason)
                    mine.append(pod)
                if len(mine) >= count:
                    break
                failed = next((p for p in new if p.failure and p.name not in self._instances), None)
                if failed is not None:
                    await self._give_back(v, count - len(mine), [failed.name])
                    raise error("LAUNCH_FAILED", f"{m.name} {m.version} could not start: pod {failed.name}: "
                                f"{failed.failure}", algorithm=m.name, version=m.version)
                if time.monotonic() >= deadline:
                    why = next((p.pending_reason for p in new if p.pending_reason), "")
                    await self._give_back(v, count - len(mine), [p.name for p in new])
                    raise error("LAUNCH_FAILED", f"{m.name} {m.version} did not start within "
                                f"{self.launch_timeout:.0f}s" + (f": {why}" if why else "")
                                + f" (kubectl -n {self.settings.namespace} describe deployment {v.deployment})",
                                algorithm=m.name, version=m.version)
                if self._stopping:
                    raise error("LAUNCH_FAILED", "the mesh is shutting down")
                await self._changed(min(1.0, deadline - time.monotonic()))
        finally:
            self._waiting -= 1
            v.growing -= 1
            for pod in mine:
                v.claimed.discard(pod)
            self._notify()
        log.info("%s %s ready in %.2fs: %s", m.name, m.version, time.monotonic() - t0, ", ".join(mine))
        try:
            await self._list_pods()  # so running() shows them at once
        except AlgomeshError as exc:
            log.warning("could not list pods: %s", exc)
        return [self._instances[p] for p in mine if p in self._instances]

    async def _give_back(self, v: _Version, count: int, pods: list[str]) -> None:
        """Undo a failed start: the failed pods go first, then replicas come down."""
        for pod in pods:
            await self._mark_for_deletion(pod)
        async with v.lock:
            try:
                await self._set_replicas(v, max(0, v.replicas - count))
            except AlgomeshError as exc:
                log.error("could not scale %s back down: %s", v.deployment, exc)

    async def _mark_for_deletion(self, pod: str) -> bool:
        try:
            await self._call("annotate pod", self._core.patch_namespaced_pod, pod, self.settings.namespace,
                             {"metadata": {"annotations": {DELETION_COST: LOWEST_COST}}}, expect=(404,))
            return True
        except _ApiError:  # already gone
            return False
        except AlgomeshError as exc:
            log.warning("could not mark pod %s for deletion: %s", pod, exc)
            return False

    async def scale(self, info: registry_pb2.VersionInfo, count: int) -> list[registry_pb2.Instance]:
        """Run exactly ``count`` instances of this version. Returns the passing instances."""
        m = info.manifest
        limit = m.scaling.max_instances
        if count < 0:
            raise error("INVALID_INPUT", "an instance count is at least 0", algorithm=m.name, version=m.version)
        if limit and count > limit:
            raise error("INVALID_INPUT", f"{m.name} {m.version} allows at most {limit} instances "
                        "(scaling.max_instances in algomesh.toml)", algorithm=m.name, version=m.version)
        if count > MAX_INSTANCES:
            raise error("INVALID_INPUT", f"at most {MAX_INSTANCES} instances of one version run on this mesh",
                        algorithm=m.name, version=m.version)
        v = self._version(info)
        if count - v.replicas > self.max_total - self._total():
            raise error("INVALID_INPUT", f"the cluster runs at most {self.max_total} instances "
                        f"(--max-instances); {self._total()} run", algorithm=m.name, version=m.version)
        await self.start()
        async with v.lock:
            await self._prepare(v)
            live = [p for p in self._pods.values() if (p.algorithm, p.version) == (m.name, m.version)
                    and not p.deleting]
            grow = count - max(len(live), v.replicas)
        if grow > 0:
            await self._grow(info, grow, "scale", target=count)
        else:
            async with v.lock:
                await self._set_replicas(v, count)
        return self.ready(m.name, m.version)

    # stopping ----------------------------------------------------------------------------------

    async def stop(self, instance_id: str) -> None:
        """Remove that pod: lowest deletion cost, then one replica less. Unknown ids (already
        gone) are a no-op. Waits until it withdrew or is gone (at most the grace period)."""
        await self.start()
        pod = self._pods.get(instance_id)
        if pod is None:
            await self._list_pods()
            pod = self._pods.get(instance_id)
        if pod is None or pod.deleting:
            return
        v = self._versions.get((pod.algorithm, pod.version))
        if v is None:
            return
        # The ReplicaSet deletes a pod that is not Ready before any cheaper one: let the
        # version's starts in flight finish first, so that the pod removed is this one.
        deadline = time.monotonic() + self.launch_timeout
        while v.growing and time.monotonic() < deadline:
            await self._changed(deadline - time.monotonic())
        async with v.lock:
            if not await self._mark_for_deletion(instance_id):
                return
            await self._set_replicas(v, max(0, v.replicas - 1))
        log.info("stopping instance %s of %s %s", instance_id, pod.algorithm, pod.version)
        deadline = time.monotonic() + self.settings.termination_grace + 5
        while time.monotonic() < deadline and (instance_id in self._instances or instance_id in self._pods):
            await self._changed(deadline - time.monotonic())

    async def stop_all(self) -> None:
        self._stopping = True
        if self._started is None:
            return
        try:
            await self._started
        except AlgomeshError:
            return
        for v in self._versions.values():
            if v.ready and v.replicas:
                try:
                    await self._set_replicas(v, 0)
                except AlgomeshError as exc:
                    log.error("could not scale %s to 0: %s", v.deployment, exc)
        deadline = time.monotonic() + self.settings.termination_grace + 5
        while time.monotonic() < deadline and self._instances:
            try:
                await self._list_pods()
            except AlgomeshError:
                break
            await self._changed(min(0.5, deadline - time.monotonic()))
        if self._poller is not None:
            self._poller.cancel()
        await asyncio.to_thread(self._api.close)

    # what runs -------------------------------------------------------------------------------

    def _total(self) -> int:
        return sum(v.replicas for v in self._versions.values())

    def fits(self, info: registry_pb2.VersionInfo) -> bool:
        """Room for one more instance: under ``max_total`` replicas cluster-wide (node
        capacity is the cluster scheduler's: a pod that does not fit stays Pending)."""
        return self._total() < self.max_total

    def running(self) -> list[Running]:
        now, out = time.time(), []
        for pod in list(self._pods.values()):
            v = self._versions.get((pod.algorithm, pod.version))
            if v is None:
                continue
            inst = self._instances.get(pod.name)
            if self._stopping or pod.deleting or pod.name in self._withdrawn:
                state = "stopping"
            else:
                state = "warm" if inst is not None else "starting"
            out.append(Running(pod.name, pod.algorithm, pod.version, state, max(0.0, now - pod.created),
                               inst.metrics_address if inst is not None else "", v.reasons.get(pod.name, "")))
        for name, inst in list(self._instances.items()):  # registered before the pod list caught up
            if name not in self._pods:
                v = self._versions.get((inst.algorithm, inst.version))
                out.append(Running(name, inst.algorithm, inst.version, "stopping" if self._stopping else "warm",
                                   max(0.0, now - inst.started_at), inst.metrics_address,
                                   v.reasons.get(name, "") if v else ""))
        return out

    def states(self) -> list[tuple[str, str, str, str, float]]:
        """``(instance id, name, version, state, seconds since start)``, as the dashboard reads."""
        return [(r.id, r.name, r.version, r.state, r.age) for r in self.running()]

    # certificate rotation ------------------------------------------------------------------------

    async def rotate(self, every: float) -> None:
        """Keep every pod's certificate younger than ``every``: a version's Secret gets a new
        one when it is ``every / 2`` old, and pods older than ``every / 2`` are replaced
        (successor first). Runs until cancelled."""
        if self._issue is None:
            return
        half = every / 2
        while True:
            await asyncio.sleep(max(0.5, min(5.0, half / 8)))
            if self._stopping:
                return
            for v in list(self._versions.values()):
                if not v.ready:
                    continue
                if time.monotonic() - v.cert_issued > half:
                    async with v.lock:
                        try:
                            await self._write_secret(v)
                        except AlgomeshError as exc:
                            log.error("could not renew the certificate of %s: %s", v.deployment, exc)
                            continue
                m = v.info.manifest
                await self.replace([(r.id, v.info) for r in self.running()
                                    if (r.name, r.version) == (m.name, m.version)
                                    and r.state == "warm" and r.age > half])


class _ApiError(Exception):
    """A 404 or 409 from the API server, for the caller to handle."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def typed(self, what: str) -> AlgomeshError:
        return error("LAUNCH_FAILED", f"Kubernetes: {what} failed: {self.status} {self.reason}: {self.message}")


def _status(exc: Any) -> dict:
    try:
        return json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return time.time()


def _failure(pod: Any) -> str:
    """Why a pod's containers cannot start ("" if nothing says so)."""
    status = pod.status
    if status is None:
        return ""
    if status.phase == "Failed":
        return f"the pod failed: {status.reason or ''} {status.message or ''}".strip()
    for cs in status.container_statuses or []:
        term = (cs.state.terminated if cs.state else None) or (cs.last_state.terminated if cs.last_state else None)
        if term is not None:
            text = f"its {cs.name} container exited with code {term.exit_code}"
            if term.reason and term.reason not in ("Error", "Completed"):
                text += f" ({term.reason})"
            return text + (f": {term.message.strip()}" if term.message and term.message.strip() else "")
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in STUCK:
            return f"its {cs.name} container is waiting: {waiting.reason}: {waiting.message or ''}".strip()
    return ""


def _unscheduled(pod: Any) -> str:
    for c in (pod.status.conditions if pod.status else None) or []:
        if c.type == "PodScheduled" and c.status == "False":
            return f"{c.reason}: {c.message}"
    return ""


def make_kubernetes_launcher(*, registry: Registry, registry_address: str, artifacts: ArtifactStore,
                             launch_timeout: float = 300.0, max_payload: int = 10 * 1024 * 1024,
                             max_stream: int | None = None, failing: Callable[[str], bool] = lambda _id: False,
                             issue: Callable[[str], MeshCredentials] | None = None,
                             tracer: otel.Tracer | None = None,
                             on_start: Callable[[registry_pb2.VersionInfo], None] | None = None,
                             namespace: str | None = None, sidecar_image: str = KubernetesSettings.sidecar_image,
                             runner_images: Mapping[str, str] | None = None,
                             artifacts_claim: str = KubernetesSettings.artifacts_claim,
                             service_account: str = "", image_pull_secrets: tuple[str, ...] = (),
                             max_total: int = KubernetesSettings.max_total,
                             api_url: str | None = None, kubeconfig: str | None = None,
                             context: str | None = None, cache_mb: float | None = None) -> KubernetesLauncher:
    """The launcher ``algomesh up --launcher kubernetes`` runs. Credentials: ``api_url``
    (no authentication: tests, kubectl proxy), else in-cluster (the pod's service account)
    when $KUBERNETES_SERVICE_HOST is set, else ``kubeconfig``/``context`` (kubectl's). The
    namespace defaults to the pod's own (in-cluster), else "algomesh"."""
    from kubernetes import client, config

    in_cluster_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        if api_url:
            cfg = client.Configuration(host=api_url)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            cfg = client.Configuration.get_default_copy()
        else:
            cfg = client.Configuration()
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    except config.ConfigException as exc:
        raise error("INVALID_INPUT", f"no Kubernetes credentials: {exc} (run in a pod with a service account, "
                    "or pass --k8s-kubeconfig)") from None
    if namespace is None:
        namespace = in_cluster_ns.read_text().strip() if in_cluster_ns.exists() else "algomesh"
    images = dict(KubernetesSettings().runner_images)
    images.update(runner_images or {})
    settings = KubernetesSettings(namespace=namespace, registry_address=registry_address,
                                  sidecar_image=sidecar_image, runner_images=images, artifacts_claim=artifacts_claim,
                                  service_account=service_account, image_pull_secrets=tuple(image_pull_secrets),
                                  max_total=max_total)
    return KubernetesLauncher(registry=registry, artifacts=artifacts, api=client.ApiClient(cfg), settings=settings,
                              launch_timeout=launch_timeout, max_payload=max_payload, max_stream=max_stream,
                              failing=failing, issue=issue,
                              tracer=tracer, on_start=on_start, cache_mb=cache_mb)
