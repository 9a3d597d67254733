"""The sidecar's configuration, parsed once from its command line (the launcher's flags).

Kept apart from sidecar.py, and light to import, so ``python -m algomesh.sidecar`` can
start the runner process first, before it loads the rest of itself: the runner's own
start (an interpreter, its imports, the algorithm's load()) then overlaps the sidecar's.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from algomesh import _wire

from .runtimes import RunnerSpec


def _cache_mb(text: str) -> float:
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not 0 <= mb <= 1 << 20:
        raise argparse.ArgumentTypeError(f"a number of MiB between 0 and 1048576, not {text!r}")
    return mb


@dataclass(frozen=True)
class SidecarConfig:
    instance_id: str
    algorithm: str          # owner/name
    version: str            # exact
    runtime: str
    entrypoint: str
    path: str               # the algorithm's folder
    registry: str           # control plane address
    socket_dir: str
    concurrency: int = 1
    max_in_flight: int = 64
    max_payload: int = 10 * 1024 * 1024
    max_stream: int = 64 * 1024 ** 3  # a streamed call's bytes, counted as they pass (limits.py)
    max_depth: int = 32
    can_call: tuple[str, ...] = ()
    callability: str = "public"
    host: str = "127.0.0.1"
    insecure: bool = False  # plain connections, identities on trust (algomesh up --insecure)
    cert_dir: str = ""      # read the mesh certificate from DIR/{ca.crt,tls.crt,tls.key}, not stdin
    external_runner: bool = False  # the runner serves runner_socket itself (another container)
    deterministic: bool = False    # the manifest's deterministic: results are cached (cache.py)
    cache_mb: float = 64.0         # the result cache's bound in MiB, this instance (0: none)
    isolation: str = "process"     # "shared": the (Python) algorithm runs in this process (embedded.py)

    @property
    def runner_socket(self) -> str:
        return os.path.join(self.socket_dir, f"{self.instance_id}.runner.sock")

    @property
    def outbound_socket(self) -> str:
        return os.path.join(self.socket_dir, f"{self.instance_id}.out.sock")

    @classmethod
    def from_argv(cls, argv: list[str] | None = None) -> "SidecarConfig":
        p = argparse.ArgumentParser(prog="python -m algomesh.sidecar", description="one sidecar: the only way into and out of one algorithm instance")
        for name in ("instance-id", "algorithm", "version", "runtime", "entrypoint", "path",
                     "registry", "socket-dir"):
            p.add_argument(f"--{name}", required=True)
        p.add_argument("--concurrency", type=int, default=1)
        p.add_argument("--max-in-flight", type=int, default=64)
        p.add_argument("--max-payload", type=int, default=10 * 1024 * 1024, help="bytes")
        p.add_argument("--max-stream", type=int, default=64 * 1024 ** 3, help="bytes in one streamed call")
        p.add_argument("--max-depth", type=int, default=32, help="algorithms in one pipeline")
        p.add_argument("--can-call", action="append", default=[], help="a glob it may pipe to (repeatable)")
        p.add_argument("--callability", choices=("public", "private"), default="public")
        p.add_argument("--host", default="127.0.0.1")
        certs = p.add_mutually_exclusive_group()
        certs.add_argument("--insecure", action="store_true", help="no mesh certificate (else read from stdin)")
        certs.add_argument("--cert-dir", default="", help="read the mesh certificate from ca.crt, tls.crt and "
                           "tls.key in this folder (a mounted Secret) instead of stdin")
        p.add_argument("--external-runner", action="store_true",
                       help="do not start the runner: connect to the one serving the runner socket")
        p.add_argument("--deterministic", action="store_true",
                       help="the algorithm is deterministic: cache its results (docs/caching.md)")
        p.add_argument("--cache-mb", type=_cache_mb, default=64.0,
                       help="bound of the result cache of a deterministic algorithm, MiB (default 64; 0: none)")
        p.add_argument("--isolation", choices=("process", "shared"), default="process",
                       help="shared: load the (Python) algorithm into this process, no runner process")
        a = p.parse_args(argv)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(a).items()})

    def runner_spec(self) -> RunnerSpec:
        return RunnerSpec(socket=self.runner_socket, path=self.path, entrypoint=self.entrypoint,
                          concurrency=self.concurrency)

    def runner_env(self) -> dict[str, str]:
        """What the runner process is told, besides its spec (docs/runners.md)."""
        return {_wire.ENV_ADDRESS: f"unix://{self.outbound_socket}",
                "ALGOMESH_ALGORITHM": self.algorithm, "ALGOMESH_VERSION": self.version}
