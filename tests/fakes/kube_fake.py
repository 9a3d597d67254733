"""A FAKE of the Kubernetes API server and of one kubelet, for tests only. This is NOT Kubernetes.

No cluster can run where algomesh's tests run, so this module serves a transport-level
stand-in for exactly the API calls ``algomesh.sidecar.kubernetes_launcher`` makes: a real
HTTP server on 127.0.0.1 that the official Python client (``kubernetes``) talks to as it
talks to a kube-apiserver reached without authentication, plus the controllers and the
kubelet behind it, so that scaling a Deployment really starts processes.

    with FakeKube(namespace="algomesh", images={...}, claims={...}) as kube:
        cfg = kubernetes.client.Configuration(host=kube.url)
        ...

What it follows
---------------
The Kubernetes API reference (kubernetes.io/docs/reference/kubernetes-api/, "API
Concepts", "Controlling Access": RBAC) and, where the pages are silent, what the
kube-apiserver and controllers do (k8s.io/apiserver handlers, pkg/apis/*/validation,
pkg/controller/{deployment,replicaset}, pkg/kubelet):

* Served endpoints (everything else answers 404 ``NotFound`` "the server could not find
  the requested resource"; a served path with another method answers 405
  ``MethodNotAllowed``):
  - ``/apis/apps/v1/namespaces/{ns}/deployments``: GET (list, ``labelSelector``), POST (create)
  - ``/apis/apps/v1/namespaces/{ns}/deployments/{name}``: GET, DELETE (``propagationPolicy``
    Background, the default for Deployments, Foreground or Orphan)
  - ``/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``: GET, PATCH (an
    ``autoscaling/v1`` Scale; only ``spec.replicas`` may change)
  - ``/api/v1/namespaces/{ns}/pods``: GET (list, ``labelSelector``)
  - ``/api/v1/namespaces/{ns}/pods/{name}``: GET, PATCH (metadata: labels and annotations;
    any other change answers 422 as the real API does for pod spec updates)
  - ``/api/v1/namespaces/{ns}/secrets``: POST;  ``.../secrets/{name}``: GET, PUT (replace)
* Errors are ``Status`` objects (``kind: Status``, ``status: Failure``, ``reason``,
  ``code``, ``details`` with name/group/kind) with the API server's messages:
  404 ``NotFound`` (``deployments.apps "x" not found``), 409 ``AlreadyExists``
  (``... already exists``), 409 ``Conflict`` (a ``metadata.resourceVersion`` precondition
  in a PUT or PATCH that is not the current one: "the object has been modified; please
  apply your changes to the latest version and try again"), 422 ``Invalid`` (field
  errors in ``details.causes``), 400 ``BadRequest``, 403 ``Forbidden`` (RBAC, below),
  415 ``UnsupportedMediaType``.
* ``metadata.resourceVersion``: one global counter, as etcd's revision: every write that
  changes an object (API writes, controllers' status updates, deletions) takes the next
  value; a write that changes nothing keeps it. ``metadata.generation`` of a Deployment
  moves with its spec; ``status.observedGeneration`` follows once its controller saw it.
* Patches: ``application/strategic-merge-patch+json`` (what the Python client sends for a
  dict body) and ``application/merge-patch+json`` (RFC 7386): maps merge, ``null`` deletes.
* Validation (422) on create and replace, a subset of pkg/apis/{apps,core}/validation:
  DNS-1123 names (subdomain for objects, label for containers and volumes), label keys and
  values, the selector matching the template's labels, container names unique, every
  volumeMount naming a volume, a volume with exactly one source, ``restartPolicy: Always``,
  ``replicas >= 0``, env names, downward-API field paths, Secret keys, base64 data,
  ``kubernetes.io/tls`` Secrets holding ``tls.crt`` and ``tls.key``, 1 MiB per Secret.
  Defaults are filled in as the API server does (strategy RollingUpdate 25%/25%,
  revisionHistoryLimit, progressDeadlineSeconds, restartPolicy, terminationGracePeriodSeconds
  30, dnsPolicy, schedulerName, terminationMessagePath/Policy, imagePullPolicy).
* RBAC: given a Role's ``rules`` (apiGroups, resources incl. ``deployments/scale``, verbs,
  resourceNames), a request whose verb (get, list, create, update, patch, delete, as the
  API server's RequestInfo derives it) no rule allows answers 403 with the API server's
  message (``User "system:serviceaccount:NS:SA" cannot patch resource "deployments/scale"
  in API group "apps" in the namespace "NS"``). Every request is recorded in ``requests``.
* Deployment and ReplicaSet controllers: a Deployment owns one ReplicaSet named
  ``<deployment>-<pod-template-hash>``; its pods are ``<replicaset>-<5 chars>`` with the
  ``pod-template-hash`` label and a controller ownerReference. Too few active pods: new
  ones are created; too many: the extras are deleted in the ReplicaSet controller's order
  (ActivePodsWithRanks): unscheduled first, then Pending < Unknown < Running, not ready
  before ready, lower ``controller.kubernetes.io/pod-deletion-cost`` first (an unparsable
  one counts as 0), then ready for a shorter time, more restarts, newer. Pods being
  deleted are not counted. Deleting a Deployment garbage-collects its ReplicaSet and pods.
* The kubelet (one node, ``fake-node``): pods are scheduled at once (``status.podIP`` and
  ``hostIP`` 127.0.0.1). Containers start in spec order, each after its image is "pulled":
  an image the fake was not told about stays ``waiting`` ``ErrImagePull`` then
  ``ImagePullBackOff`` (the pod stays Pending). A container is a LOCAL PROCESS (its own
  session): ``command`` + ``args`` with ``$(VAR)`` references expanded from its env as
  Kubernetes does (``$$`` escapes, unknown references stay), env values literal or from
  the downward API (``metadata.name``, ``metadata.namespace``, ``metadata.uid``,
  ``status.podIP``, ``status.hostIP``, ``spec.nodeName``, ``spec.serviceAccountName``),
  plus ``HOSTNAME`` and ``KUBERNETES_SERVICE_HOST/PORT``. Volumes are local folders:
  ``emptyDir`` a fresh folder per pod, ``secret`` a folder holding the Secret's keys as
  files (``defaultMode``, default 0644), ``persistentVolumeClaim`` the folder the test
  maps the claim to (``claims``), ``subPath`` joined to it; a claim or Secret that does
  not exist keeps the container waiting in ``ContainerCreating``. Since processes share
  the test's file system, each mount path occurring in the command, args, env values and
  workingDir is rewritten to its local folder, and ``images`` maps an image to
  executable names it provides (e.g. ``python`` -> ``sys.executable``).
  A container is ready once running (probes are not run); the pod is Running and Ready
  when all are. ``restartPolicy: Always``: an exited container is restarted after
  Kubernetes' back-off (10 s doubling to 300 s, times ``backoff_scale``), in ``waiting``
  ``CrashLoopBackOff`` meanwhile, with ``restartCount`` and ``lastState.terminated``;
  ``terminationMessagePolicy: FallbackToLogsOnError`` fills ``terminated.message`` with
  the log's tail (at most 80 lines and 2048 bytes) when it failed. A deleted pod gets
  ``deletionTimestamp``; its containers' ``preStop`` exec hooks run, then SIGTERM, then
  SIGKILL once ``terminationGracePeriodSeconds`` pass; the pod object goes once all exited.

What it deliberately does NOT implement
---------------------------------------
Authentication (every request is the one user named by ``user``), admission, quotas,
watch (``?watch`` answers 400), field selectors, set-based label selectors (``in``,
``notin``; 400), server-side apply, JSON patch (415), strategic-merge directives and
merge keys for lists (a list in a strategic merge patch answers 422: the launcher never
sends one), other resources and subresources (Services, ReplicaSets over HTTP, pod logs,
events, status subresources), rollouts (a Deployment's template does not change after
create in this fake: the launcher never patches one), probes, init/ephemeral containers,
resource limits, security contexts (processes run as the test's user; ``readOnly`` mounts
are not enforced), image pull policy, multiple nodes or namespaces' isolation beyond
names, persistence, and HTTP/2 or protobuf content types.
"""
from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeKube"]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand
DOWNWARD_FIELDS = ("metadata.name", "metadata.namespace", "metadata.uid", "status.podIP", "status.hostIP",
                   "spec.nodeName", "spec.serviceAccountName")
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
MAX_SECRET_BYTES = 1024 * 1024
NODE = "fake-node"
BACKOFF_INITIAL, BACKOFF_MAX = 10.0, 300.0


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Kind:
    group: str       # "" for core
    resource: str    # plural
    kind: str

    @property
    def qualified(self) -> str:  # "deployments.apps", "pods"
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def details(self, name: str, **extra: Any) -> dict:
        d = {"name": name, "kind": self.resource, **extra}
        if self.group:
            d["group"] = self.group
        return d

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{self.qualified} "{name}" not found', self.details(name))

    def exists(self, name: str) -> ApiError:
        return ApiError(409, "AlreadyExists", f'{self.qualified} "{name}" already exists', self.details(name))

    def conflict(self, name: str) -> ApiError:
        return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {self.qualified} "{name}": the object '
                        "has been modified; please apply your changes to the latest version and try again",
                        self.details(name))

    def invalid(self, name: str, causes: list[tuple[str, str]]) -> ApiError:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        text = ", ".join(f"{f}: {m}" for f, m in causes)
        return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: [{text}]' if len(causes) > 1
                        else f'{kind} "{name}" is invalid: {text}',
                        {"name": name, "kind": self.kind, **({"group": self.group} if self.group else {}),
                         "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]})


DEPLOYMENTS = Kind("apps", "deployments", "Deployment")
SCALE = Kind("autoscaling", "deployments", "Scale")
PODS = Kind("", "pods", "Pod")
SECRETS = Kind("", "secrets", "Secret")


# patches ---------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any, *, strategic: bool, path: str = "") -> Any:
    """RFC 7386 JSON merge patch; ``strategic``: Kubernetes' strategic merge patch, which
    is the same for maps and scalars (lists it merges by key: not implemented here)."""
    if not isinstance(patch, dict):
        if strategic and isinstance(patch, list):
            raise ApiError(422, "Invalid", f"FAKE: strategic merge of the list at {path or '/'} is not implemented")
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            raise ApiError(422, "Invalid", f"FAKE: strategic merge directive {key} is not implemented")
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value, strategic=strategic, path=f"{path}/{key}")
    return out


# label selectors --------------------------------------------------------------------------

def parse_selector(text: str) -> list[tuple[str, str, str]]:
    """Equality-based selectors: ``k=v``, ``k==v``, ``k!=v``, ``k`` (exists), ``!k``."""
    reqs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if re.search(r"\s(in|notin)\s*\(", part):
            raise ApiError(400, "BadRequest", f"FAKE: set-based selector {part!r} is not implemented")
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", part)
        if m:
            key, op, value = m.groups()
            reqs.append((key, "!=" if op == "!=" else "=", value))
        elif re.fullmatch(r"![^=!\s]+", part):
            reqs.append((part[1:], "!", ""))
        elif re.fullmatch(r"[^=!\s]+", part):
            reqs.append((part, "exists", ""))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        if not QUALIFIED_NAME.match(reqs[-1][0].rsplit("/", 1)[-1]):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: invalid label key {reqs[-1][0]!r}")
    return reqs


def selected(labels: dict, reqs: list[tuple[str, str, str]]) -> bool:
    for key, op, value in reqs:
        have = labels.get(key)
        if op == "=" and have != value or op == "!=" and have == value:
            return False
        if op == "exists" and have is None or op == "!" and have is not None:
            return False
    return True


# validation --------------------------------------------------------------------------------

def _check_labels(labels: Any, field_path: str, causes: list) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        causes.append((field_path, "must be a map of strings"))
        return
    for k, v in labels.items():
        prefix, _, name = k.rpartition("/")
        if (prefix and not DNS1123_SUBDOMAIN.match(prefix)) or len(name) > 63 or not QUALIFIED_NAME.match(name):
            causes.append((f"{field_path}", f'Invalid value: "{k}": name part must consist of alphanumeric '
                           "characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
            causes.append((f"{field_path}", f'Invalid value: "{v}": a valid label must be an empty string or '
                           "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                           "alphanumeric character (63 characters at most)"))


def _check_name(name: Any, causes: list, *, label: bool = False, field_path: str = "metadata.name") -> None:
    rx, limit = (DNS1123_LABEL, 63) if label else (DNS1123_SUBDOMAIN, 253)
    if not name:
        causes.append((field_path, "Required value: name or generateName is required"))
    elif not isinstance(name, str) or len(name) > limit or not rx.match(name):
        causes.append((field_path, f'Invalid value: "{name}": a lowercase RFC 1123 '
                       f"{'label' if label else 'subdomain'} must consist of lower case alphanumeric characters, "
                       "'-' or '.', and must start and end with an alphanumeric character"))


def _default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in spec.get("containers") or []:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        c.setdefault("imagePullPolicy", "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent")
        c.setdefault("resources", {})
    for v in spec.get("volumes") or []:
        if "secret" in v:
            v["secret"].setdefault("defaultMode", 0o644)
        if "emptyDir" in v and v["emptyDir"] is None:
            v["emptyDir"] = {}


def _check_pod_spec(spec: Any, fp: str, causes: list) -> None:
    if not isinstance(spec, dict):
        causes.append((fp, "Required value"))
        return
    if spec.get("restartPolicy", "Always") != "Always":
        causes.append((f"{fp}.restartPolicy", f'Unsupported value: "{spec.get("restartPolicy")}": '
                       'supported values: "Always"'))
    volumes = spec.get("volumes") or []
    names: set[str] = set()
    for i, v in enumerate(volumes):
        _check_name(v.get("name"), causes, label=True, field_path=f"{fp}.volumes[{i}].name")
        if v.get("name") in names:
            causes.append((f"{fp}.volumes[{i}].name", f'Duplicate value: "{v.get("name")}"'))
        names.add(v.get("name"))
        sources = [k for k in v if k != "name"]
        if len(sources) != 1:
            causes.append((f"{fp}.volumes[{i}]", "must specify exactly one volume source"
                           if sources else "Required value: must specify a volume type"))
        if "secret" in v and not v["secret"].get("secretName"):
            causes.append((f"{fp}.volumes[{i}].secret.secretName", "Required value"))
        if "persistentVolumeClaim" in v and not v["persistentVolumeClaim"].get("claimName"):
            causes.append((f"{fp}.volumes[{i}].persistentVolumeClaim.claimName", "Required value"))
    containers = spec.get("containers") or []
    if not containers:
        causes.append((f"{fp}.containers", "Required value"))
    seen: set[str] = set()
    for i, c in enumerate(containers):
        cp = f"{fp}.containers[{i}]"
        _check_name(c.get("name"), causes, label=True, field_path=f"{cp}.name")
        if c.get("name") in seen:
            causes.append((f"{cp}.name", f'Duplicate value: "{c.get("name")}"'))
        seen.add(c.get("name"))
        if not c.get("image"):
            causes.append((f"{cp}.image", "Required value"))
        for key in ("command", "args"):
            if key in c and not (isinstance(c[key], list) and all(isinstance(x, str) for x in c[key])):
                causes.append((f"{cp}.{key}", "must be a list of strings"))
        mounts: set[str] = set()
        for j, m in enumerate(c.get("volumeMounts") or []):
            if m.get("name") not in names:
                causes.append((f"{cp}.volumeMounts[{j}].name", f'Not found: "{m.get("name")}"'))
            mp = m.get("mountPath") or ""
            if not mp.startswith("/"):
                causes.append((f"{cp}.volumeMounts[{j}].mountPath", "Required value: must be an absolute path"))
            if mp in mounts:
                causes.append((f"{cp}.volumeMounts[{j}].mountPath", "must be unique"))
            mounts.add(mp)
            sub = m.get("subPath", "")
            if sub and (sub.startswith("/") or ".." in sub.split("/")):
                causes.append((f"{cp}.volumeMounts[{j}].subPath", "must be a relative path without '..'"))
        for j, e in enumerate(c.get("env") or []):
            if not ENV_NAME.match(e.get("name") or ""):
                causes.append((f"{cp}.env[{j}].name", f'Invalid value: "{e.get("name")}": a valid environment '
                               "variable name must consist of alphabetic characters, digits, '_', '-', or '.'"))
            ref = (e.get("valueFrom") or {}).get("fieldRef")
            if "valueFrom" in e and "value" in e:
                causes.append((f"{cp}.env[{j}].valueFrom", "may not be specified when `value` is not empty"))
            if ref is not None and ref.get("fieldPath") not in DOWNWARD_FIELDS and not re.fullmatch(
                    r"metadata\.(labels|annotations)\['[^']+'\]", ref.get("fieldPath") or ""):
                causes.append((f"{cp}.env[{j}].valueFrom.fieldRef.fieldPath",
                               f'Unsupported value: "{ref.get("fieldPath")}"'))
        policy = c.get("terminationMessagePolicy", "File")
        if policy not in ("File", "FallbackToLogsOnError"):
            causes.append((f"{cp}.terminationMessagePolicy", f'Unsupported value: "{policy}"'))


def validate_deployment(obj: dict) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    causes: list[tuple[str, str]] = []
    _check_name(name, causes)
    _check_labels(meta.get("labels"), "metadata.labels", causes)
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        causes.append(("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0"))
    match = ((spec.get("selector") or {}).get("matchLabels"))
    if not match:
        causes.append(("spec.selector", "Required value"))
    template = spec.get("template") or {}
    tlabels = (template.get("metadata") or {}).get("labels") or {}
    _check_labels(match, "spec.selector.matchLabels", causes)
    _check_labels(tlabels, "spec.template.metadata.labels", causes)
    if match and any(tlabels.get(k) != v for k, v in match.items()):
        causes.append(("spec.template.metadata.labels", f"Invalid value: {tlabels}: `selector` does not match "
                       "template `labels`"))
    _check_pod_spec(template.get("spec"), "spec.template.spec", causes)
    if causes:
        raise DEPLOYMENTS.invalid(name, causes)


def validate_secret(obj: dict) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    causes: list[tuple[str, str]] = []
    _check_name(name, causes)
    _check_labels(meta.get("labels"), "metadata.labels", causes)
    total = 0
    for key, value in (obj.get("data") or {}).items():
        if not SECRET_KEY.match(key):
            causes.append((f"data[{key}]", f'Invalid value: "{key}": a valid config key must consist of '
                           "alphanumeric characters, '-', '_' or '.'"))
        try:
            total += len(base64.b64decode(value, validate=True))
        except (ValueError, TypeError):
            causes.append((f"data[{key}]", "Invalid value: illegal base64 data"))
    if total > MAX_SECRET_BYTES:
        causes.append(("data", f"Too long: must have at most {MAX_SECRET_BYTES} bytes"))
    if obj.get("type") == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in (obj.get("data") or {}):
                causes.append((f"data[{key}]", "Required value"))
    if causes:
        raise SECRETS.invalid(name, causes)


# the API server ----------------------------------------------------------------------------

@dataclass
class Request:
    method: str
    verb: str
    group: str
    resource: str        # "deployments/scale" for a subresource
    namespace: str
    name: str
    code: int = 0


@dataclass
class _Container:
    name: str
    process: subprocess.Popen | None = None
    log: Path | None = None
    started_at: str = ""
    restarts: int = 0
    next_start: float = 0.0       # monotonic time of the next (re)start attempt
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    ready: bool = False


@dataclass
class _PodRun:
    """What the kubelet keeps per pod: its folders and its containers' processes."""
    uid: str
    root: Path
    containers: dict[str, _Container]
    terminating: bool = False     # its termination (hooks, signals) has begun
    terminated: bool = False      # ... and every container has exited
    ready_since: float | None = None


class FakeKube:
    """A FAKE kube-apiserver with Deployment/ReplicaSet controllers and one kubelet that
    runs containers as local processes. Not Kubernetes: see the module docstring."""

    def __init__(self, *, namespace: str = "default", images: dict[str, dict[str, str]] | None = None,
                 claims: dict[str, str | os.PathLike] | None = None, rules: list[dict] | None = None,
                 user: str = "system:serviceaccount:default:default", backoff_scale: float = 1.0,
                 workdir: str | os.PathLike | None = None, tick: float = 0.05) -> None:
        self.namespace = namespace
        self.images = dict(images or {})   # image -> {command word: local executable}
        self.claims = {k: Path(v) for k, v in (claims or {}).items()}
        self.rules = rules                  # None: every request is allowed
        self.user = user
        self.backoff_scale = backoff_scale
        self.tick = tick
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kf-"))
        self.requests: list[Request] = []
        self._objects: dict[tuple[str, str, str], dict] = {}  # (resource, ns, name) -> object
        self._rv = 0
        self._lock = threading.RLock()
        self._runs: dict[str, _PodRun] = {}     # pod uid -> kubelet state
        self._owner: dict[str, tuple[str, int]] = {}  # pod uid -> (its Deployment's uid, creation order)
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.url = ""

    # lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                fake._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        for target in (self._server.serve_forever, self._control_loop):
            t = threading.Thread(target=target, daemon=True, name=f"kube-fake-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self.url

    def stop(self) -> None:
        """Kill every container process at once and stop serving."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            for run in self._runs.values():
                for c in run.containers.values():
                    _kill_group(c.process)
            self._runs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "FakeKube":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # state for tests ------------------------------------------------------------------------

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        with self._lock:
            obj = self._objects.get((resource, namespace or self.namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None, selector: str = "") -> list[dict]:
        reqs = parse_selector(selector)
        with self._lock:
            return [copy.deepcopy(o) for (r, ns, _), o in sorted(self._objects.items())
                    if r == resource and ns == (namespace or self.namespace)
                    and selected(o["metadata"].get("labels") or {}, reqs)]

    def pids(self, pod: str) -> dict[str, int]:
        """Container name -> pid of its running process, for a pod by name."""
        with self._lock:
            obj = self._objects.get(("pods", self.namespace, pod))
            run = self._runs.get(obj["metadata"]["uid"]) if obj else None
            return {n: c.process.pid for n, c in (run.containers.items() if run else ())
                    if c.process is not None and c.process.poll() is None}

    def logs(self, pod_uid_or_name: str | None = None) -> str:
        """Every container log (of one pod, or all), for a failing test's message."""
        out = []
        with self._lock:
            names = {o["metadata"]["uid"]: n for (r, _, n), o in self._objects.items() if r == "pods"}
            for uid, run in self._runs.items():
                name = names.get(uid, uid)
                if pod_uid_or_name not in (None, uid, name):
                    continue
                for c in run.containers.values():
                    if c.log is not None and c.log.exists():
                        out.append(f"--- {name}/{c.name}\n{c.log.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    # HTTP -------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        code, body = 500, {}
        try:
            code, body = self._route(h.command, url.path, query, raw, h.headers.get("Content-Type", ""))
        except ApiError as exc:
            code, body = exc.code, exc.status()
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, method: str, path: str, query: dict, raw: bytes, ctype: str) -> tuple[int, dict]:
        m = (re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/(deployments)(?:/([^/]+)(?:/(scale))?)?", path)
             or re.fullmatch(r"/api/v1/namespaces/([^/]+)/(pods|secrets)(?:/([^/]+))?", path))
        if m is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})
        ns, resource, name, sub = (m.groups() + (None,))[:4]
        group = "apps" if resource == "deployments" else ""
        allowed = {("deployments", False, False): ("GET", "POST"), ("deployments", True, False): ("GET", "DELETE"),
                   ("deployments", True, True): ("GET", "PATCH"), ("pods", False, False): ("GET",),
                   ("pods", True, False): ("GET", "PATCH"), ("secrets", False, False): ("POST",),
                   ("secrets", True, False): ("GET", "PUT")}[(resource, bool(name), bool(sub))]
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(method, method.lower())
        full = f"{resource}/{sub}" if sub else resource
        record = Request(method, verb, group, full, ns, name or "")
        with self._lock:
            self.requests.append(record)
        try:
            if method not in allowed:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource", {"causes": [{"reason": "UnexpectedServerResponse",
                                                                    "message": "405: Method Not Allowed"}]})
            self._authorize(verb, group, full, ns, name or "")
            if "watch" in query and query["watch"] not in ("0", "false"):
                raise ApiError(400, "BadRequest", "FAKE: watch is not implemented")
            if method in ("POST", "PUT", "PATCH"):
                try:
                    body = json.loads(raw or b"null")
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {exc}")
                if method == "PATCH":
                    base = ctype.split(";")[0].strip()
                    if base not in ("application/strategic-merge-patch+json", "application/merge-patch+json"):
                        raise ApiError(415, "UnsupportedMediaType", f"FAKE: patch type {base!r} is not "
                                       "implemented (strategic-merge-patch+json, merge-patch+json are)")
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "the patch must be a JSON object")
                    body = (body, base.startswith("application/strategic"))
                elif not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be a JSON object")
            else:
                body = None
            with self._lock:
                code, out = getattr(self, f"_{method.lower()}_{resource}{'_scale' if sub else ''}")(
                    ns, name, body, query)
            record.code = code
            return code, out
        except ApiError as exc:
            record.code = exc.code
            raise

    def _authorize(self, verb: str, group: str, resource: str, ns: str, name: str) -> None:
        if self.rules is None:
            return
        for rule in self.rules:
            if (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])) and \
                    (resource in rule.get("resources", []) or "*" in rule.get("resources", [])) and \
                    (verb in rule.get("verbs", []) or "*" in rule.get("verbs", [])) and \
                    (not rule.get("resourceNames") or name in rule["resourceNames"]):
                return
        what = f'{resource.split("/")[0]}.{group}' if group else resource.split("/")[0]
        subject = f'{what} "{name}"' if name else what
        raise ApiError(403, "Forbidden", f'{subject} is forbidden: User "{self.user}" cannot {verb} resource '
                       f'"{resource}" in API group "{group}" in the namespace "{ns}"',
                       {"name": name, "kind": resource.split("/")[0], **({"group": group} if group else {})})

    # objects ------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    @staticmethod
    def _meta(obj: dict, ns: str) -> dict:
        """Server-set metadata of a new object (its resourceVersion comes with ``_store``)."""
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers"):
            meta.pop(key, None)
        return meta

    def _store(self, resource: str, ns: str, obj: dict, before: dict | None = None) -> dict:
        """Write ``obj``; a new resourceVersion only if it changed."""
        if before is not None and _without_rv(before) == _without_rv(obj):
            return before
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[(resource, ns, obj["metadata"]["name"])] = obj
        return obj

    def _existing(self, kind: Kind, resource: str, ns: str, name: str) -> dict:
        obj = self._objects.get((resource, ns, name))
        if obj is None:
            raise kind.not_found(name)
        return obj

    @staticmethod
    def _precondition(kind: Kind, current: dict, wanted: Any, name: str) -> None:
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise kind.conflict(name)

    def _list(self, resource: str, kind: str, ns: str, query: dict) -> tuple[int, dict]:
        reqs = parse_selector(query.get("labelSelector", ""))
        items = [copy.deepcopy(o) for (r, n, _), o in sorted(self._objects.items())
                 if r == resource and n == ns and selected(o["metadata"].get("labels") or {}, reqs)]
        api = "apps/v1" if resource == "deployments" else "v1"
        return 200, {"kind": f"{kind}List", "apiVersion": api, "metadata": {"resourceVersion": str(self._rv)},
                     "items": items}

    # deployments
    def _get_deployments(self, ns: str, name: str | None, _body: Any, query: dict) -> tuple[int, dict]:
        if not name:
            return self._list("deployments", "Deployment", ns, query)
        return 200, copy.deepcopy(self._existing(DEPLOYMENTS, "deployments", ns, name))

    def _post_deployments(self, ns: str, _name: Any, body: dict, _query: dict) -> tuple[int, dict]:
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = "apps/v1", "Deployment"
        obj.setdefault("metadata", {})
        obj.pop("status", None)
        validate_deployment(obj)
        name = obj["metadata"]["name"]
        if ("deployments", ns, name) in self._objects:
            raise DEPLOYMENTS.exists(name)
        spec = obj["spec"]
        spec.setdefault("replicas", 1)
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%",
                                                                                  "maxSurge": "25%"}})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _default_pod_spec(spec["template"]["spec"])
        meta = self._meta(obj, ns)
        meta["generation"] = 1
        obj["status"] = {}
        created = copy.deepcopy(self._store("deployments", ns, obj))
        self._reconcile()  # the controllers act after the write, as they would on its watch event
        return 201, created

    def _delete_deployments(self, ns: str, name: str, _body: Any, query: dict) -> tuple[int, dict]:
        obj = self._existing(DEPLOYMENTS, "deployments", ns, name)
        policy = query.get("propagationPolicy") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                           f'Unsupported value: "{policy}"')
        uid = obj["metadata"]["uid"]
        if policy == "Foreground":
            obj = copy.deepcopy(obj)
            obj["metadata"]["deletionTimestamp"] = _now()
            obj["metadata"]["finalizers"] = ["foregroundDeletion"]
            obj = self._store("deployments", ns, obj)
            return 200, copy.deepcopy(obj)
        del self._objects[("deployments", ns, name)]
        self._rv += 1
        for (r, n, pname), pod in list(self._objects.items()):
            if r == "pods" and n == ns and self._owned_by(pod, uid):
                if policy == "Orphan":
                    pod = copy.deepcopy(pod)
                    pod["metadata"]["ownerReferences"] = []
                    self._owner.pop(pod["metadata"]["uid"], None)
                    self._store("pods", ns, pod)
                else:  # the garbage collector deletes the ReplicaSet, which deletes its pods
                    self._delete_pod(ns, pname)
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": name, "group": "apps", "kind": "deployments", "uid": uid}}

    def _scale_of(self, dep: dict) -> dict:
        sel = ",".join(f"{k}={v}" for k, v in sorted(dep["spec"]["selector"]["matchLabels"].items()))
        meta = dep["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                  "creationTimestamp")},
                "spec": {"replicas": dep["spec"]["replicas"]},
                "status": {"replicas": (dep.get("status") or {}).get("replicas", 0), "selector": sel}}

    def _get_deployments_scale(self, ns: str, name: str, _body: Any, _query: dict) -> tuple[int, dict]:
        return 200, self._scale_of(self._existing(SCALE, "deployments", ns, name))

    def _patch_deployments_scale(self, ns: str, name: str, body: tuple[dict, bool], _q: dict) -> tuple[int, dict]:
        dep = self._existing(SCALE, "deployments", ns, name)
        patch, strategic = body
        scale = self._scale_of(dep)
        self._precondition(SCALE, dep, (patch.get("metadata") or {}).get("resourceVersion"), name)
        new = merge_patch(scale, patch, strategic=strategic)
        replicas = (new.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise SCALE.invalid(name, [("spec.replicas", f"Invalid value: {replicas}: must be greater than or "
                                        "equal to 0")])
        if new.get("metadata", {}).get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        updated = copy.deepcopy(dep)
        if replicas != dep["spec"]["replicas"]:
            updated["spec"]["replicas"] = replicas
            updated["metadata"]["generation"] = dep["metadata"].get("generation", 1) + 1
        scale = self._scale_of(self._store("deployments", ns, updated, before=dep))
        self._reconcile()
        return 200, scale

    # pods
    def _get_pods(self, ns: str, name: str | None, _body: Any, query: dict) -> tuple[int, dict]:
        if not name:
            return self._list("pods", "Pod", ns, query)
        return 200, copy.deepcopy(self._existing(PODS, "pods", ns, name))

    def _patch_pods(self, ns: str, name: str, body: tuple[dict, bool], _q: dict) -> tuple[int, dict]:
        pod = self._existing(PODS, "pods", ns, name)
        patch, strategic = body
        self._precondition(PODS, pod, (patch.get("metadata") or {}).get("resourceVersion"), name)
        new = merge_patch(pod, patch, strategic=strategic)
        changed = [k for k in set(new) | set(pod) if k not in ("metadata",) and new.get(k) != pod.get(k)]
        changed += [f"metadata.{k}" for k in set(new.get("metadata", {})) | set(pod["metadata"])
                    if k not in ("labels", "annotations", "resourceVersion")
                    and new["metadata"].get(k) != pod["metadata"].get(k)]
        if changed:
            raise PODS.invalid(name, [(sorted(changed)[0], "Forbidden: pod updates may not change fields other "
                                       "than `spec.containers[*].image`, `spec.activeDeadlineSeconds`, "
                                       "`spec.tolerations` (only additions to existing tolerations) or labels "
                                       "and annotations (FAKE: only labels and annotations)")])
        causes: list = []
        _check_labels(new["metadata"].get("labels"), "metadata.labels", causes)
        if causes:
            raise PODS.invalid(name, causes)
        new["metadata"]["resourceVersion"] = pod["metadata"]["resourceVersion"]
        out = self._store("pods", ns, new, before=pod)
        return 200, copy.deepcopy(out)

    # secrets
    def _get_secrets(self, ns: str, name: str, _body: Any, _query: dict) -> tuple[int, dict]:
        return 200, copy.deepcopy(self._existing(SECRETS, "secrets", ns, name))

    @staticmethod
    def _secret_body(body: dict) -> dict:
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = "v1", "Secret"
        obj.setdefault("metadata", {})
        obj.setdefault("type", "Opaque")
        data = dict(obj.get("data") or {})
        for k, v in (obj.pop("stringData", None) or {}).items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data
        validate_secret(obj)
        return obj

    def _post_secrets(self, ns: str, _name: Any, body: dict, _query: dict) -> tuple[int, dict]:
        obj = self._secret_body(body)
        name = obj["metadata"]["name"]
        if ("secrets", ns, name) in self._objects:
            raise SECRETS.exists(name)
        self._meta(obj, ns)
        self._store("secrets", ns, obj)
        return 201, copy.deepcopy(obj)

    def _put_secrets(self, ns: str, name: str, body: dict, _query: dict) -> tuple[int, dict]:
        current = self._existing(SECRETS, "secrets", ns, name)
        obj = self._secret_body(body)
        if obj["metadata"].get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        self._precondition(SECRETS, current, obj["metadata"].get("resourceVersion"), name)
        if obj["type"] != current["type"]:
            raise SECRETS.invalid(name, [("type", "Invalid value: field is immutable")])
        for key in ("uid", "creationTimestamp", "namespace"):
            obj["metadata"][key] = current["metadata"][key]
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        out = self._store("secrets", ns, obj, before=current)
        return 200, copy.deepcopy(out)

    # controllers ----------------------------------------------------------------------------

    def _control_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                try:
                    self._reconcile()
                    self._kubelet()
                except Exception:  # noqa: BLE001 - a fake's bug must not kill its loop silently
                    import traceback
                    traceback.print_exc()
            self._stopping.wait(self.tick)

    def _reconcile(self) -> None:
        """The Deployment and ReplicaSet controllers and the garbage collector, in one pass."""
        for (r, ns, name), dep in list(self._objects.items()):
            if r != "deployments":
                continue
            uid = dep["metadata"]["uid"]
            pods = [p for (pr, pn, _), p in self._objects.items()
                    if pr == "pods" and pn == ns and self._owned_by(p, uid)]
            active = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            deleting = dep["metadata"].get("deletionTimestamp")
            want = 0 if deleting else dep["spec"]["replicas"]
            if len(active) < want:
                for _ in range(want - len(active)):
                    active.append(self._create_pod(ns, dep))
            elif len(active) > want:
                for pod in sorted(active, key=self._deletion_rank)[:len(active) - want]:
                    self._delete_pod(ns, pod["metadata"]["name"])
                    active.remove(pod)
            if deleting and not pods:
                del self._objects[(r, ns, name)]
                self._rv += 1
                continue
            live = [self._objects[("pods", ns, p["metadata"]["name"])] for p in active
                    if ("pods", ns, p["metadata"]["name"]) in self._objects]
            ready = sum(1 for p in live if _pod_ready(p))
            status = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": len(live),
                      "updatedReplicas": len(live), "readyReplicas": ready, "availableReplicas": ready,
                      "unavailableReplicas": max(0, want - ready)}
            status = {k: v for k, v in status.items() if v or k == "observedGeneration"}
            if dep.get("status") != status:
                new = copy.deepcopy(dep)
                new["status"] = status
                self._store("deployments", ns, new)

    def _deletion_rank(self, pod: dict) -> tuple:
        """The ReplicaSet controller's ActivePodsWithRanks order: first deleted first."""
        st = pod.get("status") or {}
        phase = {"Pending": 0, "Unknown": 1, "Running": 2}.get(st.get("phase", "Pending"), 0)
        try:
            cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, "0"))
        except ValueError:
            cost = 0
        run = self._runs.get(pod["metadata"]["uid"])
        ready_for = time.monotonic() - run.ready_since if run and run.ready_since else 0.0
        restarts = max((c.get("restartCount", 0) for c in st.get("containerStatuses") or []), default=0)
        newer = self._owner.get(pod["metadata"]["uid"], ("", 0))[1]
        return (bool(pod["spec"].get("nodeName")), phase, _pod_ready(pod), cost, ready_for, -restarts, -newer)

    def _owned_by(self, pod: dict, deployment_uid: str) -> bool:
        return self._owner.get(pod["metadata"]["uid"], ("", 0))[0] == deployment_uid

    def _create_pod(self, ns: str, dep: dict) -> dict:
        template = dep["spec"]["template"]
        phash = _template_hash(template)
        rs_name = f"{dep['metadata']['name']}-{phash}"
        while True:
            name = f"{rs_name[:58]}-{''.join(random.choice(SAFE_ALPHABET) for _ in range(5))}"
            if ("pods", ns, name) not in self._objects:
                break
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "generateName": f"{rs_name}-",
                            "labels": {**(template.get("metadata", {}).get("labels") or {}),
                                       "pod-template-hash": phash},
                            "annotations": {**(template.get("metadata", {}).get("annotations") or {})},
                            "ownerReferences": []},
               "spec": copy.deepcopy(template["spec"])}
        meta = self._meta(pod, ns)
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                    "uid": _rs_uid(dep, phash), "controller": True, "blockOwnerDeletion": True}]
        self._owner[meta["uid"]] = (dep["metadata"]["uid"], self._rv + 1)
        pod["spec"]["nodeName"] = NODE
        pod["spec"].setdefault("serviceAccountName", "default")
        pod["spec"].setdefault("serviceAccount", pod["spec"]["serviceAccountName"])
        pod["status"] = {"phase": "Pending", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                         "podIPs": [{"ip": "127.0.0.1"}], "startTime": _now(), "qosClass": "BestEffort",
                         "conditions": [{"type": "PodScheduled", "status": "True",
                                         "lastTransitionTime": _now()}]}
        return self._store("pods", ns, pod)

    def _delete_pod(self, ns: str, name: str) -> None:
        pod = self._objects.get(("pods", ns, name))
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        new = copy.deepcopy(pod)
        new["metadata"]["deletionTimestamp"] = _now()
        new["metadata"]["deletionGracePeriodSeconds"] = pod["spec"].get("terminationGracePeriodSeconds", 30)
        self._store("pods", ns, new)

    # the kubelet ------------------------------------------------------------------------------

    def _kubelet(self) -> None:
        now = time.monotonic()
        for (r, ns, name), pod in list(self._objects.items()):
            if r != "pods":
                continue
            uid = pod["metadata"]["uid"]
            run = self._runs.get(uid)
            if run is None:
                root = Path(tempfile.mkdtemp(prefix="p", dir=self.workdir))
                run = _PodRun(uid, root, {c["name"]: _Container(c["name"]) for c in pod["spec"]["containers"]})
                self._runs[uid] = run
            if pod["metadata"].get("deletionTimestamp"):
                if not run.terminating:
                    run.terminating = True
                    threading.Thread(target=self._terminate, args=(ns, name, run), daemon=True).start()
                for c in run.containers.values():
                    if c.process is not None and c.process.poll() is not None and c.state.get("running"):
                        rc = c.process.returncode
                        c.state = {"terminated": {"exitCode": 128 - rc if rc < 0 else rc,
                                                  "reason": "Completed" if rc == 0 else "Error",
                                                  "startedAt": c.started_at, "finishedAt": _now()}}
                        c.ready = False
                if run.terminated:
                    del self._objects[(r, ns, name)]
                    self._rv += 1
                    self._runs.pop(uid, None)
                    self._owner.pop(uid, None)
                    shutil.rmtree(run.root, ignore_errors=True)
                    continue
            else:
                for spec in pod["spec"]["containers"]:
                    c = run.containers[spec["name"]]
                    if c.process is not None and c.process.poll() is not None and c.state.get("running"):
                        self._exited(pod, spec, c, now)
                    if c.process is None or c.process.poll() is not None:
                        if now >= c.next_start:
                            self._start_container(pod, spec, run, c, now)
                        if c.process is None or c.process.poll() is not None:
                            break  # containers start in order: the next waits for this one
            self._write_status(ns, name, pod, run)

    def _exited(self, pod: dict, spec: dict, c: _Container, now: float) -> None:
        rc = c.process.returncode
        code = 128 - rc if rc < 0 else rc  # a signal, as a container runtime reports it
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": c.started_at, "finishedAt": _now(), "containerID": f"fake://{c.process.pid}"}
        if rc < 0:
            term["signal"] = -rc
        if code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and c.log is not None:
            lines = c.log.read_bytes().decode(errors="replace").splitlines()[-80:]
            term["message"] = "\n".join(lines).encode()[-2048:].decode(errors="ignore")
        c.last_state = {"terminated": term}
        c.ready = False
        delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** c.restarts) * self.backoff_scale
        c.restarts += 1
        c.next_start = now + delay
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {delay:.0f}s restarting failed container={spec['name']} "
                                          f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}"
                                          f"({pod['metadata']['uid']})"}}

    def _mounts(self, pod: dict, spec: dict, run: _PodRun) -> dict[str, Path] | str:
        """Mount path -> local folder; or the reason the container cannot be created yet."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        out: dict[str, Path] = {}
        for m in spec.get("volumeMounts") or []:
            v = volumes[m["name"]]
            if "emptyDir" in v:
                local = run.root / "volumes" / v["name"]
                local.mkdir(parents=True, exist_ok=True)
            elif "secret" in v:
                secret = self._objects.get(("secrets", pod["metadata"]["namespace"], v["secret"]["secretName"]))
                if secret is None:
                    return f'MountVolume.SetUp failed for volume "{v["name"]}": secret ' \
                           f'"{v["secret"]["secretName"]}" not found'
                local = run.root / "volumes" / v["name"]
                if not local.exists():
                    local.mkdir(parents=True)
                    for key, value in (secret.get("data") or {}).items():
                        f = local / key
                        f.write_bytes(base64.b64decode(value))
                        f.chmod(v["secret"].get("defaultMode", 0o644))
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                if claim not in self.claims:
                    return f'persistentvolumeclaim "{claim}" not found'
                local = self.claims[claim]
            else:
                return f"FAKE: volume {v['name']}'s source is not implemented"
            if m.get("subPath"):
                local = local / m["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            out[m["mountPath"]] = local
        return out

    def _start_container(self, pod: dict, spec: dict, run: _PodRun, c: _Container, now: float) -> None:
        image = self.images.get(spec["image"])
        if image is None:
            c.state = {"waiting": {"reason": "ImagePullBackOff" if c.restarts or c.state.get("waiting", {}).get(
                "reason") in ("ErrImagePull", "ImagePullBackOff") else "ErrImagePull",
                "message": f'Back-off pulling image "{spec["image"]}"'}}
            c.next_start = now + 1.0
            return
        mounts = self._mounts(pod, spec, run)
        if isinstance(mounts, str):
            c.state = {"waiting": {"reason": "ContainerCreating", "message": mounts}}
            return
        env = self._env(pod, spec)
        argv = [_expand(x, env) for x in (spec.get("command") or []) + (spec.get("args") or [])]
        if not argv:
            c.state = {"waiting": {"reason": "CreateContainerError", "message": "FAKE: no command (image "
                                   "entrypoints are not modelled)"}}
            return
        argv = [_translate(x, mounts) for x in argv]
        argv[0] = image.get(argv[0], argv[0])
        local_env = {k: _translate(v, mounts) for k, v in env.items()}
        local_env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        cwd = _translate(spec.get("workingDir") or "", mounts) or str(run.root)
        c.log = run.root / f"{spec['name']}.log"
        c.started_at = _now()
        try:
            with open(c.log, "ab") as log:
                c.process = subprocess.Popen(argv, env=local_env, cwd=cwd, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:  # as a container runtime that cannot exec the entrypoint
            c.process = None
            c.last_state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(exc),
                                           "startedAt": c.started_at, "finishedAt": _now()}}
            delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** c.restarts) * self.backoff_scale
            c.restarts += 1
            c.next_start = now + delay
            c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": str(exc)}}
            return
        c.state = {"running": {"startedAt": c.started_at}}
        c.ready = True

    def _env(self, pod: dict, spec: dict) -> dict[str, str]:
        meta, pspec, st = pod["metadata"], pod["spec"], pod["status"]
        fields = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
                  "metadata.uid": meta["uid"], "status.podIP": st.get("podIP", ""),
                  "status.hostIP": st.get("hostIP", ""), "spec.nodeName": pspec.get("nodeName", ""),
                  "spec.serviceAccountName": pspec.get("serviceAccountName", "")}
        env = {"HOSTNAME": meta["name"], "KUBERNETES_SERVICE_HOST": "127.0.0.1",
               "KUBERNETES_SERVICE_PORT": self.url.rsplit(":", 1)[-1]}
        for e in spec.get("env") or []:
            if "valueFrom" in e:
                path = e["valueFrom"]["fieldRef"]["fieldPath"]
                m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
                env[e["name"]] = (meta.get(m.group(1)) or {}).get(m.group(2), "") if m else fields[path]
            else:
                env[e["name"]] = _expand(e.get("value", ""), env)
        return env

    def _terminate(self, ns: str, name: str, run: _PodRun) -> None:
        """preStop hooks, SIGTERM, SIGKILL after the grace period: each container at once."""
        with self._lock:
            pod = copy.deepcopy(self._objects.get(("pods", ns, name)))
        grace = float(pod["metadata"].get("deletionGracePeriodSeconds", 30)) if pod else 0.0
        deadline = time.monotonic() + grace

        def stop(spec: dict) -> None:
            c = run.containers[spec["name"]]
            proc = c.process
            if proc is None or proc.poll() is not None:
                return
            hook = ((spec.get("lifecycle") or {}).get("preStop") or {}).get("exec")
            if hook and hook.get("command"):
                env = self._env(pod, spec)
                mounts = self._mounts(pod, spec, run)
                mounts = mounts if isinstance(mounts, dict) else {}
                argv = [_translate(_expand(x, env), mounts) for x in hook["command"]]
                try:
                    subprocess.run(argv, env={**env, "PATH": os.environ.get("PATH", "")}, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=max(0.0, deadline - time.monotonic()))
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc)  # the container goes: every process left in it dies

        threads = [threading.Thread(target=stop, args=(spec,), daemon=True)
                   for spec in (pod["spec"]["containers"] if pod else [])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with self._lock:
            for c in run.containers.values():
                c.ready = False
            run.terminated = True

    def _write_status(self, ns: str, name: str, pod: dict, run: _PodRun) -> None:
        statuses = []
        for spec in pod["spec"]["containers"]:
            c = run.containers[spec["name"]]
            s = {"name": spec["name"], "image": spec["image"], "imageID": "", "ready": c.ready,
                 "restartCount": c.restarts, "started": bool(c.state.get("running")), "state": c.state,
                 "lastState": c.last_state}
            if c.process is not None:
                s["containerID"] = f"fake://{c.process.pid}"
            statuses.append(s)
        all_ready = all(c.ready for c in run.containers.values())
        all_started = all(c.process is not None for c in run.containers.values())
        if all_ready and run.ready_since is None:
            run.ready_since = time.monotonic()
        elif not all_ready:
            run.ready_since = None
        cond = {c["type"]: c for c in pod["status"].get("conditions", [])}
        for kind, ok in (("Initialized", True), ("ContainersReady", all_ready), ("Ready", all_ready)):
            value = "True" if ok else "False"
            if cond.get(kind, {}).get("status") != value:
                cond[kind] = {"type": kind, "status": value, "lastTransitionTime": _now()}
        status = dict(pod["status"], containerStatuses=statuses, conditions=list(cond.values()),
                      phase="Running" if all_started else "Pending")
        if status != pod["status"]:
            new = copy.deepcopy(pod)
            new["status"] = status
            self._store("pods", ns, new)


def _without_rv(obj: dict) -> dict:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return out


def _pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions", []))


def _template_hash(template: dict) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    n = int.from_bytes(digest[:8], "big")
    out = ""
    while n and len(out) < 10:
        out += SAFE_ALPHABET[n % len(SAFE_ALPHABET)]
        n //= len(SAFE_ALPHABET)
    return out


def _rs_uid(dep: dict, phash: str) -> str:
    return str(uuid.uuid5(uuid.UUID(dep["metadata"]["uid"]), phash))


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, ``$$`` is a ``$``, others stay."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([^)]*)\)", sub, text)


def _translate(text: str, mounts: dict[str, Path]) -> str:
    """Rewrite container paths under each mount path to the local folder behind it."""
    for mp in sorted(mounts, key=len, reverse=True):
        text = re.sub(r"(?<![\w.-])" + re.escape(mp.rstrip("/")) + r"(?=/|$|[^\w.-])",
                      lambda _m, local=str(mounts[mp]): local, text)
    return text


def _kill_group(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass

