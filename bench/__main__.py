"""``python -m bench``: algomesh side by side with the raw gRPC floor, Ray Serve and BentoML.

In one run and one process tree (every server is a child of this process, stopped when it
ends however it ends), with the same 100-byte payload and the same load for every path:

    the floor      a bare grpc.aio echo, and chains of bare grpc.aio forwarding proxies in
                   front of it with as many server processes as each algomesh path (the
                   three-process chain A->B->C among them)
    algomesh       ``algomesh up`` with its production defaults (API keys, mTLS between
                   sidecars, tracing, permission checks): one no-op algorithm (ingress,
                   sidecar, runner: 3 processes), and a three-stage no-op pipeline where
                   stage 1 pipes to stage 2 and 2 to 3 from inside apply (ingress and
                   3 x (sidecar + runner): 7 processes), called with the SDK
    Ray Serve      the same three stages composed with DeploymentHandles, default and
                   RAY_SERVE_THROUGHPUT_OPTIMIZED=1, over HTTP and through a handle
                   (``pip install -e '.[bench]'``; skipped, with the reason, without it)
    BentoML 1.4    the ``bentoml.depends`` chain, over HTTP (its own virtualenv)
    native         the A->B->C chain with mTLS and the pipeline's seven-process shape, with
                   bare native proxies (bench/native_proxy, Rust and tonic) where the
                   sidecars are: what a native sidecar could reach at best (bench/_native.py)
    streaming      --stream-mib MiB through the three-stage pipeline (each stage streams to
                   the next from inside apply) and through a bare chain of as many processes

For each path: sequential p50/p99, calls/s with --concurrency in flight, CPU time per call
of every process (utime + stime over the throughput phase, divided by its calls), RSS of
every process at rest and at its peak under load; then issue 9's ratios, each with its
target and MET / NOT MET, and bench/results/bench.json with every figure. Paths take turns
in interleaved rounds so background load hits all alike. What is measured is declared in
bench/paths.py (a path is a few lines there).

    python -m bench [--smoke] [--no-ray] [--no-bentoml] [--no-native] [--calls N] [--seconds S] [--rounds R]
                    [--stream-mib M] [--json PATH] [--markdown PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path

import grpc
import uvloop

from bench import _callers, _report
from bench._run import Run, log

HERE = Path(__file__).resolve().parent


def machine(versions: dict) -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) * 1024
    except (OSError, StopIteration):
        pass
    import google.protobuf
    import opentelemetry.sdk.version as otel_sdk
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(), "grpcio": grpc.__version__,
            "protobuf": google.protobuf.__version__, "opentelemetry_sdk": otel_sdk.__version__,
            "uvloop": uvloop.__version__, **versions}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(a: argparse.Namespace, argv: list[str]) -> int:
    def on_sigterm(signum, frame):  # so the `finally` below stops the children
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    t_start, load_start = time.monotonic(), load_average()
    log(f"load average at start: {load_start}")
    r = Run(a)
    try:
        try:
            r.start()
            uvloop.run(_measure(r))
        except BaseException:
            print(r.logs(), file=sys.stderr)
            raise
    finally:
        r.stop()
    paths = {p.key: p.result(a.concurrency) for p in r.probes}
    size = int(a.stream_mib * 1024 * 1024)
    streams = {s.key: s.result(size) for s in r.streams}
    doc = {
        "benchmark": "python -m bench",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m bench" + ("" if not argv else " " + shlex.join(argv)),
        "duration_s": time.monotonic() - t_start,
        "load_average": {"start": load_start, "end": load_average()},
        "machine": machine(r.versions),
        "config": {"smoke": a.smoke, "calls": a.calls, "warmup": a.warmup, "concurrency": a.concurrency,
                   "seconds": a.seconds, "rounds": a.rounds, "stream_mib": a.stream_mib,
                   "stream_rounds": a.stream_rounds, "payload_bytes": len(_callers.PAYLOAD)},
        "paths": paths,
        "streams": streams,
        "skipped": r.skipped,
    }
    doc["ratios"] = _report.ratios(paths, streams, r.skipped)
    _report.print_report(doc)
    out = Path(a.json) if a.json else HERE / "results" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n")
    print(f"\nwrote {out} ({doc['duration_s']:.0f}s; load average at end {doc['load_average']['end']})")
    if a.markdown:
        Path(a.markdown).write_text(_report.markdown(doc))
        print(f"wrote {a.markdown}")
    return 0


async def _measure(r: Run) -> None:
    try:
        await r.measure()
    finally:
        await r.close_probes()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="CI mode: no Ray, no BentoML, a few hundred calls, a small stream")
    p.add_argument("--no-ray", action="store_true", help="skip Ray Serve")
    p.add_argument("--no-bentoml", action="store_true", help="skip BentoML")
    p.add_argument("--no-native", action="store_true", help="skip the native proxies (bench/native_proxy, built with cargo)")
    p.add_argument("--calls", type=int, help="sequential calls per path (default 2000; 200 with --smoke)")
    p.add_argument("--warmup", type=int, help="warm-up calls per path (default 200; 20 with --smoke)")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight for throughput (default 32)")
    p.add_argument("--seconds", type=float, help="throughput time per path, over all rounds (default 4; 1 with --smoke)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 4; 2 with --smoke)")
    p.add_argument("--stream-mib", type=float, help="MiB streamed per run (default 100; 8 with --smoke)")
    p.add_argument("--stream-rounds", type=int, help="streamed runs per path (default 2; 1 with --smoke)")
    p.add_argument("--json", help="where to write the figures (default bench/results/bench.json)")
    p.add_argument("--markdown", help="also write the tables as Markdown here (for docs/performance.md)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data dirs)")
    a = p.parse_args(argv)
    a.calls = a.calls or (200 if a.smoke else 2000)
    a.warmup = a.warmup if a.warmup is not None else (20 if a.smoke else 200)
    a.seconds = a.seconds or (1.0 if a.smoke else 4.0)
    a.rounds = a.rounds or (2 if a.smoke else 4)
    a.stream_mib = a.stream_mib or (8.0 if a.smoke else 100.0)
    a.stream_rounds = a.stream_rounds or (1 if a.smoke else 2)
    if a.rounds < 1 or a.calls < 2 * a.rounds or a.concurrency < 1 or a.seconds <= 0 or a.stream_mib <= 0:
        p.error("need --rounds >= 1, --calls >= 2 per round, --concurrency >= 1, --seconds > 0, --stream-mib > 0")
    try:
        return run(a, argv)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
