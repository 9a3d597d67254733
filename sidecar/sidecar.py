"""One sidecar: the only way into and out of one algorithm instance.

    inbound   TCP, algomesh.v1.Mesh/Call from the ingress and other sidecars -> runner
    outbound  Unix socket, Mesh/Call from the algorithm's own pipes -> the mesh,
              and Data (its data:// reads and writes) -> the control plane's blob store

It starts the runner, registers the instance with the registry once the algorithm has
loaded, and withdraws it on shutdown (SIGTERM/SIGINT). Its mesh certificate and key
arrive on stdin from the launcher (JSON, see meshtls.py) unless ``--insecure``; it reads
them before the runner starts, so the algorithm never sees them. In a Kubernetes pod
(``--cert-dir DIR``) they are files of a Secret mounted into the sidecar's container
only (``ca.crt``, ``tls.crt``, ``tls.key``), and ``--external-runner`` says the runner is
the pod's other container, serving the socket in ``--socket-dir`` (a shared emptyDir)
itself: the sidecar connects to it instead of starting it.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

import grpc

from algomesh import _wire
from algomesh._errors import error
from algomesh.v1 import registry_pb2, registry_pb2_grpc

from algomesh.registry.resolve import owner_of

from .cache import ResultCache
from .data_proxy import data_proxy
from .lineage import Contexts
from .meshtls import MeshCredentials, MeshTransport
from .permit import may_answer, may_pipe
from .route import Directory, Router, follow_views, remote_locator
from .config import SidecarConfig
from .procs import Child
from .runner import RunnerProcess
from .server import MESH_SERVICE, mesh_handler, new_server
from .auth import authenticate
from .stack import Call, Handler, Reply, ingress_stack, inbound_stack, outbound_stack
from .measure import MeshMetrics
from .metrics import serve_metrics
from .tracing import span_pipeline

log = logging.getLogger("algomesh.sidecar")


async def serve(cfg: SidecarConfig, stop: asyncio.Event, creds: MeshCredentials | None = None,
                early: Child | None = None) -> None:
    """``early``: the runner process, if ``python -m algomesh.sidecar`` started it already."""
    me = f"{cfg.algorithm}/{cfg.version}"
    transport = MeshTransport(creds)
    registry_channel = transport.channel(cfg.registry, options=_wire.CHANNEL_OPTIONS)
    registry = registry_pb2_grpc.RegistryStub(registry_channel)

    if cfg.isolation == "shared":  # the algorithm in this process (embedded.py)
        from .embedded import EmbeddedRunner
        runner = EmbeddedRunner(algorithm=cfg.algorithm, version=cfg.version, path=cfg.path,
                                entrypoint=cfg.entrypoint, concurrency=cfg.concurrency,
                                outbound_socket=cfg.outbound_socket)
    else:
        runner = RunnerProcess(
            algorithm=cfg.algorithm, version=cfg.version, runtime=cfg.runtime,
            spec=cfg.runner_spec(), env=cfg.runner_env(), external=cfg.external_runner, early=early)
    owner = owner_of(cfg.algorithm)  # its owner's private versions resolve for it
    directory = Directory(remote_locator(registry_channel), requester=owner)
    identity = f"{cfg.algorithm}@{cfg.version}"
    router = Router(directory, caller=identity, transport=transport)
    contexts = Contexts()  # the calls running in this instance, shared by both surfaces
    spans = span_pipeline(identity, [transport.span_sender(cfg.registry)])
    tracer = spans.tracer
    metrics = MeshMetrics()
    cache = ResultCache(int(cfg.cache_mb * 2**20)) if cfg.deterministic and cfg.cache_mb > 0 else None
    if cache is not None:
        metrics.watch_cache(cache, cfg.algorithm, cfg.version)

    inbound, inbound_health = new_server([MESH_SERVICE])
    answer = inbound_stack(
        runner, contexts=contexts, me=identity, max_payload=cfg.max_payload, max_stream=cfg.max_stream,
        max_in_flight=cfg.max_in_flight,
        permit=may_answer(cfg.algorithm, cfg.callability, directory.table.manifest), tracer=tracer,
        metrics=metrics, cache=cache)
    inbound.add_generic_rpc_handlers((mesh_handler(
        answer, surface="inbound", own_target=me, peer=transport.identify if transport.secure else None),))
    port = transport.listen(inbound, f"{cfg.host}:0")

    # Clients' calls straight to this instance (the SDK's direct routing): what the ingress
    # does for them (the API key, the call's root span), then the same inbound stack.
    clients, clients_health = new_server([MESH_SERVICE])
    clients.add_generic_rpc_handlers((mesh_handler(ingress_stack(
        direct_to(answer, cfg.algorithm, cfg.version), max_payload=cfg.max_payload, max_stream=cfg.max_stream,
        authenticate=authenticate(None if cfg.insecure else lambda: directory.table.keys),
        tracer=tracer, metrics=metrics, surface="direct"), surface="ingress"),))
    client_port = transport.listen_clients(clients, f"{cfg.host}:0")

    Path(cfg.outbound_socket).unlink(missing_ok=True)
    outbound, outbound_health = new_server([MESH_SERVICE, _wire.DATA_SERVICE])
    pipes = outbound_stack(
        router, contexts=contexts, me=identity, max_payload=cfg.max_payload, max_stream=cfg.max_stream,
        max_depth=cfg.max_depth,
        permit=may_pipe(cfg.algorithm, cfg.can_call), tracer=tracer, metrics=metrics)
    outbound.add_generic_rpc_handlers((mesh_handler(pipes, surface="outbound"),))
    if cfg.isolation == "shared":  # the algorithm's own pipes reach the stack in-process (sdk/_local.py)
        from algomesh import _local
        from .embedded import local_pipes, local_streams
        _local.install(f"unix://{cfg.outbound_socket}", local_pipes(pipes), asyncio.get_running_loop(),
                       local_streams(pipes))
    outbound.add_generic_rpc_handlers((data_proxy(registry_channel, contexts),))  # data:// for the algorithm
    outbound.add_insecure_port(f"unix://{cfg.outbound_socket}")

    await inbound.start()
    await clients.start()
    await outbound.start()
    metrics_server, metrics_port = await serve_metrics(metrics.registry, cfg.host, 0)
    await outbound_health.serving()

    async def view_health(stale: str | None) -> None:
        await inbound_health.view(stale)
        await outbound_health.view(stale)

    await view_health(None)
    views = asyncio.ensure_future(follow_views(registry_channel, directory.table, view_health))
    await runner.start()
    # Register (and so take calls) only once the registry's view is here: the permission
    # layer reads callers' manifests and the direct port the API keys from it; without it,
    # every pipe to a fresh instance would be refused (bounded: a stale view serves on).
    waited = time.monotonic() + 10
    while not directory.has_view and time.monotonic() < waited:
        await asyncio.sleep(0.01)

    instance = registry_pb2.Instance(
        id=cfg.instance_id, algorithm=cfg.algorithm, version=cfg.version,
        address=f"{cfg.host}:{port}", state="passing", started_at=int(time.time()),
        client_address=f"{cfg.host}:{client_port}",
        metrics_address=f"{cfg.host}:{metrics_port}")
    await registry.RegisterInstance(registry_pb2.RegisterInstanceRequest(instance=instance), timeout=30)
    await inbound_health.serving()
    await clients_health.serving()
    log.info("%s ready at %s (instance %s; metrics http://%s/metrics)", me, instance.address, cfg.instance_id,
             instance.metrics_address)

    await stop.wait()

    log.info("%s stopping", me)
    views.cancel()
    await inbound_health.not_serving()
    await clients_health.not_serving()
    try:
        await registry.DeregisterInstance(registry_pb2.DeregisterInstanceRequest(id=cfg.instance_id), timeout=2)
    except grpc.aio.AioRpcError as exc:  # the control plane may be gone already
        log.warning("could not deregister: %s", exc.code().name)
    metrics_server.close()
    await inbound.stop(grace=2)
    await clients.stop(grace=2)
    await outbound.stop(grace=1)
    await runner.stop()
    await asyncio.to_thread(spans.shutdown)  # send the last spans
    await router.close()
    await registry_channel.close()
    Path(cfg.outbound_socket).unlink(missing_ok=True)


def direct_to(answer: Handler, algorithm: str, version: str) -> Handler:
    """A client's call straight to this instance names it exactly (owner/name/version, as
    Locate told the SDK); anything else belongs to another instance: INSTANCE_UNAVAILABLE,
    on which the SDK asks again."""
    exact = f"{algorithm}/{version}"

    async def handle(call: Call) -> Reply:
        if call.target != exact:
            raise error("INSTANCE_UNAVAILABLE", f"this instance serves {exact}, not {call.target}: "
                        "ask the registry (Locate) where that runs")
        call.target = ""
        return await answer(call)
    return handle


def read_cert_dir(folder: str) -> MeshCredentials:
    """A mesh certificate from a mounted Secret's files (Kubernetes' TLS Secret key names)."""
    try:
        creds = MeshCredentials(*(Path(folder, name).read_bytes() for name in ("ca.crt", "tls.crt", "tls.key")))
        creds.identity  # noqa: B018 - parses tls.crt
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--cert-dir {folder}: cannot read the mesh certificate: {exc}") from None
    return creds


def credentials(cfg: SidecarConfig, stdin: bytes | None) -> MeshCredentials | None:
    """The sidecar's mesh certificate: from --cert-dir, else the bytes the launcher wrote
    on stdin (read before the runner starts, so the algorithm never sees them)."""
    creds = None
    if cfg.cert_dir:
        creds = read_cert_dir(cfg.cert_dir)
    elif not cfg.insecure:
        creds = MeshCredentials.from_bytes(stdin if stdin is not None else sys.stdin.buffer.read())
    if creds is not None and creds.identity != f"{cfg.algorithm}@{cfg.version}":
        raise SystemExit(f"the mesh certificate names {creds.identity}, not {cfg.algorithm}@{cfg.version}")
    return creds


async def main(cfg: SidecarConfig | None = None, *, stdin: bytes | None = None, early: Child | None = None) -> None:
    cfg = cfg or SidecarConfig.from_argv()
    try:
        creds = credentials(cfg, stdin)
    except BaseException:
        if early is not None:
            early.kill()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(cfg, stop, creds, early)
