"""What a cold pipeline's first call costs, with the scheduler's pre-start off and on.

A three-stage chain, ``bench/stage1`` -> ``bench/stage2`` -> ``bench/stage3``: each stage
pipes to the next from inside its ``apply()`` (the SDK's ``algomesh.client()``), and each
spends L seconds in ``load()`` (a model that takes a while to load). The folders are
written into a temporary directory at run time, with L in their ``load()``.

One run, one process tree, two meshes side by side (``algomesh up --port 0``, each on a
data dir of its own, security on as in production):

    off   ``algomesh up --prestart-threshold 2``   an edge's share is at most 1: never pre-starts
    on    ``algomesh up``                           the default threshold (0.5)

In both: publish the chain; call stage1 once (the untrained first call, every stage a
cold start) and ``--learn-calls`` more times; wait until the dashboard's call graph
(``/api/graph``, with the token ``algomesh up`` printed) shows both edges of the chain
with every call made so far. Then ``--rounds`` rounds, the two meshes taking turns (the
order alternating) so that background load hits both alike; in each round, per mesh:

    cold   scale every stage to 0 (``client.scale(name, 0)``), wait until ``client.instances()``
           lists none of them, then time one call to stage1 (client -> result, all three stages)
    warm   then ``--warm-calls`` sequential calls to the now warm chain: their median

Figures are medians over the rounds. Per cold call it also records, from the call's spans
(``client.trace``), which hops were marked ``algomesh.cold_start``, and from the control
plane's ``/metrics`` how many instances it pre-started (``algomesh_prestarts_total``).

Targets (issue 6): with pre-start, the first call of a cold chain takes at most
1.3 x L + warm; without, about 3 x L (three loads, one after another, so at least 3 x L).
Every cold start also pays for starting the stage's processes (sidecar and runner, a
fixed cost S per stage, next to L); the table shows S as measured from the off run,
S = (off - warm) / 3 - L, and what one cold stage costs (L + S + warm), which is the best a
pre-starting scheduler can do when the chain's first stage starts cold.

    python bench/coldstart.py [--load-seconds L] [--rounds R] [--smoke] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc

import algomesh

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
STAGES = ("bench/stage1", "bench/stage2", "bench/stage3")
VERSION = "1.0.0"
OFF_THRESHOLD = "2"  # shares are <= 1, so no edge is ever strong enough: pre-start off
MODES = ("off", "on")

STAGE_CODE = '''\
"""{name}: stage {n} of bench/coldstart.py's chain. load() takes {load:g} s."""
import time

import algomesh


def load():
    time.sleep({load!r})  # a model that takes a while to load


def apply(input):
    here = [{name!r}]
    {body}
'''
PIPE_BODY = "return here + algomesh.client().algo({nxt!r}).pipe(input).result"
LAST_BODY = "return here"

# Run first in every child: Linux SIGTERMs it if this process dies (even by SIGKILL),
# then it execs the real command (the setting survives exec).
GUARD = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != {parent}:
    sys.exit("parent gone")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def log(msg: str) -> None:
    print(f"coldstart: {msg}", file=sys.stderr, flush=True)


def write_chain(root: Path, load_seconds: float) -> list[Path]:
    """The three algorithm folders, each stage piping to the next (and allowed to)."""
    folders = []
    for n, name in enumerate(STAGES, 1):
        nxt = STAGES[n] if n < len(STAGES) else None
        folder = root / name.replace("/", "-")
        folder.mkdir(parents=True)
        toml = (f'name = "{name}"\nversion = "{VERSION}"\nruntime = "python"\nentrypoint = "main.py"\n'
                f'description = "stage {n} of bench/coldstart.py: sleeps {load_seconds:g} s in load()"\n')
        if nxt:
            toml += f'\n[permissions]\ncan_call = ["{nxt}"]\n'
        (folder / "algomesh.toml").write_text(toml)
        body = PIPE_BODY.format(nxt=nxt) if nxt else LAST_BODY
        (folder / "main.py").write_text(STAGE_CODE.format(name=name, n=n, load=load_seconds, body=body))
        folders.append(folder)
    return folders


# ------------------------------------------------------------------ the meshes


class Up:
    """``algomesh up`` as a subprocess in its own session; stdout read by a thread (the
    banner), stderr (its log: cold starts, pre-starts) into ``up-MODE.log`` beside the data dir."""

    def __init__(self, mode: str, data_dir: Path, extra: list[str]) -> None:
        self.mode, self.data_dir = mode, data_dir
        self.log_path = data_dir.parent / f"up-{mode}.log"
        self.lines: queue.Queue[str | None] = queue.Queue()
        with open(self.log_path, "wb") as logfile:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", GUARD.format(parent=os.getpid()), "-m", "algomesh.cli", "up",
                 "--data-dir", str(data_dir), "--host", HOST, "--port", "0", "--http-port", "0", *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logfile, text=True,
                start_new_session=True)
        threading.Thread(target=self._drain, daemon=True).start()
        self.address = self.dashboard = self.metrics = self.key = ""
        self.client: algomesh.Client | None = None

    def _drain(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_banner(self, timeout: float = 90.0) -> None:
        """Read the banner up to its last line: address, dashboard URL, metrics, admin key."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"mesh {self.mode}: no banner within {timeout:.0f}s") from None
            if line is None:
                raise RuntimeError(f"mesh {self.mode}: algomesh up exited with code {self.popen.wait()}")
            if m := re.search(r"listening on (\S+)", line):
                self.address = m.group(1)
            elif m := re.search(r"dashboard (\S+)", line):
                self.dashboard = m.group(1)
            elif m := re.search(r"metrics\s+(\S+)", line):
                self.metrics = m.group(1)
            elif m := re.search(r"admin key (\S+)", line):
                self.key = m.group(1)
            if "Ctrl-C to stop" in line:
                break
        if not (self.address and self.dashboard and self.key):
            raise RuntimeError(f"mesh {self.mode}: banner lacked address, dashboard or admin key")
        self.client = algomesh.client(self.key, self.address)

    def api(self, path: str) -> dict:
        """GET one of the dashboard's JSON endpoints with this start's token."""
        base, _, query = self.dashboard.partition("/?")
        token = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("token", "")
        req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def prestarts(self) -> float | None:
        """``algomesh_prestarts_total`` summed over the chain's stages (None: not exported)."""
        try:
            with urllib.request.urlopen(self.metrics, timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return None
        found = [float(m.group(1)) for m in re.finditer(
            r'^algomesh_prestarts_total\{[^}]*algorithm="bench/stage\d"[^}]*\}\s+(\S+)$', text, re.M)]
        return sum(found) if found or "algomesh_prestarts" in text else None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def stop_all(meshes: list[Up], grace: float = 20.0) -> None:
    """SIGTERM every mesh (it stops its instances), wait up to ``grace`` s, SIGKILL the rest."""
    for m in meshes:
        if m.client is not None:
            m.client.close()
        if m.popen.poll() is None:
            m.popen.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for m in meshes:
        try:
            m.popen.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"mesh {m.mode} did not stop in {grace:.0f}s; killing it")
            m.popen.kill()
            m.popen.wait()


# ----------------------------------------------------------------------- measuring


@dataclass
class Figures:
    """One mesh's measurements."""
    untrained_first_call_s: float = 0.0
    cold_s: list[float] = field(default_factory=list)
    warm_s: list[float] = field(default_factory=list)   # every warm call of every round
    cold_hops: list[list[str] | None] = field(default_factory=list)  # spans marked cold, per cold call
    prestarts: list[float | None] = field(default_factory=list)      # instances pre-started, per cold call
    learn_wait_s: float = 0.0


def call_chain(client: algomesh.Client, what: str, timeout: float) -> tuple[float, str]:
    """One call to stage1; its latency and trace id. Checks every stage answered."""
    t0 = time.perf_counter()
    resp = client.algo(STAGES[0]).set_options(timeout=timeout).pipe(what)
    result = resp.result  # pipe() returns at once; .result waits for the answer
    elapsed = time.perf_counter() - t0
    if result != list(STAGES):
        raise RuntimeError(f"the chain answered {result!r}, expected {list(STAGES)!r}")
    return elapsed, resp.metadata.trace_id


def wait_learned(up: Up, calls: int, timeout: float = 60.0) -> float:
    """Until the control plane's call graph shows stage1 -> stage2 -> stage3 with ``calls``
    calls on each edge (spans arrive in batches). The graph the dashboard shows and the one
    the scheduler pre-starts from learn from the same stored spans."""
    want = [(f"{a}@{VERSION}", f"{b}@{VERSION}") for a, b in zip(STAGES, STAGES[1:])]
    t0 = time.monotonic()
    while True:
        graph = up.api("/api/graph")
        seen = {(e["caller"], e["callee"]): e["calls"] for e in graph.get("edges", [])}
        if all(seen.get(edge, 0) >= calls for edge in want):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"mesh {up.mode}: the call graph did not learn {want} with {calls} calls "
                               f"within {timeout:.0f}s; it has {seen}")
        time.sleep(0.2)


def make_cold(up: Up, timeout: float = 60.0) -> None:
    """Scale every stage to 0 and wait until no instance of the chain is listed."""
    for name in STAGES:
        up.client.scale(name, 0)
    end = time.monotonic() + timeout
    while True:
        left = [i.id for i in up.client.instances() if i.algorithm in STAGES]
        if not left:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"mesh {up.mode}: instances {left} still listed {timeout:.0f}s after scaling to 0")
        time.sleep(0.1)


def cold_hops(up: Up, trace_id: str, timeout: float = 20.0) -> list[str] | None:
    """The names of the call's spans marked as cold starts, once the spans of all three
    hops (the ingress's call, the two pipes) are stored; None if they do not arrive."""
    want = {f"call {STAGES[0]}", *(f"pipe {s}" for s in STAGES[1:])}
    end = time.monotonic() + timeout
    while True:
        try:
            spans = list(up.client.trace(trace_id).spans)
        except algomesh.AlgomeshError:  # not stored yet: spans arrive in batches
            spans = []
        if want <= {s.name for s in spans}:
            return sorted(s.name for s in spans if s.name in want
                          and s.attributes.get("algomesh.cold_start") == "true")
        if time.monotonic() > end:
            log(f"mesh {up.mode}: spans of trace {trace_id} did not all arrive within {timeout:.0f}s")
            return None
        time.sleep(0.25)


def train(up: Up, fig: Figures, a: argparse.Namespace) -> None:
    for folder in a.folders:
        up.client.publish(folder)
    fig.untrained_first_call_s, _ = call_chain(up.client, "untrained", a.timeout)
    for i in range(a.learn_calls):
        call_chain(up.client, f"learn {i}", a.timeout)
    fig.learn_wait_s = wait_learned(up, 1 + a.learn_calls)
    log(f"mesh {up.mode}: untrained first call {fig.untrained_first_call_s:.2f}s; edges learned "
        f"({fig.learn_wait_s:.1f}s after the last call)")


def one_round(up: Up, fig: Figures, r: int, a: argparse.Namespace) -> None:
    make_cold(up)
    before = up.prestarts()
    cold, trace_id = call_chain(up.client, f"cold {r}", a.timeout)
    fig.cold_s.append(cold)
    for i in range(a.warm_calls):
        fig.warm_s.append(call_chain(up.client, f"warm {r}.{i}", a.timeout)[0])
    hops = cold_hops(up, trace_id)
    after = up.prestarts()
    fig.cold_hops.append(hops)
    fig.prestarts.append(after - before if before is not None and after is not None else None)
    log(f"round {r + 1}/{a.rounds}, pre-start {up.mode}: cold first call {cold:.2f}s; "
        f"cold hops {hops}; pre-started {fig.prestarts[-1]}")


def summarize(figs: dict[str, Figures], L: float) -> dict:
    warm = {m: statistics.median(f.warm_s) for m, f in figs.items()}
    cold = {m: statistics.median(f.cold_s) for m, f in figs.items()}
    start_overhead = (cold["off"] - warm["off"]) / len(STAGES) - L
    on_target = 1.3 * L + warm["on"]
    one_stage = L + start_overhead + warm["on"]
    return {
        "load_seconds": L,
        "warm_s": warm["on"], "warm_off_s": warm["off"],
        "warm_p90_s": statistics.quantiles(figs["on"].warm_s, n=10, method="inclusive")[-1]
        if len(figs["on"].warm_s) > 1 else warm["on"],
        "cold_off_s": cold["off"], "cold_on_s": cold["on"],
        "cold_off_over_L": cold["off"] / L, "cold_on_over_L": cold["on"] / L, "warm_over_L": warm["on"] / L,
        "cold_on_over_cold_off": cold["on"] / cold["off"],
        "saved_s": cold["off"] - cold["on"],
        "start_overhead_s": start_overhead,
        "one_cold_stage_s": one_stage,
        "cold_on_over_one_cold_stage": cold["on"] / one_stage if one_stage > 0 else float("nan"),
        "target_on_s": on_target,
        "target_on_met": cold["on"] <= on_target,
        "target_off_s": len(STAGES) * L,
        "target_off_met": cold["off"] >= len(STAGES) * L,
    }


def report(s: dict, figs: dict[str, Figures], a: argparse.Namespace) -> None:
    L = a.load_seconds
    yes = {True: "MET", False: "NOT MET"}
    on_target = f"<= 1.3 x L + warm = {s['target_on_s']:.2f}s"
    print(f"algomesh cold-start benchmark: chain {' -> '.join(STAGES)}, each load() {L:g}s; "
          f"{a.rounds} round(s), medians; {os.cpu_count()} CPUs")
    print(f"{'':<34} {'seconds':>8} {'x L':>7}   {'target':<28} ")
    print(f"{'warm call (whole chain, p50)':<34} {s['warm_s']:8.3f} {s['warm_over_L']:7.2f}")
    print(f"{'cold first call, pre-start off':<34} {s['cold_off_s']:8.3f} {s['cold_off_over_L']:7.2f}   "
          f"{f'about 3 x L (>= {3 * L:g}s)':<28} {yes[s['target_off_met']]}")
    print(f"{'cold first call, pre-start on':<34} {s['cold_on_s']:8.3f} {s['cold_on_over_L']:7.2f}   "
          f"{on_target:<28} {yes[s['target_on_met']]}")
    print()
    print(f"pre-start on / off                           {s['cold_on_over_cold_off']:7.2f}x  "
          f"(saves {s['saved_s']:.2f}s)")
    print(f"start cost per stage besides load(), S       {s['start_overhead_s']:7.2f}s   "
          "(sidecar + runner; = (off - warm) / 3 - L)")
    print(f"one cold stage, L + S + warm                 {s['one_cold_stage_s']:7.2f}s   "
          f"(pre-start on takes {s['cold_on_over_one_cold_stage']:.2f}x that)")
    for m in MODES:
        f = figs[m]
        print(f"pre-start {m:<3}: cold calls {', '.join(f'{x:.2f}' for x in f.cold_s)}s; "
              f"cold hops per call {[len(h) if h is not None else None for h in f.cold_hops]}; "
              f"pre-started {f.prestarts}; untrained first call {f.untrained_first_call_s:.2f}s")


# --------------------------------------------------------------------------- main


def run(a: argparse.Namespace) -> int:
    def on_sigterm(signum, frame):  # so the `finally` below stops the meshes
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="algomesh-coldstart-"))
    meshes: dict[str, Up] = {}
    figs = {m: Figures() for m in MODES}
    try:
        a.folders = write_chain(work / "chain", a.load_seconds)
        meshes["off"] = Up("off", work / "off", ["--prestart-threshold", OFF_THRESHOLD])
        meshes["on"] = Up("on", work / "on", [])
        try:
            for up in meshes.values():
                up.wait_banner()
            log(f"meshes: off at {meshes['off'].address}, on at {meshes['on'].address}")
            for m in MODES:
                train(meshes[m], figs[m], a)
            for r in range(a.rounds):
                for m in (MODES if r % 2 == 0 else MODES[::-1]):
                    one_round(meshes[m], figs[m], r, a)
        except Exception:
            for up in meshes.values():
                log(f"mesh {up.mode}'s log ({up.log_path}) ends:\n{up.log_tail()}")
            raise
    finally:
        stop_all(list(meshes.values()))
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")

    s = summarize(figs, a.load_seconds)
    report(s, figs, a)
    out = Path(a.json) if a.json else HERE / "results" / "coldstart.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "coldstart", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "config": {"load_seconds": a.load_seconds, "rounds": a.rounds, "warm_calls": a.warm_calls,
                      "learn_calls": a.learn_calls, "smoke": a.smoke, "stages": list(STAGES),
                      "off": f"--prestart-threshold {OFF_THRESHOLD}", "on": "default --prestart-threshold"},
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__,
                       "loadavg_at_end": list(os.getloadavg())},
           "summary": s,
           "modes": {m: {"untrained_first_call_s": f.untrained_first_call_s, "learn_wait_s": f.learn_wait_s,
                         "cold_s": f.cold_s, "warm_s": f.warm_s, "cold_hops": f.cold_hops,
                         "prestarts": f.prestarts} for m, f in figs.items()}}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/coldstart.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load-seconds", type=float, help="L, the seconds each stage's load() takes "
                   "(default 2; 0.3 with --smoke)")
    p.add_argument("--rounds", type=int, help="cold calls per mesh; the median is reported (default 3; 1 with --smoke)")
    p.add_argument("--warm-calls", type=int, help="warm calls per mesh and round (default 20; 5 with --smoke)")
    p.add_argument("--learn-calls", type=int, default=3,
                   help="calls after the first before the edges must be learned (default 3)")
    p.add_argument("--timeout", type=float, default=300.0, help="per call, in seconds (default 300)")
    p.add_argument("--smoke", action="store_true", help="CI mode: a tiny L, one round")
    p.add_argument("--keep", action="store_true", help="keep the temporary dir (data dirs, logs)")
    p.add_argument("--json", help="where to write the figures (default bench/results/coldstart.json)")
    a = p.parse_args(argv)
    a.load_seconds = a.load_seconds if a.load_seconds is not None else (0.3 if a.smoke else 2.0)
    a.rounds = a.rounds or (1 if a.smoke else 3)
    a.warm_calls = a.warm_calls or (5 if a.smoke else 20)
    if a.load_seconds <= 0 or a.rounds < 1 or a.warm_calls < 1 or a.learn_calls < 0:
        p.error("need --load-seconds > 0, --rounds >= 1, --warm-calls >= 1, --learn-calls >= 0")
    try:
        return run(a)
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
