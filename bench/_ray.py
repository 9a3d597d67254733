"""Ray Serve beside algomesh: the same three no-op stages, composed with DeploymentHandles.

    Stage1 (ingress: HTTP or a handle call) --handle--> Stage2 --handle--> Stage3

Each stage is an ``async def __call__`` deployment (Ray's defaults otherwise:
max_ongoing_requests 5, one replica); Stage1 reads an HTTP request's body or takes the
bytes a handle call passes, and every stage answers what the next one answered, so the
100 bytes go through all three and back.

This file is an agent process: ``python bench/_ray.py --config default|throughput``
starts a Ray cluster of its own on 127.0.0.1 (``ray.init(address="local")``; 4 logical
CPUs so the three replicas, one CPU each by default, fit on this 2-core machine; usage
statistics off), runs the chain, prints ``http HOST:PORT`` (Serve's HTTP proxy; with
``throughput``, ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` in the environment of the whole
cluster, which turns on direct ingress, so the address is the first replica's own HTTP
server, and gRPC between replicas), then answers commands on stdin, one JSON object a line:

    {"cmd": "check"}                      one handle call; is the answer the payload?
    {"cmd": "seq", "n": N}                N sequential handle calls: their latencies (us)
    {"cmd": "flood", "c": C, "s": S}      C callers through the handle for S seconds

each with one ``result {json}`` line, measured from this process (the Ray driver, which a
handle call needs). HTTP calls come from the benchmark's own client.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAYLOAD = bytes(range(100))
APP = "chain"
THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# no phoning home from a benchmark; Ray's own logs stay in its session folder
BASE_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}


def available() -> str | None:
    """None if Ray Serve can run here, else why not."""
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as exc:
        return f"Ray Serve is not installed ({exc}); pip install -e '.[bench]'"
    return None


def version() -> str | None:
    try:
        import ray
        return ray.__version__
    except ImportError:
        return None


def build_app():
    from ray import serve
    from starlette.requests import Request

    @serve.deployment
    class Stage3:
        async def __call__(self, data: bytes) -> bytes:
            return data

    @serve.deployment
    class Stage2:
        def __init__(self, nxt) -> None:
            self.nxt = nxt

        async def __call__(self, data: bytes) -> bytes:
            return await self.nxt.remote(data)

    @serve.deployment
    class Stage1:
        def __init__(self, nxt) -> None:
            self.nxt = nxt

        async def __call__(self, request) -> bytes:
            data = await request.body() if isinstance(request, Request) else request
            return await self.nxt.remote(data)

    return Stage1.bind(Stage2.bind(Stage3.bind()))


def http_address(controller, proxy_port: int) -> str:
    """Where HTTP goes in: the target Serve publishes for the app (the first replica's own
    server under direct ingress, else the proxy), on loopback."""
    import ray

    for group in ray.get(controller.get_target_groups.remote()):
        if getattr(group.protocol, "value", group.protocol) == "HTTP" and group.targets:
            return f"127.0.0.1:{group.targets[0].port}"
    return f"127.0.0.1:{proxy_port}"


async def agent(a: argparse.Namespace) -> None:
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    sys.path.insert(0, str(HERE.parent))
    from bench._load import flood, sequential

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=4,
             object_store_memory=128 * 1024 * 1024, log_to_driver=False, _temp_dir=a.temp_dir)
    serve.start(http_options={"host": "127.0.0.1", "port": a.http_port})
    handle = serve.run(build_app(), name=APP, route_prefix="/")
    print(f"http {http_address(_get_global_client()._controller, a.http_port)}", flush=True)

    async def one() -> bytes:
        return await handle.remote(PAYLOAD)

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        t0 = time.perf_counter()
        if cmd["cmd"] == "check":
            got = await asyncio.wait_for(one(), cmd.get("timeout", 60))
            out = {"ok": got == PAYLOAD, "got": repr(got[:200])}
        elif cmd["cmd"] == "seq":
            out = {"latencies_us": await sequential(one, cmd["n"])}
        elif cmd["cmd"] == "flood":
            done, elapsed = await flood(one, cmd["c"], cmd["s"])
            out = {"done": done, "elapsed": elapsed}
        elif cmd["cmd"] == "quit":
            break
        else:
            out = {"error": f"unknown command {cmd['cmd']!r}"}
        out["took"] = time.perf_counter() - t0
        print("result " + json.dumps(out), flush=True)
    serve.shutdown()
    ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=("default", "throughput"), required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--temp-dir", required=True, help="Ray's session folder (short: it holds sockets)")
    a = p.parse_args(argv)
    if a.config == "throughput" and os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") != "1":
        p.error("--config throughput needs RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in the environment "
                "(Serve reads it at import, in every process of the cluster)")
    asyncio.run(agent(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
