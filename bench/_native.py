"""The native floor: what the paths would cost if the sidecars were native code.

issue 9's per-hop and Ray targets ask more of a hop than a grpc.aio process spends on
forwarding alone (docs/performance.md). These paths price the other design, a native
sidecar, on the same machine and in the same run: bench/native_proxy is a bare forwarding
proxy in Rust (tonic, raw bytes, one persistent upstream connection per route, mutual TLS
as between sidecars, one thread), and the algorithms stay grpc.aio processes
(bench/_bare.py), as Python algorithms would.

    native3   client -> native proxy -> native proxy -> grpc.aio echo, mTLS on every hop:
              the A->B->C chain with native proxies (the floor with mTLS, natively)
    native7   the three-stage pipeline's shape with native sidecars and grpc.aio runners:
              client -> ingress -> sidecar 1 -> runner 1 -> sidecar 1 -> sidecar 2 ->
              runner 2 -> sidecar 2 -> sidecar 3 -> runner 3 (an echo), 7 processes as
              algomesh's process-isolated pipeline; mTLS on TCP between the native
              processes, plain Unix sockets between a sidecar and its runner, each
              sidecar one process serving its inbound and outbound routes

They forward and nothing else: no keys, permissions, tracing or routing, and a runner is a
bare proxy (it never decodes the payload or runs an apply). So each is a ceiling, not a
design: a native sidecar doing algomesh's work would cost more. The report gives their
per-hop, Ray and A->B->C ratios without targets.

The proxy is built with cargo (``--locked``) into ``$ALGOMESH_BUILD_CACHE/bench-native``
(``algomesh.registry.build.build_cache``: ``~/.cache/algomesh/build`` by default; about a minute the first time, then a second or
two) and run from a copy in the run's folder; without cargo, or if the build fails, both paths
are skipped with the reason, as Ray Serve's are without Ray.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from algomesh.registry.build import build_cache
from bench import _bare, _procs

HERE = Path(__file__).resolve().parent
CRATE = HERE / "native_proxy"
BINARY = "algomesh-bench-native-proxy"
PATHS = ("native3", "native7")


def build(log, into: Path) -> tuple[str | None, str]:
    """(the proxy's path, "") once built and copied into ``into`` (the run's own folder: a
    build from another checkout sharing the cache cannot replace it mid-run), or (None, why
    not)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        return None, "cargo not found (bench/native_proxy is built with the Rust toolchain)"
    target = build_cache() / "bench-native"
    log(f"building bench/native_proxy (cargo, into {target})")
    done = subprocess.run([cargo, "build", "--release", "--locked", "--quiet",
                           "--manifest-path", str(CRATE / "Cargo.toml")],
                          env={**os.environ, "CARGO_TARGET_DIR": str(target)}, capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"cargo build of bench/native_proxy failed: {done.stderr.strip()[-600:]}"
    into.mkdir(parents=True, exist_ok=True)
    return str(shutil.copy2(target / "release" / BINARY, into / BINARY)), ""


def _start(children: list, name: str, args: list[str], timeout: float, program: str = "") -> list[str]:
    child = _procs.Child(name, args, program=program)
    children.append(child)
    return child.expect("port", timeout).split()


def _proxy(children: list, name: str, binary: str, creds: str, routes: list[str], timeout: float) -> list[str]:
    args = ["--tls", creds]
    for route in routes:
        args += ["--route", route]
    return _start(children, name, args, timeout, program=binary)


def start(binary: str, creds: str, sockets: Path, children: list, timeout: float = 30.0) -> dict[str, str]:
    """Both paths' servers; returns each path's entry address. Children are named
    ``native3 ...`` and ``native7 ...`` (``procs`` reads them back)."""
    tcp = f"tls:{_bare.HOST}:0"
    sockets.mkdir(parents=True, exist_ok=True)

    # native3: echo <- proxy <- proxy
    (port,) = _start(children, "native3 echo", _bare.serve_args("echo", tls=creds), timeout)
    for i in (2, 1):
        (port,) = _proxy(children, f"native3 native proxy {i}", binary, creds,
                         [f"{tcp}=tls:{_bare.HOST}:{port}"], timeout)
    entry3 = f"{_bare.HOST}:{port}"

    # native7: built from the last stage back; a sidecar's second route takes its runner's pipes
    def sock(name: str) -> str:
        return f"unix:{sockets / name}"

    _start(children, "native7 runner 3", _bare.serve_args("echo", listen=sock("r3")), timeout)
    nxt = _proxy(children, "native7 native sidecar 3", binary, creds, [f"{tcp}={sock('r3')}"], timeout)[0]
    for n in (2, 1):
        _start(children, f"native7 runner {n}",
               _bare.serve_args("proxy", sock(f"s{n}-out"), listen=sock(f"r{n}")), timeout)
        nxt = _proxy(children, f"native7 native sidecar {n}", binary, creds,
                     [f"{tcp}={sock(f'r{n}')}", f"{sock(f's{n}-out')}=tls:{_bare.HOST}:{nxt}"], timeout)[0]
    (port,) = _proxy(children, "native7 native ingress", binary, creds, [f"{tcp}=tls:{_bare.HOST}:{nxt}"], timeout)
    return {"native3": entry3, "native7": f"{_bare.HOST}:{port}"}


ORDER = {  # each path's processes, in call order, by the label the report gives them
    "native3": ["native proxy 1", "native proxy 2", "echo"],
    "native7": ["native ingress", "native sidecar 1", "runner 1", "native sidecar 2", "runner 2",
                "native sidecar 3", "runner 3"],
}
LABELS = {"native3": "native proxies (tonic), 3 processes (A->B->C), mTLS",
          "native7": "native sidecars (tonic) + grpc.aio runners, 7 processes, mTLS"}


def procs(key: str, children: list):
    """label -> pid of ``key``'s processes, for the probe."""
    pids = {c.name.split(" ", 1)[1]: c.pid for c in children if c.name.startswith(f"{key} ")}
    return lambda: {label: pids[label] for label in ORDER[key]}
