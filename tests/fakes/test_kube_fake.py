"""Fidelity tests of the FAKE Kubernetes API server and kubelet (tests/fakes/kube_fake.py).

Driven through the official ``kubernetes`` client, the one the launcher uses, and raw HTTP
(``requests``) where status codes and bodies matter. Each expectation is documented
Kubernetes behaviour (API concepts, the API reference, RBAC, the ReplicaSet controller's
scale-down order, the kubelet's restart back-off, termination and downward API) that the
fake claims to follow.
"""
from __future__ import annotations

import base64
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import kubernetes
import pytest
import requests
from kubernetes.client.exceptions import ApiException

from tests.fakes.kube_fake import FakeKube, merge_patch, parse_selector

NS = "t"
IMAGE = "img:1"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def kube():
    work = Path(tempfile.mkdtemp(prefix="kt-"))
    (work / "claim").mkdir()
    f = FakeKube(namespace=NS, images={IMAGE: {"python": sys.executable}}, claims={"data": work / "claim"},
                 backoff_scale=0.02, workdir=work / "k")
    (work / "k").mkdir()
    f.start()
    yield f
    f.stop()
    import shutil
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def api(kube):
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=kube.url))
    yield kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client)
    client.close()


def deployment(name: str = "d", replicas: int = 1, command: str = "import time; time.sleep(60)", **spec) -> dict:
    container = {"name": "c", "image": IMAGE, "command": ["python", "-c", command]}
    container.update(spec.pop("container", {}))
    return {"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container], **spec}}}}


def status(exc: ApiException) -> dict:
    import json
    return json.loads(exc.body)


def wait_for(predicate, timeout: float = 20, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def live_pods(kube: FakeKube, selector: str = "") -> list[dict]:
    return [p for p in kube.list("pods", selector=selector) if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


# objects and errors ------------------------------------------------------------------------------


def test_create_fills_defaults_and_read_404_409_are_status_objects(kube, api):
    apps, _ = api
    created = apps.create_namespaced_deployment(NS, deployment())
    assert created.metadata.generation == 1 and created.metadata.uid and int(created.metadata.resource_version) > 0
    assert created.spec.strategy.type == "RollingUpdate" and created.spec.revision_history_limit == 10
    tpl = created.spec.template.spec
    assert (tpl.restart_policy, tpl.termination_grace_period_seconds, tpl.dns_policy) == ("Always", 30, "ClusterFirst")
    c = tpl.containers[0]
    assert (c.termination_message_policy, c.image_pull_policy) == ("File", "IfNotPresent")
    assert apps.read_namespaced_deployment("d", NS).metadata.uid == created.metadata.uid
    with pytest.raises(ApiException) as raised:
        apps.read_namespaced_deployment("nope", NS)
    assert raised.value.status == 404
    assert status(raised.value) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": 'deployments.apps "nope" not found', "reason": "NotFound",
                                    "code": 404, "details": {"name": "nope", "kind": "deployments", "group": "apps"}}
    with pytest.raises(ApiException) as raised:
        apps.create_namespaced_deployment(NS, deployment())
    assert raised.value.status == 409 and status(raised.value)["reason"] == "AlreadyExists"
    assert status(raised.value)["message"] == 'deployments.apps "d" already exists'


@pytest.mark.parametrize("change, field", [
    (lambda d: d["spec"]["template"]["metadata"].update(labels={"app": "other"}), "spec.template.metadata.labels"),
    (lambda d: d["metadata"].update(name="Not_A_Name"), "metadata.name"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
        volumeMounts=[{"name": "missing", "mountPath": "/x"}]), "spec.template.spec.containers[0].volumeMounts[0].name"),
    (lambda d: d["spec"]["template"]["spec"].update(restartPolicy="Never"), "spec.template.spec.restartPolicy"),
    (lambda d: d["spec"].update(replicas=-1), "spec.replicas"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
        env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]),
     "spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath"),
])
def test_invalid_deployments_are_422_with_the_field(kube, api, change, field):
    body = deployment()
    change(body)
    with pytest.raises(ApiException) as raised:
        api[0].create_namespaced_deployment(NS, body)
    s = status(raised.value)
    assert raised.value.status == 422 and s["reason"] == "Invalid" and s["details"]["kind"] == "Deployment"
    assert field in [c["field"] for c in s["details"]["causes"]], s
    assert s["message"].startswith(f'Deployment.apps "{body["metadata"]["name"]}" is invalid: ')
    assert kube.get("deployments", body["metadata"]["name"]) is None


def test_scale_moves_generation_and_resource_version_and_checks_preconditions(kube, api):
    apps, _ = api
    d = apps.create_namespaced_deployment(NS, deployment(replicas=0))
    scale = apps.read_namespaced_deployment_scale("d", NS)
    assert (scale.spec.replicas, scale.status.selector) == (0, "app=d")
    rv = int(scale.metadata.resource_version)
    s2 = apps.patch_namespaced_deployment_scale("d", NS, {"spec": {"replicas": 2}})
    assert s2.spec.replicas == 2 and int(s2.metadata.resource_version) > rv
    assert kube.get("deployments", "d")["metadata"]["generation"] == d.metadata.generation + 1
    same = kube.get("deployments", "d")
    s3 = apps.patch_namespaced_deployment_scale("d", NS, {"spec": {"replicas": 2}})  # changes nothing
    assert s3.metadata.resource_version == same["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as raised:
        apps.patch_namespaced_deployment_scale("d", NS, {"metadata": {"resourceVersion": str(rv)},
                                                         "spec": {"replicas": 1}})
    assert raised.value.status == 409 and status(raised.value)["reason"] == "Conflict"
    assert "the object has been modified" in status(raised.value)["message"]
    with pytest.raises(ApiException) as raised:
        apps.patch_namespaced_deployment_scale("d", NS, {"spec": {"replicas": -1}})
    assert raised.value.status == 422
    with pytest.raises(ApiException) as raised:
        apps.patch_namespaced_deployment_scale("nope", NS, {"spec": {"replicas": 1}})
    assert raised.value.status == 404


def test_resource_versions_are_one_increasing_counter(kube, api):
    apps, core = api
    a = int(apps.create_namespaced_deployment(NS, deployment("a", replicas=0)).metadata.resource_version)
    s = int(core.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
            .metadata.resource_version)
    b = int(apps.create_namespaced_deployment(NS, deployment("b", replicas=0)).metadata.resource_version)
    assert a < s < b


def test_secrets_create_replace_and_validation(kube, api):
    _, core = api
    s = core.create_namespaced_secret(NS, {"metadata": {"name": "m"}, "type": "kubernetes.io/tls",
                                           "data": {"tls.crt": base64.b64encode(b"C").decode(),
                                                    "tls.key": base64.b64encode(b"K").decode()}})
    assert s.type == "kubernetes.io/tls"
    r = core.replace_namespaced_secret("m", NS, {"metadata": {"name": "m"}, "type": "kubernetes.io/tls",
                                                 "stringData": {"tls.crt": "C2", "tls.key": "K2", "ca.crt": "A"}})
    assert int(r.metadata.resource_version) > int(s.metadata.resource_version) and r.metadata.uid == s.metadata.uid
    assert base64.b64decode(kube.get("secrets", "m")["data"]["tls.crt"]) == b"C2"
    for body, code in (({"metadata": {"name": "m"}, "type": "Opaque", "data": {}}, 422),      # type is immutable
                       ({"metadata": {"name": "m", "resourceVersion": "1"}, "type": "kubernetes.io/tls",
                         "stringData": {"tls.crt": "x", "tls.key": "y"}}, 409)):
        with pytest.raises(ApiException) as raised:
            core.replace_namespaced_secret("m", NS, body)
        assert raised.value.status == code
    for bad in ({"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x"}},
                {"metadata": {"name": "t"}, "data": {"k": "not base64!"}},
                {"metadata": {"name": "t"}, "data": {"bad/key": "eA=="}}):
        with pytest.raises(ApiException) as raised:
            core.create_namespaced_secret(NS, bad)
        assert raised.value.status == 422 and status(raised.value)["details"]["kind"] == "Secret"
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_secret(NS, {"metadata": {"name": "m"}, "stringData": {"a": "b"}})
    assert raised.value.status == 409 and status(raised.value)["message"] == 'secrets "m" already exists'
    with pytest.raises(ApiException) as raised:
        core.replace_namespaced_secret("gone", NS, {"metadata": {"name": "gone"}})
    assert raised.value.status == 404


def test_http_errors_for_what_is_not_served(kube):
    base = f"{kube.url}/apis/apps/v1/namespaces/{NS}/deployments"
    r = requests.get(f"{kube.url}/api/v1/namespaces/{NS}/configmaps")
    assert r.status_code == 404 and r.json()["reason"] == "NotFound"
    r = requests.put(f"{base}/d", json={})
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    requests.post(base, json=deployment(replicas=0)).raise_for_status()
    r = requests.patch(f"{base}/d/scale", data='[{"op":"replace"}]',
                       headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"
    r = requests.get(f"{kube.url}/api/v1/namespaces/{NS}/pods?watch=1")
    assert r.status_code == 400
    r = requests.get(f"{kube.url}/api/v1/namespaces/{NS}/pods?labelSelector=app+in+(a,b)")
    assert r.status_code == 400


def test_rbac_refuses_what_no_rule_allows_with_the_api_servers_message(tmp_path):
    rules = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create"]},
             {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    with FakeKube(namespace=NS, rules=rules, user="system:serviceaccount:t:sa", workdir=tmp_path) as kube:
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=kube.url))
        apps, core = kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client)
        apps.create_namespaced_deployment(NS, deployment(replicas=0))
        core.list_namespaced_pod(NS)
        with pytest.raises(ApiException) as raised:
            apps.patch_namespaced_deployment_scale("d", NS, {"spec": {"replicas": 1}})
        assert raised.value.status == 403 and status(raised.value)["message"] == (
            'deployments.apps "d" is forbidden: User "system:serviceaccount:t:sa" cannot patch resource '
            '"deployments/scale" in API group "apps" in the namespace "t"')
        with pytest.raises(ApiException) as raised:
            apps.list_namespaced_deployment(NS)
        assert raised.value.status == 403 and status(raised.value)["message"].startswith(
            "deployments.apps is forbidden: ")
        assert kube.get("deployments", "d")["spec"]["replicas"] == 0
        assert [(r.verb, r.resource, r.code) for r in kube.requests] == [
            ("create", "deployments", 201), ("list", "pods", 200), ("patch", "deployments/scale", 403),
            ("list", "deployments", 403)]
        client.close()


def test_patches_and_selectors_helpers():
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}, strategic=False) \
        == {"a": {"c": 2, "d": 3}, "l": [2]}
    with pytest.raises(Exception):
        merge_patch({}, {"spec": {"containers": []}}, strategic=True)  # list merge keys: not implemented
    assert parse_selector("a=b, c!=d,e,!f") == [("a", "=", "b"), ("c", "!=", "d"), ("e", "exists", ""),
                                               ("f", "!", "")]


# controllers ----------------------------------------------------------------------------------------


def test_pods_are_named_owned_and_labelled_like_a_replicasets(kube, api):
    apps, core = api
    apps.create_namespaced_deployment(NS, deployment(replicas=2))
    pods = wait_for(lambda: len(live_pods(kube)) == 2 and live_pods(kube), what="two pods")
    for p in pods:
        h = p["metadata"]["labels"]["pod-template-hash"]
        assert re.fullmatch(rf"d-{h}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", p["metadata"]["name"])
        [owner] = p["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("ReplicaSet", f"d-{h}", True)
    assert [p.metadata.name for p in core.list_namespaced_pod(NS, label_selector="app=d").items] == \
        sorted(p["metadata"]["name"] for p in pods)
    assert core.list_namespaced_pod(NS, label_selector="app!=d").items == []
    assert len(core.list_namespaced_pod(NS, label_selector="pod-template-hash").items) == 2
    wait_for(lambda: (kube.get("deployments", "d")["status"].get("readyReplicas") == 2), what="ready replicas")
    st = kube.get("deployments", "d")["status"]
    assert st["replicas"] == 2 and st["observedGeneration"] == 1


def test_pod_patch_may_change_metadata_only(kube, api):
    apps, core = api
    apps.create_namespaced_deployment(NS, deployment())
    [pod] = wait_for(lambda: live_pods(kube), what="a pod")
    name = pod["metadata"]["name"]
    out = core.patch_namespaced_pod(name, NS, {"metadata": {"annotations": {"x": "1"}}})
    assert out.metadata.annotations["x"] == "1"
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_pod(name, NS, {"spec": {"activeDeadlineSeconds": 5}})
    assert raised.value.status == 422 and "pod updates may not change fields" in status(raised.value)["message"]
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_pod("nope", NS, {"metadata": {"annotations": {"x": "1"}}})
    assert raised.value.status == 404 and status(raised.value)["message"] == 'pods "nope" not found'


def test_scale_down_removes_the_lowest_deletion_cost_but_not_ready_pods_first(kube, api):
    apps, core = api
    apps.create_namespaced_deployment(NS, deployment(replicas=3))
    pods = wait_for(lambda: len([p for p in live_pods(kube) if ready(p)]) == 3 and live_pods(kube), what="3 ready")
    names = sorted(p["metadata"]["name"] for p in pods)
    # without costs the newest goes; with a cost the cheapest goes
    core.patch_namespaced_pod(names[1], NS, {"metadata": {"annotations": {
        "controller.kubernetes.io/pod-deletion-cost": "-100"}}})
    apps.patch_namespaced_deployment_scale("d", NS, {"spec": {"replicas": 2}})
    assert {p["metadata"]["name"] for p in live_pods(kube)} == set(names) - {names[1]}
    # readiness ranks before cost: a crashed (not ready) pod goes before a cheaper ready one
    kube.backoff_scale = 100.0  # keep it in CrashLoopBackOff
    crashed, cheap = sorted(set(names) - {names[1]})
    os.kill(kube.pids(crashed)["c"], signal.SIGKILL)
    wait_for(lambda: not ready(kube.get("pods", crashed)), what="the crashed pod to be not ready")
    core.patch_namespaced_pod(cheap, NS, {"metadata": {"annotations": {
        "controller.kubernetes.io/pod-deletion-cost": "-2147483648"}}})
    apps.patch_namespaced_deployment_scale("d", NS, {"spec": {"replicas": 1}})
    assert [p["metadata"]["name"] for p in live_pods(kube)] == [cheap]


def test_background_delete_collects_the_pods(kube, api):
    apps, _ = api
    apps.create_namespaced_deployment(NS, deployment(replicas=2))
    wait_for(lambda: len(live_pods(kube)) == 2, what="two pods")
    out = apps.delete_namespaced_deployment("d", NS, propagation_policy="Background")
    out = out if isinstance(out, dict) else out.to_dict()
    assert out["status"] == "Success"
    assert kube.get("deployments", "d") is None
    wait_for(lambda: not kube.list("pods"), what="the pods to be collected")


# the kubelet ----------------------------------------------------------------------------------------


def test_containers_run_with_expanded_env_downward_api_and_local_volumes(kube, api, tmp_path):
    apps, core = api
    core.create_namespaced_secret(NS, {"metadata": {"name": "sec"}, "stringData": {"key": "s3cret"}})
    (kube.claims["data"] / "sub").mkdir()
    (kube.claims["data"] / "sub" / "file").write_text("from the claim")
    # written whole, then renamed: the reader waits for the name, and must not read it half-written
    writer = ("import os,time; open('/shared/w.tmp','w').write(os.environ['WHO']); "
              "os.rename('/shared/w.tmp', '/shared/w'); time.sleep(60)")
    reader = ("import os,sys,time\n"
              "while not os.path.exists('/shared/w'): time.sleep(0.05)\n"
              "print(sys.argv[1:], os.environ['COMBO'], open('/shared/w').read(), open('/sec/key').read(),"
              " oct(os.stat('/sec/key').st_mode & 0o777), open('/mnt/file').read(), os.getcwd(), flush=True)\n"
              "time.sleep(60)")
    body = deployment(volumes=[{"name": "shared", "emptyDir": {}}, {"name": "sec", "secret": {"secretName": "sec",
                                                                                                "defaultMode": 0o400}},
                               {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}}])
    pod_spec = body["spec"]["template"]["spec"]
    pod_spec["containers"] = [
        {"name": "w", "image": IMAGE, "command": ["python", "-c", writer],
         "env": [{"name": "WHO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
         "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
        {"name": "r", "image": IMAGE, "command": ["python", "-c", reader], "args": ["$(IP)", "$$(IP)", "$(NOPE)"],
         "workingDir": "/mnt",
         "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "COMBO", "value": "ip=$(IP)"}],
         "volumeMounts": [{"name": "shared", "mountPath": "/shared"}, {"name": "sec", "mountPath": "/sec"},
                          {"name": "claim", "mountPath": "/mnt", "subPath": "sub"}]}]
    apps.create_namespaced_deployment(NS, body)
    [pod] = wait_for(lambda: live_pods(kube), what="a pod")
    name = pod["metadata"]["name"]
    log = wait_for(lambda: "from the claim" in kube.logs(name) and kube.logs(name), what="the reader's output")
    assert f"['127.0.0.1', '$(IP)', '$(NOPE)'] ip=127.0.0.1 {name} s3cret 0o400 from the claim " \
           f"{kube.claims['data'] / 'sub'}" in log
    got = wait_for(lambda: ready(kube.get("pods", name)) and kube.get("pods", name), what="ready")
    assert got["status"]["phase"] == "Running" and got["status"]["podIP"] == "127.0.0.1"
    assert [c["name"] for c in got["status"]["containerStatuses"]] == ["w", "r"]


def test_a_crashing_container_restarts_with_back_off_and_logs_in_its_message(kube, api):
    apps, _ = api
    apps.create_namespaced_deployment(NS, deployment(
        command="import sys; print('model.bin is missing', file=sys.stderr); sys.exit(3)",
        container={"terminationMessagePolicy": "FallbackToLogsOnError"}))

    def restarted():
        pods = live_pods(kube)
        cs = pods and pods[0]["status"].get("containerStatuses")
        return cs and cs[0]["restartCount"] >= 2 and cs[0]

    cs = wait_for(restarted, what="two restarts")
    term = cs["lastState"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error") and "model.bin is missing" in term["message"]
    assert cs["ready"] is False
    wait_for(lambda: (live_pods(kube)[0]["status"]["containerStatuses"][0]["state"].get("waiting") or {})
             .get("reason") == "CrashLoopBackOff", what="CrashLoopBackOff")


def test_an_unknown_image_is_err_image_pull_then_back_off_and_the_pod_stays_pending(kube, api):
    apps, _ = api
    apps.create_namespaced_deployment(NS, deployment(container={"image": "nowhere/missing:1"}))
    seen = set()

    def backed_off():
        pods = live_pods(kube)
        cs = pods and pods[0]["status"].get("containerStatuses")
        if cs:
            seen.add(cs[0]["state"].get("waiting", {}).get("reason"))
        return "ImagePullBackOff" in seen

    wait_for(backed_off, what="ImagePullBackOff")
    assert "ErrImagePull" in seen and live_pods(kube)[0]["status"]["phase"] == "Pending"


def test_termination_runs_pre_stop_then_sigterm_then_sigkill_after_the_grace(kube, api, tmp_path):
    apps, _ = api
    marker = tmp_path / "prestop"
    trap = ("import signal,sys,time,os\n"
            f"def bye(*a): print('TERM after prestop:', os.path.exists({str(marker)!r}), flush=True); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "time.sleep(60)")
    stubborn = "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    body = deployment(terminationGracePeriodSeconds=2)
    body["spec"]["template"]["spec"]["containers"] = [
        {"name": "a", "image": IMAGE, "command": ["python", "-c", trap],
         "lifecycle": {"preStop": {"exec": {"command": ["python", "-c", f"open({str(marker)!r},'w')"]}}}},
        {"name": "b", "image": IMAGE, "command": ["python", "-c", stubborn]}]
    apps.create_namespaced_deployment(NS, body)
    [pod] = wait_for(lambda: [p for p in live_pods(kube) if ready(p)], what="a ready pod")
    name = pod["metadata"]["name"]
    pids = kube.pids(name)
    time.sleep(0.3)
    t0 = time.monotonic()
    apps.patch_namespaced_deployment_scale("d", NS, {"spec": {"replicas": 0}})
    deleting = kube.get("pods", name)
    assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["deletionGracePeriodSeconds"] == 2
    log_a = wait_for(lambda: "TERM" in kube.logs(name) and kube.logs(name), what="container a's SIGTERM")
    assert "TERM after prestop: True" in log_a
    wait_for(lambda: kube.get("pods", name) is None, what="the pod to go")
    assert time.monotonic() - t0 >= 1.5  # b ignored SIGTERM: it was killed at the end of the grace period
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
