"""What one algomesh hop costs, next to a bare gRPC proxy hop on the same machine.

One run measures a call to a no-op stage through four paths, with the same client code
for all (grpc.aio on uvloop, raw bytes on ``/algomesh.v1.Mesh/Call``, a 100-byte payload
in a serialized ``CallRequest`` of content type BINARY, metadata
``algomesh-target: bench/noop``):

    echo               client -> echo                     a bare grpc.aio server: the floor
    proxy->echo        client -> proxy -> echo            one bare forwarding hop
    proxy->proxy->echo client -> proxy -> proxy -> echo   two bare hops: as many processes as the mesh
    mesh               client -> ingress -> sidecar -> runner   (``algomesh up`` + bench/noop)

The echo and proxy servers are bench/_bare.py (raw-bytes generic handlers, one persistent
upstream channel per proxy; ``python -m bench`` uses the same); the mesh is
``algomesh up --port 0`` on a temporary data dir with ``bench/noop`` published into it.
Every server is a subprocess bound to 127.0.0.1 and stopped (SIGTERM, then SIGKILL) when
the run ends, however it ends.

For each path: p50/p99 of N sequential calls (after a warm-up; the mesh's cold start is
reported apart), and calls/s with C calls in flight for a few seconds. The paths take
turns in a few interleaved rounds, so background load hits all four alike. Then:

    bare proxy hop     = p50(proxy->echo) - p50(echo)
    mesh per-hop       = (p50(mesh) - p50(echo)) / 2    the mesh forwards twice: ingress, sidecar
    mesh hop / bare proxy hop                           1.0 = a mesh hop costs what a bare proxy costs
    p50(mesh) / p50(proxy->proxy->echo)                 same process count: > 1 is the mesh's
    throughput(mesh) / throughput(proxy->proxy->echo)   overhead (deadline, routing, runner) in
                                                        latency, < 1 its cost in calls/s
The mesh's runner does more than the echo (it decodes the payload, runs apply() on a worker
thread, encodes the result); that work is counted into the mesh's two hops. The client and
all servers share the machine's cores, so absolute figures depend on the machine (and on
anything else running on it); the ratios are the point.

    python bench/hop.py [--calls N] [--concurrency C] [--seconds S] [--rounds R] [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import uvloop

from algomesh.v1 import payload_pb2

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # `python bench/hop.py`: make `bench` importable
    sys.path.insert(0, str(HERE.parent))
from bench import _bare  # noqa: E402
from bench._procs import Child, stop_all  # noqa: E402

HOST = "127.0.0.1"
SERVICE, METHOD = "algomesh.v1.Mesh", "Call"
CALL_PATH = f"/{SERVICE}/{METHOD}"
TARGET = "bench/noop"
METADATA = (("algomesh-target", TARGET),)
PAYLOAD = bytes(range(100))
REQUEST = payload_pb2.CallRequest(
    input=payload_pb2.Payload(content_type=payload_pb2.CONTENT_TYPE_BINARY, data=PAYLOAD)).SerializeToString()
TIMEOUT = 30.0
CHANNEL_OPTIONS = (("grpc.enable_retries", 0),)
PATHS = (("echo", "echo"), ("proxy_echo", "proxy->echo"),
         ("proxy_proxy_echo", "proxy->proxy->echo"), ("mesh", "mesh"))

# The bare servers (bench/_bare.py) and the child processes (bench/_procs.py) are shared
# with `python -m bench`, the side-by-side benchmark this one is a quick subset of.


def serve_args(kind: str, upstream: str = "") -> list[str]:
    return _bare.serve_args(kind, upstream)


# ----------------------------------------------------------------------- measuring


class Probe:
    """One path under test: a channel to its first server and the one call all paths make."""

    def __init__(self, key: str, label: str, address: str) -> None:
        self.key, self.label, self.address = key, label, address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.call = self.channel.unary_unary(CALL_PATH)
        self.latencies: list[float] = []
        self.done, self.elapsed, self.first_call = 0, 0.0, 0.0

    async def one(self, timeout: float = TIMEOUT) -> bytes:
        return await self.call(REQUEST, metadata=METADATA, timeout=timeout)

    async def warm(self, calls: int, concurrency: int, seconds: float) -> None:
        t0 = time.perf_counter()
        first = payload_pb2.CallResponse.FromString(await self.one(120.0))  # the mesh's cold start
        self.first_call = time.perf_counter() - t0
        if first.output.data != PAYLOAD or first.output.content_type != payload_pb2.CONTENT_TYPE_BINARY:
            raise RuntimeError(f"{self.label} at {self.address} did not echo the payload: {first.output!r}")
        for _ in range(calls):
            await self.one()
        await self.flood(concurrency, seconds)

    async def sequential(self, calls: int) -> None:
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            await self.one()
            self.latencies.append((time.perf_counter_ns() - t0) / 1000)

    async def flood(self, concurrency: int, seconds: float) -> tuple[int, float]:
        """``concurrency`` callers, each calling back to back for ``seconds``."""
        done = 0

        async def caller(end: float) -> None:
            nonlocal done
            while time.perf_counter() < end:
                await self.one()
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller(t0 + seconds) for _ in range(concurrency)))
        return done, time.perf_counter() - t0

    def figures(self, concurrency: int) -> dict:
        q = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return {"address": self.address, "calls": len(self.latencies), "p50_us": q[49], "p99_us": q[98],
                "mean_us": statistics.fmean(self.latencies), "min_us": min(self.latencies),
                "first_call_s": self.first_call, "concurrency": concurrency,
                "throughput_calls": self.done, "throughput_seconds": self.elapsed,
                "calls_per_s": self.done / self.elapsed}


async def measure_all(addresses: dict[str, str], a: argparse.Namespace) -> dict[str, dict]:
    """Warm every path, then measure them in interleaved rounds, so that a burst of
    background load on this machine smears over all four paths instead of one."""
    paths = [Probe(key, label, addresses[key]) for key, label in PATHS]
    try:
        for p in paths:
            await p.warm(a.warmup, a.concurrency, min(0.5, a.seconds / 4))
        for r in range(a.rounds):
            print(f"hop: round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
            share = a.calls // a.rounds + (r < a.calls % a.rounds)
            for p in paths:
                await p.sequential(share)
            for p in paths:
                done, elapsed = await p.flood(a.concurrency, a.seconds / a.rounds)
                p.done, p.elapsed = p.done + done, p.elapsed + elapsed
    finally:
        for p in paths:
            await p.channel.close()
    return {p.key: p.figures(a.concurrency) for p in paths}


def ratios(r: dict[str, dict]) -> dict[str, float]:
    p50 = {k: v["p50_us"] for k, v in r.items()}
    bare_hop = p50["proxy_echo"] - p50["echo"]
    mesh_hop = (p50["mesh"] - p50["echo"]) / 2
    return {
        "bare_proxy_hop_us": bare_hop,
        "second_bare_hop_us": p50["proxy_proxy_echo"] - p50["proxy_echo"],
        "mesh_per_hop_us": mesh_hop,
        "mesh_hop_over_bare_proxy_hop": mesh_hop / bare_hop if bare_hop > 0 else float("nan"),
        "p50_mesh_over_proxy_proxy_echo": p50["mesh"] / p50["proxy_proxy_echo"],
        "throughput_mesh_over_proxy_proxy_echo":
            r["mesh"]["calls_per_s"] / r["proxy_proxy_echo"]["calls_per_s"],
    }


def report(r: dict[str, dict], x: dict[str, float], a: argparse.Namespace) -> None:
    print(f"algomesh hop benchmark: 100-byte BINARY payload; per path {a.calls} sequential calls "
          f"(after {a.warmup} warm-up) and {a.seconds:g}s with {a.concurrency} in flight, "
          f"in {a.rounds} interleaved rounds; {os.cpu_count()} CPUs")
    print(f"{'path':<20} {'p50 us':>9} {'p99 us':>9} {'mean us':>9} {f'calls/s @{a.concurrency}':>14}")
    for key, label in PATHS:
        v = r[key]
        print(f"{label:<20} {v['p50_us']:9.0f} {v['p99_us']:9.0f} {v['mean_us']:9.0f} {v['calls_per_s']:14.0f}")
    print(f"(mesh first call, a cold start: {r['mesh']['first_call_s']:.2f}s; not measured above)\n")
    rows = (("bare proxy hop     = p50(proxy->echo) - p50(echo)", "bare_proxy_hop_us"),
            ("  (second bare hop = p50(proxy->proxy->echo) - p50(proxy->echo))", "second_bare_hop_us"),
            ("mesh per-hop       = (p50(mesh) - p50(echo)) / 2", "mesh_per_hop_us"),
            ("mesh hop / bare proxy hop", "mesh_hop_over_bare_proxy_hop"),
            ("p50(mesh) / p50(proxy->proxy->echo)", "p50_mesh_over_proxy_proxy_echo"),
            ("throughput(mesh) / throughput(proxy->proxy->echo)", "throughput_mesh_over_proxy_proxy_echo"))
    for label, key in rows:
        value = f"{x[key]:8.0f} us" if key.endswith("_us") else f"{x[key]:8.2f}x"
        print(f"{label:<66} {value}")


# --------------------------------------------------------------------------- main


def run(a: argparse.Namespace) -> int:
    def on_sigterm(signum, frame):  # so the `finally` below stops the children
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    children: list[Child] = []
    data_dir = Path(tempfile.mkdtemp(prefix="algomesh-bench-"))
    up_log = data_dir / "up.log"
    try:
        with open(up_log, "wb") as log:
            up = Child("algomesh up", ["-m", "algomesh.cli", "up", "--data-dir", str(data_dir),
                                       "--host", HOST, "--port", "0"], stderr=log)
        children.append(up)
        echo = Child("echo", serve_args("echo"))
        children.append(echo)
        addresses = {"echo": f"{HOST}:{echo.expect('port', 30)}"}
        p1 = Child("proxy", serve_args("proxy", addresses["echo"]))
        children.append(p1)
        addresses["proxy_echo"] = f"{HOST}:{p1.expect('port', 30)}"
        p2 = Child("proxy2", serve_args("proxy", addresses["proxy_echo"]))
        children.append(p2)
        addresses["proxy_proxy_echo"] = f"{HOST}:{p2.expect('port', 30)}"
        try:
            addresses["mesh"] = up.expect("algomesh up: listening on", 60)
            key = up.expect("  admin key", 10)
            # Every path sends the same metadata, the API key included (security stays on).
            global METADATA
            METADATA = (("algomesh-target", TARGET), ("authorization", f"Simple {key}"))
            pub = subprocess.run([sys.executable, "-m", "algomesh.cli", "--address", addresses["mesh"],
                                  "--api-key", key, "publish", str(HERE / "noop")],
                                 capture_output=True, text=True, timeout=120)
            if pub.returncode != 0:
                raise RuntimeError(f"publish failed: {pub.stderr.strip() or pub.stdout.strip()}")
            print(f"hop: {pub.stdout.strip()} (mesh at {addresses['mesh']})", file=sys.stderr)
            results = uvloop.run(measure_all(addresses, a))
        except Exception:
            print(f"hop: the mesh's log ({up_log}) ends:\n" + up_log.read_text(errors="replace")[-3000:],
                  file=sys.stderr)
            raise
    finally:
        stop_all(children, who="hop")
        shutil.rmtree(data_dir, ignore_errors=True)

    x = ratios(results)
    report(results, x, a)
    out = Path(a.json) if a.json else HERE / "results" / "hop.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "hop", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "config": {"calls": a.calls, "warmup": a.warmup, "concurrency": a.concurrency,
                      "seconds": a.seconds, "rounds": a.rounds, "quick": a.quick,
                      "payload_bytes": len(PAYLOAD)},
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "grpcio": grpc.__version__, "uvloop": uvloop.__version__},
           "paths": results, "ratios": x}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/hop.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, help="sequential calls per path (default 2000; 300 with --quick)")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight for throughput (default 32)")
    p.add_argument("--seconds", type=float,
                   help="throughput run per path, over all rounds (default 3; 1 with --quick)")
    p.add_argument("--rounds", type=int, help="interleaved rounds the calls and seconds are split over "
                   "(default 4; 2 with --quick)")
    p.add_argument("--warmup", type=int, help="warm-up calls per path (default 200; 50 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke mode for CI: a few hundred calls per path")
    p.add_argument("--json", help="where to write the figures (default bench/results/hop.json)")
    p.add_argument("--serve", choices=("echo", "proxy"), help=argparse.SUPPRESS)
    p.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve:
        uvloop.run(_bare.serve(a.serve, a.upstream))
        return 0
    a.calls = a.calls or (300 if a.quick else 2000)
    a.seconds = a.seconds or (1.0 if a.quick else 3.0)
    a.rounds = a.rounds or (2 if a.quick else 4)
    a.warmup = a.warmup if a.warmup is not None else (50 if a.quick else 200)
    if a.rounds < 1 or a.calls < 2 * a.rounds or a.concurrency < 1 or a.seconds <= 0:
        p.error("need --rounds >= 1, --calls >= 2 per round, --concurrency >= 1, --seconds > 0")
    try:
        return run(a)
    except KeyboardInterrupt:
        print("hop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
