"""One run of ``python -m bench``: start every path, measure them side by side, stop them.

1. Start, all at once: a bare grpc.aio chain as long as the longest algomesh path (its
   tail serves the shorter floors), a bare A->B->C chain with mutual TLS on every hop (the
   floor with the mesh's transport security), the native proxies' two paths (bench/_native.py),
   one ``algomesh up`` per distinct mesh description, a
   Ray cluster per Ray Serve configuration, ``bentoml serve``. Then publish, and check
   every path answers the payload (a mesh's first call is its cold start, not measured).
2. Warm up each path; record every process's RSS at rest.
3. ``rounds`` rounds: every path's share of the sequential calls, then every path's share
   of the throughput time (``concurrency`` in flight), the order reversed every other
   round, so background load on this shared machine smears over all paths alike.
4. Streams: ``stream_mib`` MiB through each streaming algomesh path and through a bare
   chain of as many processes, in turns, with every process's peak RSS growth.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import _bare, _bentoml, _callers, _native, _procs, _ray
from bench._mesh import MeshServer
from bench._probes import AgentProbe, LocalProbe, Probe, idle_rss, measured_flood
from bench.coldstart import stop_all as stop_meshes
from bench.paths import ABC_PROCESSES, BENTO_PATHS, MESH_PATHS, RAY_PATHS, MeshPath


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dedupe(out: dict[str, int], label: str, pid: int) -> None:
    n, base = 2, label
    while label in out:
        label, n = f"{base} #{n}", n + 1
    out[label] = pid


def ray_procs(agent_pid: int) -> dict[str, int]:
    """The Ray cluster an agent started (not the agent: it is the driver, the handle's client)."""
    out: dict[str, int] = {}
    for pid in _procs.descendants(agent_pid):
        try:
            cmd = _procs.cmdline(pid)
        except OSError:
            continue
        if not cmd:
            continue
        if cmd[0].startswith("ray::"):
            name = cmd[0][5:].split()[0].split(".")[0]
            label = "replica " + name.rsplit(":", 1)[-1] if name.startswith("ServeReplica") else name
        else:
            script = next((c for c in cmd[1:] if c.endswith(".py")), cmd[0])
            label = Path(script).name
        _dedupe(out, label, pid)
    return out


def bento_procs(top: int) -> dict[str, int]:
    out = {"bentoml serve": top}
    for pid in _procs.descendants(top):
        try:
            cmd = _procs.cmdline(pid)
        except OSError:
            continue
        label = f"service {cmd[cmd.index('--service-name') + 1]}" if "--service-name" in cmd else Path(cmd[0]).name
        _dedupe(out, label, pid)
    return out


class StreamProbe:
    """``size`` bytes through one path, each run's seconds and every process's peak RSS growth."""

    def __init__(self, key: str, label: str, run, procs, processes: int) -> None:
        self.key, self.label, self.run, self.procs, self.processes = key, label, run, procs, processes
        self.seconds: list[float] = []
        self.growth: dict[str, int] = {}

    async def once(self, size: int) -> float:
        pids = {"client": os.getpid(), **self.procs()}
        start = {}
        for label, pid in pids.items():
            try:
                _procs.reset_peak(pid)
                start[label] = _procs.rss(pid)
            except OSError:
                pass
        t0 = time.perf_counter()

        def mark() -> None:  # the client is made and warm: the stream starts now
            nonlocal t0
            t0 = time.perf_counter()

        await self.run(size, mark)
        took = time.perf_counter() - t0
        for label, rss in start.items():
            try:
                grown = _procs.peak_rss(pids[label]) - rss
            except OSError:
                continue
            self.growth[label] = max(self.growth.get(label, 0), grown)
        self.seconds.append(took)
        return took

    def result(self, size: int) -> dict:
        med = statistics.median(self.seconds)
        return {"label": self.label, "processes": self.processes, "mib": size / _procs.MiB,
                "seconds": self.seconds, "median_seconds": med, "mib_per_s": size / _procs.MiB / med,
                "rss_growth_mib": {k: v / _procs.MiB for k, v in self.growth.items()},
                "max_rss_growth_mib": max(self.growth.values()) / _procs.MiB}


def floor_credentials(work: Path) -> tuple[dict, Path]:
    """A key and certificate from a mesh CA of the run's own, made as ``algomesh up`` makes
    an instance's, for every server of the mTLS floor and its client (one identity: a
    certificate is checked in the handshake, once per connection, not per call). Written
    to ``work`` (the servers read it), owner-only."""
    from algomesh.sidecar.meshtls import MeshCA

    creds = MeshCA().issue("bench/bare-floor@1.0.0")
    path = work / "bare-tls.json"
    path.touch(mode=0o600)
    path.write_bytes(creds.to_bytes())
    return {"ca": creds.ca, "cert": creds.cert, "key": creds.key}, path


class Run:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.work = Path(tempfile.mkdtemp(prefix="algomesh-bench-"))
        self.children: list[_procs.Child] = []     # bare servers, bentoml
        self.agents: dict[str, _procs.Child] = {}  # Ray config -> agent
        self.meshes: dict[str, MeshServer] = {}    # mesh description key -> server
        self.skipped: dict[str, str] = {}
        self.versions: dict[str, str | None] = {"ray": _ray.version(), "bentoml": None}
        self.probes: list[Probe] = []
        self.dropped: list[Probe] = []  # third-party paths that failed (closed at the end)
        self.streams: list[StreamProbe] = []
        self.bare: list[str] = []
        self.bare_tls: list[str] = []
        self.tls: dict | None = None
        self.left_behind: set[int] = set()
        self.bento = None
        self.native: dict[str, str] = {}  # path key -> entry address (bench/_native.py)

    # ------------------------------------------------------------------ starting

    def start(self) -> None:
        for i, path in enumerate(MESH_PATHS):
            if path.mesh.key() not in self.meshes:
                self.meshes[path.mesh.key()] = MeshServer(f"mesh{len(self.meshes) + 1}", path.mesh, self.work)
        self._start_ray()
        bento = self._start_bentoml()
        longest = max([ABC_PROCESSES, *(p.processes for p in MESH_PATHS)])
        self.bare = _bare.start_chain(longest, self.children)
        log(f"bare grpc.aio chain of {longest} processes up")
        self.tls, creds = floor_credentials(self.work)
        self.bare_tls = _bare.start_chain(ABC_PROCESSES, self.children, tls=str(creds), name="bare-tls")
        log(f"bare grpc.aio chain of {ABC_PROCESSES} processes with mutual TLS up")
        self._start_native(creds)
        for m in self.meshes.values():
            m.start()
            log(f"{m.name}: algomesh up at {m.address}, published {', '.join(m.names)}")
        for config, agent in self.agents.items():
            try:
                addr = agent.expect("http", 240)
            except RuntimeError as exc:
                self._skip_ray(config, self._failed_start(f"the Ray cluster did not start: {exc}",
                                                          self.work / f"ray-{config}.log"))
                continue
            agent.http = addr
            log(f"Ray Serve ({config}) up; HTTP at {addr}")
        if bento is not None:
            child, port = bento
            try:
                _bentoml.wait_ready(child, port)
                log(f"bentoml serve up at 127.0.0.1:{port}")
            except RuntimeError as exc:
                why = self._failed_start(str(exc), self.work / "bentoml.log")
                for p in BENTO_PATHS:
                    self.skipped[p.key] = why
        self.bento = bento

    def _start_native(self, creds: Path) -> None:
        if self.a.no_native:
            self.skipped.update({key: "--no-native" for key in _native.PATHS})
            return
        binary, why = _native.build(log, self.work / "native")
        if binary is None:
            self.skipped.update({key: why for key in _native.PATHS})
            return
        self.native = _native.start(binary, str(creds), self.work / "native", self.children)
        log("native proxies (bench/native_proxy) up: " + ", ".join(f"{k} at {v}" for k, v in self.native.items()))

    def _failed_start(self, what: str, log_path: Path) -> str:
        """A third-party server that did not start: its log's end goes to stderr now (the
        run's folder is removed at the end), its last error into the reason recorded."""
        log(f"{what}; {log_path.name} ends:\n{_procs.log_tail(log_path)}")
        error = _procs.last_error(log_path)
        return f"{what}{f' ({error})' if error else ''}"

    def _start_ray(self) -> None:
        a = self.a
        if a.smoke or a.no_ray:
            for p in RAY_PATHS:
                self.skipped[p.key] = "--smoke" if a.smoke else "--no-ray"
            return
        reason = _ray.available()
        if reason:
            for p in RAY_PATHS:
                self.skipped[p.key] = reason
            return
        for config in dict.fromkeys(p.config for p in RAY_PATHS):
            env = {**os.environ, **_ray.BASE_ENV, **(_ray.THROUGHPUT_ENV if config == "throughput" else {})}
            env.pop("RAY_SERVE_THROUGHPUT_OPTIMIZED", None) if config == "default" else None
            tmp = tempfile.mkdtemp(prefix=f"rb{config[0]}", dir="/tmp")  # short: Ray puts sockets in it
            with open(self.work / f"ray-{config}.log", "wb") as logfile:
                agent = _procs.Child(f"Ray Serve ({config})",
                                     [str(_ray.HERE / "_ray.py"), "--config", config, "--http-port",
                                      str(free_port()), "--temp-dir", tmp], env=env, stderr=logfile)
            agent.tmp = tmp
            self.agents[config] = agent

    def _skip_ray(self, config: str, why: str) -> None:
        for p in RAY_PATHS:
            if p.config == config:
                self.skipped[p.key] = why

    def _start_bentoml(self):
        a = self.a
        if a.smoke or a.no_bentoml:
            for p in BENTO_PATHS:
                self.skipped[p.key] = "--smoke" if a.smoke else "--no-bentoml"
            return None
        python, version, why = _bentoml.ensure(log)
        if python is None:
            for p in BENTO_PATHS:
                self.skipped[p.key] = why
            return None
        self.versions["bentoml"] = version
        port = free_port()
        child = _bentoml.start(python, port, self.work / "bentoml.log")
        self.children.append(child)
        return child, port

    def _make_probes(self, bento) -> None:
        bare = self.bare

        def bare_procs(n: int, chain: str = "bare"):
            pids = {c.name: c.pid for c in self.children if c.name.startswith(f"{chain} ")}
            names = [f"{chain} {'echo' if i == 0 else 'proxy'} {i}" for i in range(n)][::-1]
            labels = [f"proxy {j + 1}" for j in range(n - 1)] + ["echo"]
            return lambda: {label: pids[name] for label, name in zip(labels, names)}

        floors = sorted({1, 2, ABC_PROCESSES, *(p.processes for p in MESH_PATHS)})
        for n in floors:
            label = "bare echo" if n == 1 else f"bare chain, {n} processes" + (
                " (A->B->C)" if n == ABC_PROCESSES else "")
            self.probes.append(LocalProbe(f"bare{n}", label, _callers.GrpcCaller(bare[n - 1]), "bare",
                                          procs=bare_procs(n), processes=n))
        for n in (1, ABC_PROCESSES):  # the floor with mTLS: what the transport security costs by itself
            label = "bare echo, mTLS" if n == 1 else f"bare chain, {n} processes (A->B->C), mTLS"
            self.probes.append(LocalProbe(f"bare_tls{n}", label, _callers.GrpcCaller(self.bare_tls[n - 1], tls=self.tls),
                                          "bare_tls", procs=bare_procs(n, "bare-tls"), processes=n, stages=n))
        for key, address in self.native.items():  # the same with native proxies (no target)
            n = len(_native.ORDER[key])
            self.probes.append(LocalProbe(key, _native.LABELS[key], _callers.GrpcCaller(address, tls=self.tls), "native",
                                          procs=_native.procs(key, self.children), processes=n, stages=3))
        for path in MESH_PATHS:
            server = self.meshes[path.mesh.key()]
            self.probes.append(LocalProbe(path.key, path.label, self._mesh_caller(path, server), "algomesh",
                                          procs=lambda s=server, d=bool(path.client_options.get("direct")):
                                          s.processes(d), processes=path.processes, stages=path.stages,
                                          meta={"target": path.target, "client": path.client,
                                                "client_options": dict(path.client_options),
                                                "mesh": {"algorithms": list(path.mesh.algorithms),
                                                         "manifest": dict(path.mesh.manifest),
                                                         "up_args": list(path.mesh.up_args)}}))
            if path.stream:
                self.streams.append(StreamProbe(
                    f"{path.key}_stream", f"{path.label}, streamed",
                    lambda size, mark, s=server, p=path: _callers.sdk_stream(
                        s.key, s.address, p.target, size, dict(p.client_options), mark=mark),
                    lambda s=server, d=bool(path.client_options.get("direct")): s.processes(d), path.processes))
                n = path.processes
                if not any(s.key == f"bare{n}_stream" for s in self.streams):
                    self.streams.append(StreamProbe(
                        f"bare{n}_stream", f"bare chain, {n} processes, streamed",
                        lambda size, mark, addr=bare[n - 1]: _callers.bare_stream(addr, size, mark=mark),
                        bare_procs(n), n))
                if n == ABC_PROCESSES and not any(s.key == f"bare_tls{n}_stream" for s in self.streams):
                    self.streams.append(StreamProbe(  # the floor with mTLS, as for calls (no target)
                        f"bare_tls{n}_stream", f"bare chain, {n} processes, mTLS, streamed",
                        lambda size, mark, addr=self.bare_tls[n - 1]: _callers.bare_stream(
                            addr, size, tls=self.tls, mark=mark),
                        bare_procs(n, "bare-tls"), n))
        for path in RAY_PATHS:
            agent = self.agents.get(path.config)
            if path.key in self.skipped or agent is None or not hasattr(agent, "http"):
                continue
            procs = (lambda pid=agent.pid: ray_procs(pid))
            if path.via == "http":
                host, port = agent.http.rsplit(":", 1)
                self.probes.append(LocalProbe(path.key, path.label, _callers.HttpCaller(host, int(port)), "ray",
                                              procs=procs, stages=path.stages,
                                              meta={"config": path.config, "via": path.via}))
            else:
                self.probes.append(AgentProbe(path.key, path.label, agent, procs=procs, stages=path.stages,
                                              meta={"config": path.config, "via": path.via}))
        if bento is not None:
            child, port = bento
            for path in BENTO_PATHS:
                if path.key in self.skipped:
                    continue
                caller = _callers.HttpCaller("127.0.0.1", port, "/relay", "application/json", _bentoml.BODY,
                                             _bentoml.TEXT.encode())
                self.probes.append(LocalProbe(path.key, path.label, caller, "bentoml",
                                              procs=lambda pid=child.pid: bento_procs(pid), stages=path.stages))

    def _mesh_caller(self, path: MeshPath, server: MeshServer):
        if path.client == "grpc":
            return _callers.GrpcCaller(server.address, (("algomesh-target", path.target),
                                                        ("authorization", f"Simple {server.key}")))
        if path.client == "sdk":
            return _callers.SdkCaller(server.key, server.address, path.target, dict(path.client_options))
        raise ValueError(f"{path.key}: client must be 'sdk' or 'grpc', not {path.client!r}")

    # ----------------------------------------------------------------- measuring

    async def _guarded(self, p: Probe, phase: str, step) -> None:
        """Runs one step of a path. A failure of our own (algomesh, the bare floor) ends the
        run; Ray Serve or BentoML failing is recorded as that path's result (with what it
        had measured) and the run goes on without it."""
        try:
            await step
        except Exception as exc:  # noqa: BLE001
            if p.kind not in ("ray", "bentoml"):
                raise
            lat = sorted(p.fig.latencies_us or p.warm_latencies_us)
            seen = (f"; before that, {len(lat)} sequential calls: p50 {lat[len(lat) // 2] / 1000:.2f} ms"
                    if lat else "")
            why = _procs.last_error(self.work / ("bentoml.log" if p.kind == "bentoml" else f"ray-{p.meta['config']}.log"))
            self.skipped[p.key] = (f"failed while {phase}: {type(exc).__name__}: {exc}"
                                   f"{f' (its log: {why})' if why else ''}{seen}")
            self.probes.remove(p)
            self.dropped.append(p)
            log(f"{p.label}: {self.skipped[p.key]}")

    async def measure(self) -> None:
        a = self.a
        self._make_probes(self.bento)  # here: gRPC channels belong to the loop they are made in
        for p in list(self.probes):
            t0 = time.perf_counter()
            await self._guarded(p, "checking its answer", p.check(120.0))  # a mesh's cold start
            p.fig.first_call_s = time.perf_counter() - t0
            await self._guarded(p, "warming up", self._warm(p))
        await asyncio.sleep(1.0)
        for p in self.probes:
            idle_rss(p)
        for r in range(a.rounds):
            order = self.probes if r % 2 == 0 else self.probes[::-1]
            log(f"round {r + 1}/{a.rounds}")
            share = a.calls // a.rounds + (r < a.calls % a.rounds)
            for p in list(order):
                await self._guarded(p, f"making sequential calls (round {r + 1})", self._sequential(p, share))
            for p in list(order):
                await self._guarded(p, f"making {a.concurrency} calls at once (round {r + 1})",
                                    measured_flood(p, a.concurrency, a.seconds / a.rounds))
        if self.streams:
            size = int(a.stream_mib * _procs.MiB)
            for s in self.streams:
                await s.run(1 << 20, lambda: None)  # it works, and the path's stream machinery is warm
            for r in range(a.stream_rounds):
                for s in (self.streams if r % 2 == 0 else self.streams[::-1]):
                    took = await s.once(size)
                    log(f"stream round {r + 1}/{a.stream_rounds}: {s.label}: {a.stream_mib:g} MiB in {took:.2f}s")

    async def _warm(self, p: Probe) -> None:
        a = self.a
        p.warm_latencies_us = await p.sequential(a.warmup)
        await p.flood(a.concurrency, min(0.5, a.seconds / 4))
        log(f"{p.label}: answers (first call {p.fig.first_call_s:.2f}s), warmed up")

    async def _sequential(self, p: Probe, calls: int) -> None:
        p.fig.latencies_us += await p.sequential(calls)

    async def close_probes(self) -> None:
        for p in self.probes + self.dropped:
            try:
                await p.close()
            except Exception:  # noqa: BLE001 (closing after a failure: the failure is what matters)
                pass

    # ------------------------------------------------------------------ stopping

    def stop(self) -> None:
        for agent in self.agents.values():
            self.left_behind |= set(_procs.descendants(agent.pid))
            if agent.popen.poll() is None:
                try:
                    agent.send('{"cmd": "quit"}')  # serve.shutdown(), ray.shutdown(): the cluster stops in order
                except OSError:
                    pass
        for agent in self.agents.values():
            try:
                agent.popen.wait(30)
            except Exception:  # noqa: BLE001
                pass
        _procs.stop_all(list(self.agents.values()) + self.children, grace=20)
        stop_meshes(list(m.up for m in self.meshes.values()))
        for pid in self.left_behind:  # a Ray process that outlived its cluster (we started it)
            if _procs.alive(pid):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        for agent in self.agents.values():
            if getattr(agent, "tmp", ""):
                shutil.rmtree(agent.tmp, ignore_errors=True)
            # Ray 2.60 also writes its session folder under /tmp/ray, named after the driver's pid
            for session in Path("/tmp/ray").glob(f"session_*_{agent.pid}"):
                shutil.rmtree(session, ignore_errors=True)
        if self.a.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def logs(self) -> str:
        out = []
        for m in self.meshes.values():
            out.append(f"--- {m.name} (algomesh up) log ends:\n{m.log_tail()}")
        for name in ("ray-default.log", "ray-throughput.log", "bentoml.log"):
            path = self.work / name
            if path.exists():
                out.append(f"--- {name} ends:\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(out)
