"""What ``python -m bench`` measures: every path as a small declarative description.

An **algomesh path** is a mesh (the algorithm folders published into one ``algomesh up``,
changes to their manifests, extra ``algomesh up`` flags), the algorithm the client calls,
and the client (the SDK's ``algomesh.async_client`` with keyword options, or a raw gRPC
stub that speaks the public wire contract). Paths that name equal meshes share one
``algomesh up``. Adding a variant is a few lines, e.g. the three stages run inside their sidecars and
called straight, not through the ingress (``mesh3_shared_direct`` below)::

    MeshPath("mesh3_shared_direct", "algomesh: 3-stage, shared, direct",
             replace(THREE, manifest={"*": {"isolation": "shared"}}),
             target="bench/stage1", processes=3, stages=3, client_options={"direct": True})

``processes`` is how many server processes one call crosses (the ingress, and per stage a
sidecar and a runner): the floor it is compared with is a bare grpc.aio chain of as many
processes (bench/_bare.py), so "per hop" means the same thing on both sides. Paths with
``stages=3`` are held to the issue's three-stage targets (throughput and p50 against Ray
Serve and the bare three-process chain); ``stream=True`` also streams through the path.

Ray Serve and BentoML paths are described the same way (``RayPath``, ``BentoPath``), and
the bare chains are derived from the algomesh paths' process counts (plus 1, 2 and 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Mesh:
    """One ``algomesh up`` (production defaults: API keys, mTLS between sidecars, tracing,
    permission checks) and the algorithms published into it.

    ``algorithms``: folders, relative to bench/. ``manifest``: changes to their
    ``algomesh.toml``, by folder name (``"*"``: every folder), as TOML tables
    (``{"scaling": {"concurrency": 8}}`` sets one key of ``[scaling]``). ``up_args``:
    extra flags for ``algomesh up``."""
    algorithms: tuple[str, ...]
    manifest: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    up_args: tuple[str, ...] = ()

    def key(self) -> str:
        return repr((self.algorithms, sorted((k, repr(v)) for k, v in self.manifest.items()), self.up_args))


@dataclass(frozen=True)
class MeshPath:
    key: str
    label: str
    mesh: Mesh
    target: str                       # what the client calls, owner/name[/version]
    processes: int                    # server processes one call crosses
    stages: int = 1
    client: str = "sdk"               # "sdk": algomesh.async_client(key, address, **client_options);
    client_options: Mapping[str, Any] = field(default_factory=dict)  # "grpc": a raw grpc.aio stub
    stream: bool = False              # also stream --stream-mib through it
    kind: str = "algomesh"


@dataclass(frozen=True)
class RayPath:
    """Ray Serve: the three no-op stages composed with DeploymentHandles (bench/_ray.py),
    in one Ray cluster per ``config`` ("default", or "throughput": RAY_SERVE_THROUGHPUT_OPTIMIZED=1),
    called over HTTP (the proxy; in the throughput config straight into the first replica,
    Serve's direct ingress) or through a DeploymentHandle from the driver."""
    key: str
    label: str
    config: str
    via: str                          # "http" | "handle"
    stages: int = 3
    kind: str = "ray"


@dataclass(frozen=True)
class BentoPath:
    """BentoML: the three no-op stages chained with ``bentoml.depends`` (bench/bentoml_chain),
    served by ``bentoml serve`` from its own virtualenv, called over HTTP."""
    key: str
    label: str
    stages: int = 3
    kind: str = "bentoml"


ONE = Mesh(algorithms=("noop",))
# stage1 -> stage2 -> stage3, each piping to the next from inside apply (bench/pipeline/)
THREE = Mesh(algorithms=("pipeline/stage1", "pipeline/stage2", "pipeline/stage3"))
# the same with `async def apply` and the async client (bench/pipeline_async/), as Ray's stages are
THREE_ASYNC = Mesh(algorithms=("pipeline_async/stage1", "pipeline_async/stage2", "pipeline_async/stage3"))

# isolation = "shared": each algorithm runs inside its sidecar's process (no runner process,
# pipes handed to the sidecar in-process); with the SDK's direct=True the client calls the
# first stage's sidecar itself, not the ingress (calls and streams alike).
SHARED = {"*": {"isolation": "shared"}}
DIRECT = {"direct": True}

MESH_PATHS: tuple[MeshPath, ...] = (
    MeshPath("mesh1", "algomesh: 1 no-op algorithm", ONE, target="bench/noop", processes=3),
    MeshPath("mesh3", "algomesh: 3-stage pipeline", THREE, target="bench/stage1", processes=7,
             stages=3, stream=True),
    MeshPath("mesh3_async", "algomesh: 3-stage pipeline, async apply", THREE_ASYNC, target="bench/stage1",
             processes=7, stages=3, stream=True),
    MeshPath("mesh1_shared_direct", "algomesh: 1 no-op, shared, direct", replace(ONE, manifest=SHARED),
             target="bench/noop", processes=1, client_options=DIRECT),
    MeshPath("mesh3_shared_direct", "algomesh: 3-stage, shared, direct", replace(THREE, manifest=SHARED),
             target="bench/stage1", processes=3, stages=3, client_options=DIRECT, stream=True),
    # the same with async stages: an async apply's pipes are awaited on its sidecar's own loop
    MeshPath("mesh3_async_shared_direct", "algomesh: 3-stage, async, shared, direct",
             replace(THREE_ASYNC, manifest=SHARED), target="bench/stage1", processes=3, stages=3,
             client_options=DIRECT, stream=True),
)

RAY_PATHS: tuple[RayPath, ...] = (
    RayPath("ray_default_http", "Ray Serve default, HTTP (proxy)", "default", "http"),
    RayPath("ray_default_handle", "Ray Serve default, handle", "default", "handle"),
    RayPath("ray_fast_http", "Ray Serve throughput-opt., HTTP direct", "throughput", "http"),
    RayPath("ray_fast_handle", "Ray Serve throughput-opt., handle", "throughput", "handle"),
)

BENTO_PATHS: tuple[BentoPath, ...] = (
    BentoPath("bentoml_http", "BentoML 1.4 depends, HTTP"),
)

# The bare three-process chain A -> B -> C the issue quotes; it is also one algorithm's floor.
ABC_PROCESSES = 3
