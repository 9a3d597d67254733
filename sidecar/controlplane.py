"""``algomesh up``: the control plane in one process, on embedded defaults.

Two gRPC ports. The public one (``--port``, 7700) serves clients: the ingress
(algomesh.v1.Mesh: a sidecar with no runner) and the registry (algomesh.v1.Registry),
both behind API keys, plus health and reflection. The mesh port (ephemeral) serves the
registry to sidecars, who prove who they are with mesh certificates. A local launcher
starts algorithm instances on their first call; the scheduler (scheduler.py) pre-starts
what a call will need, stops idle instances and adds instances under load.
SIGINT/SIGTERM stop everything.

On its first start (no keys in the store) it creates an admin key and prints it once.
``--insecure`` turns keys and mesh certificates off, loudly.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from algomesh import _wire
from algomesh._errors import error
from algomesh.registry.artifacts import ArtifactStore
from algomesh.registry.keys import ANYONE, Principal, authenticate as verify_key, credential_of
from algomesh.registry.service import MESH_METHODS, Registry, RegistryServicer, registry_handler
from algomesh.registry.store import PASSING, open_store
from algomesh.registry.resolve import owner_of
from algomesh.registry.view import RegistryView
from algomesh.v1 import data_pb2_grpc, registry_pb2, traces_pb2, traces_pb2_grpc

from .blobs import BlobStore, DataServicer, client_access, sidecar_access
from .dashboard import Dashboard
from .edges import CallGraph
from .prestart import PreStarter
from .launcher import LocalLauncher
from .scheduler import Scheduler
from .meshtls import CA_LIFETIME, CONTROL_PLANE, MeshCA, MeshTransport, peer_identity
from .prober import HealthProber
from .route import Directory, Location, Router, location_from
from .auth import authenticate
from .server import MESH_SERVICE, mesh_handler, new_server
from .socketdir import SocketDir, sweep as sweep_socket_dirs
from .stack import ingress_stack
from .measure import MeshMetrics
from .metrics import serve_metrics
from .traces import TRACE_SERVICE, StoreExporter, TraceStore, TracesServicer, collector_handler
from .tracing import span_pipeline, tracer_provider

log = logging.getLogger("algomesh.up")

REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
TRACES_SERVICE = traces_pb2.DESCRIPTOR.services_by_name["Traces"].full_name


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "algomesh"


@dataclass(frozen=True)
class UpConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = _wire.DEFAULT_PORT
    registry_url: str = ""        # default: sqlite in data_dir ($ALGOMESH_REGISTRY)
    health_interval: float = 1.0  # seconds between health probes of each instance
    max_payload: int = 10 * 1024 * 1024  # bytes in one unary call
    max_stream: int = 64 * 1024 ** 3     # bytes in one streamed call, counted as they pass
    insecure: bool = False        # no API keys, no mesh certificates
    cert_lifetime: float = 24 * 3600.0  # seconds an instance's mesh certificate is valid
    trace_retention: float = 24 * 3600.0  # seconds spans are kept
    trace_max_spans: int = 200_000
    prestart_threshold: float = 0.5  # pre-start B when at least this share of A's calls call B (> 1: never)
    scale_interval: float = 1.0   # seconds between the scheduler's looks at every instance
    scale_up_after: float = 3.0   # seconds calls must queue before an instance is added
    max_instances: int = 256      # instances of all algorithms together on this machine
    memory_reserve_mb: int | None = None  # memory kept free when adding instances (None: 10%, >= 512 MiB)
    cache_mb: float | None = None  # a deterministic instance's result cache (None: $ALGOMESH_CACHE_MB, else 64)
    launcher: str = "local"       # "local" (subprocesses) or "kubernetes" (a Deployment per version)
    mesh_port: int = 0            # the sidecars' port (0: any free one; fixed for a Kubernetes Service)
    kubernetes: tuple[tuple[str, object], ...] = ()  # make_kubernetes_launcher's settings, from --k8s-*
    http_port: int | None = None  # dashboard and /metrics; None: the gRPC port + 1 (0 if that is 0)
    new_admin_key: bool = False   # print a new admin key even if keys exist

    @property
    def store_url(self) -> str:
        return self.registry_url or f"sqlite:///{self.data_dir / 'registry.db'}"


async def serve(cfg: UpConfig, stop: asyncio.Event, *, announce=print) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(cfg.store_url)
    await asyncio.to_thread(store.clear_instances)  # the previous run's instances died with it
    artifacts = ArtifactStore(cfg.data_dir / "artifacts")
    registry = Registry(store, artifacts, instance_ttl=3 * cfg.health_interval)
    view = RegistryView(store)
    await view.start()
    registry.view = view
    # Unix socket paths are limited to ~107 bytes, so sockets live in a short temp dir;
    # those of meshes that were killed before they could remove theirs go first.
    if swept := await asyncio.to_thread(sweep_socket_dirs):
        log.info("removed %d socket folders of meshes no longer running", len(swept))
    sockets = SocketDir()
    socket_dir = sockets.path

    # The call graph (caller -> callee edges, decayed; the scheduler's memory) learns from every span stored.
    graph = CallGraph(cfg.data_dir / "edges.db")
    traces = TraceStore(cfg.data_dir / "traces.db", retention=cfg.trace_retention, max_spans=cfg.trace_max_spans,
                        observers=[graph.observe])
    # the ingress's spans (lean, spans.py) and the SDK's for what the control plane does around calls
    ingress_spans = span_pipeline("algomesh-ingress", [lambda request, _spans: traces.add(request)], named_by_env=True)
    provider = tracer_provider("algomesh-ingress", exporters=[StoreExporter(traces)], named_by_env=True)
    server, health = new_server([MESH_SERVICE, REGISTRY_SERVICE, TRACES_SERVICE, _wire.DATA_SERVICE])
    try:
        port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    except RuntimeError:
        port = 0
    if port == 0:
        view.stop()
        store.close()
        sockets.close()
        raise SystemExit(f"error: algomesh up: cannot listen on {cfg.host}:{cfg.port} "
                         "(is another mesh running? pick another --port)")
    address = f"{cfg.host}:{port}"
    # The mesh CA: made afresh on every start, its key only in this process's memory.
    # The control plane's own certificate lasts as long as the CA: it holds the CA's key anyway.
    ca = None if cfg.insecure else MeshCA(lifetime=cfg.cert_lifetime)
    transport = MeshTransport(ca.issue(CONTROL_PLANE, lifetime=CA_LIFETIME) if ca else None)
    mesh_server, mesh_health = new_server([REGISTRY_SERVICE, TRACE_SERVICE, _wire.DATA_SERVICE])
    mesh_port = transport.listen(mesh_server, f"{cfg.host}:{cfg.mesh_port}")
    mesh_address = f"{cfg.host}:{mesh_port}"

    def identify_client(context) -> Principal:
        if cfg.insecure:
            return ANYONE
        return verify_key(credential_of(context.invocation_metadata()), view.keys)

    def identify_sidecar(context) -> Principal:
        """A sidecar is the algorithm its mesh certificate names."""
        if cfg.insecure:
            return ANYONE
        identity = peer_identity(context) or ""
        name, _, version = identity.rpartition("@")
        if not name or not version:
            raise error("UNAUTHENTICATED", "the mesh port answers only sidecars with a mesh certificate")
        return Principal(owner=owner_of(name), algorithm=identity)

    def failing(instance_id: str) -> bool:
        return any(i.id == instance_id and i.state != PASSING for i in view.instances)

    if cfg.launcher == "kubernetes":  # imported only here: the kubernetes client is an optional extra
        from .kubernetes_launcher import make_kubernetes_launcher
        k8s = dict(cfg.kubernetes)
        launcher = make_kubernetes_launcher(
            registry=registry, registry_address=str(k8s.pop("registry_address", "") or mesh_address),
            artifacts=artifacts, failing=failing, max_payload=cfg.max_payload, max_stream=cfg.max_stream,
            issue=ca.issue if ca else None,
            tracer=provider.get_tracer("algomesh"), max_total=cfg.max_instances, cache_mb=cfg.cache_mb, **k8s)
        await launcher.start()  # a previous run's pods go
    else:
        launcher = LocalLauncher(registry=registry, registry_address=mesh_address, artifacts=artifacts,
                                 socket_dir=socket_dir, log_dir=cfg.data_dir / "logs", failing=failing,
                                 max_payload=cfg.max_payload, max_stream=cfg.max_stream,
                                 issue=ca.issue if ca else None,
                                 tracer=provider.get_tracer("algomesh"), max_total=cfg.max_instances,
                                 cache_mb=cfg.cache_mb, memory_reserve=None if cfg.memory_reserve_mb is None
                                 else cfg.memory_reserve_mb << 20)

    def issue(identity: str, lifetime: float) -> tuple[bytes, bytes, bytes]:
        c = ca.issue(identity, lifetime)
        return c.ca, c.cert, c.key

    metrics = MeshMetrics()

    def version_of(name: str, version: str) -> registry_pb2.VersionInfo | None:
        return next((i for i in view.versions if i.manifest.name == name and i.manifest.version == version), None)

    prestarts = metrics.registry.counter("algomesh_prestarts", "Instances started before they were asked for.",
                                         ("algorithm", "version"))
    prestarter = PreStarter(graph, launcher, version_of, threshold=cfg.prestart_threshold,
                            on_prestart=lambda n, v: prestarts.labels(n, v).inc())
    launcher.on_start = prestarter.follow  # whatever starts an instance starts its followers too
    idle_stops = metrics.registry.counter("algomesh_idle_stops", "Instances stopped after their idle time.",
                                          ("algorithm", "version"))
    scale_ups = metrics.registry.counter("algomesh_scale_ups", "Instances added because calls queued.",
                                         ("algorithm", "version"))
    scheduler = Scheduler(launcher, view, interval=cfg.scale_interval, scale_up_after=cfg.scale_up_after,
                          on_stop=lambda r: idle_stops.labels(r.name, r.version).inc(),
                          on_scale_up=lambda n, v: scale_ups.labels(n, v).inc())

    servicer = RegistryServicer(registry, view, identify_client, launcher.ensure, launcher.scale,
                                issue=issue if ca else None, reserved=(CONTROL_PLANE,), mesh_ca=ca.ca_pem.decode() if ca else "")
    mesh_servicer = RegistryServicer(registry, view, identify_sidecar, launcher.ensure, launcher.scale)

    async def locate(target: str, requester: str) -> Location:
        return location_from(await servicer.locate(target, requester))

    # The ingress routes from the control plane's own view, refreshed on every change.
    # A call through the ingress to a running algorithm starts its followers that are not.
    directory = Directory(locate, on_route=lambda loc: prestarter.called(loc.name, loc.version))
    view.on_change(lambda: directory.table.apply(view.snapshot()))
    directory.table.apply(view.snapshot())
    router = Router(directory, transport=transport)

    server.add_generic_rpc_handlers((registry_handler(servicer),))
    mesh_server.add_generic_rpc_handlers((registry_handler(mesh_servicer, only=MESH_METHODS),))
    metrics.registry.gauge("algomesh_instances", "Instances, by health state (the registry's view).",
                           ("algorithm", "version", "state"), collect=lambda: _instance_counts(view))
    ingress = ingress_stack(router, max_payload=cfg.max_payload, max_stream=cfg.max_stream,
                            authenticate=authenticate(None if cfg.insecure else lambda: view.keys),
                            tracer=ingress_spans.tracer, metrics=metrics)
    traces_pb2_grpc.add_TracesServicer_to_server(TracesServicer(traces, identify_client), server)
    # data:// objects: clients on the public port, algorithms (through their sidecars) on the mesh port
    blobs = BlobStore(cfg.data_dir / "blobs")
    data_pb2_grpc.add_DataServicer_to_server(DataServicer(blobs, lambda c: client_access(identify_client(c))), server)
    data_pb2_grpc.add_DataServicer_to_server(DataServicer(
        blobs, lambda c: sidecar_access(identify_sidecar(c), c.invocation_metadata())), mesh_server)
    mesh_server.add_generic_rpc_handlers((collector_handler(traces),))
    server.add_generic_rpc_handlers((mesh_handler(ingress, surface="ingress"),))
    await server.start()
    await mesh_server.start()
    http_port = cfg.http_port if cfg.http_port is not None else (port + 1 if cfg.port else 0)
    # the dashboard's page and JSON API, next to /metrics (its API wants a token made per start)
    dashboard = Dashboard(traces=traces, view=view, launcher=launcher, address=address, insecure=cfg.insecure,
                          learned=graph.edges, prestart_threshold=cfg.prestart_threshold)
    try:
        http_server, http_port = await serve_metrics(metrics.registry, cfg.host, http_port,
                                                     extra_routes=dashboard.routes())
    except OSError as exc:
        await server.stop(None)
        await mesh_server.stop(None)
        view.stop()
        store.close()
        raise SystemExit(f"error: algomesh up: cannot serve HTTP on {cfg.host}:{http_port} ({exc.strerror}); "
                         "pick another --http-port")
    for h in (health, mesh_health):
        await h.serving()
        await h.view(None)
    view.on_change(lambda: asyncio.ensure_future(health.view(view.stale)))
    view.on_change(lambda: asyncio.ensure_future(mesh_health.view(view.stale)))
    admin_key = None
    if not cfg.insecure and (cfg.new_admin_key or not view.keys):
        admin_key, _ = await registry.create_key("admin", admin=True, data="write")
    prober = asyncio.ensure_future(HealthProber(store, cfg.health_interval, transport).run())
    scheduling = asyncio.ensure_future(scheduler.run())
    # Instances are replaced at 2/3 of their certificate's lifetime, well before it expires.
    rotation = asyncio.ensure_future(launcher.rotate(every=cfg.cert_lifetime * 2 / 3)) if ca else None
    announce(f"algomesh up: listening on {address}")
    announce(f"  dashboard {dashboard.url(cfg.host, http_port)}")
    announce(f"  metrics   http://{cfg.host}:{http_port}/metrics")
    announce(f"  mesh      {mesh_address} (sidecars; {'plain' if cfg.insecure else 'mTLS, mesh CA made at start'})")
    if cfg.insecure:
        print(f"WARNING: --insecure: no API keys and no mesh certificates. Anyone who can reach "
              f"{address} or {mesh_address} can call, publish, scale and impersonate algorithms.",
              file=sys.stderr)
        announce("  security  OFF (--insecure)")
    elif admin_key:
        announce(f"  admin key {admin_key}")
        announce("            shown once: keep it (export ALGOMESH_API_KEY=...); "
                 "`algomesh up --new-admin-key` makes another")
    else:
        announce("  security  API keys (the admin key was printed on the first start)")
    announce(f"  launcher  {cfg.launcher}")
    announce(f"  registry  {cfg.store_url}")
    announce(f"  data      {cfg.data_dir}")
    announce(f"  logs      {cfg.data_dir / 'logs'}")
    announce("  Ctrl-C to stop")
    sys.stdout.flush()

    await stop.wait()

    log.info("stopping")
    prober.cancel()
    scheduling.cancel()
    await scheduler.close()
    if rotation is not None:
        rotation.cancel()
    await health.not_serving()
    await mesh_health.not_serving()
    await launcher.stop_all()       # while the server still answers their deregistration
    http_server.close()
    await server.stop(grace=2)
    await mesh_server.stop(grace=1)
    await router.close()
    ingress_spans.shutdown()  # flush the last spans into the store
    provider.shutdown()
    traces.close()
    graph.close()
    view.stop()
    store.close()
    sockets.close()


def _instance_counts(view: RegistryView) -> list[tuple[tuple[str, str, str], int]]:
    counts: dict[tuple[str, str, str], int] = {}
    for inst in view.instances:
        key = (inst.algorithm, inst.version, inst.state)
        counts[key] = counts.get(key, 0) + 1
    return list(counts.items())


async def main(cfg: UpConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(cfg, stop)


def run(cfg: UpConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # On uvloop, as every sidecar: the ingress is on the path of every call that does not
    # go direct, and spends about 6 % less CPU per call there than on asyncio's own loop
    # (python -m bench.cpu mesh3_async: 847-862 against 909-917 µs per call). A hang once
    # blamed on uvloop was the router closing a dead instance's channel under calls still
    # running on it (route.py, rescue.py).
    import uvloop

    uvloop.run(main(cfg))
