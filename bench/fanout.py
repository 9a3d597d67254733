"""What fan-out and the result cache buy the video pipeline (examples/video).

One run, one process tree, two meshes side by side (``algomesh up --port 0``, each on a data
dir of its own, security on as in production), the example's algorithms published into
both; ``video/style``'s manifest (copied into a temporary folder) is changed in one place,
its ``[scaling]`` instances:

    one   video/style with min_instances = max_instances = 1
    two   video/style with min_instances = max_instances = 2   (the example's own setting)

Each style instance runs onnxruntime on one thread, so it uses one core of this machine;
video/transform fans the frames out with ``algo.map(frames, concurrency=4)``.

1. Fan-out. A sample made now with ffmpeg's test pattern (``--size``, 10 fps, ``--seconds``)
   goes through ``video/transform`` at 10 fps in segments of 2 s (the pipeline as the
   demo runs it: each segment a call to itself, two at a time), with ``"cache": false`` so
   every frame is computed. ``--rounds`` rounds, the meshes taking turns (the order
   alternating) so background load hits both alike; the wall time of each call, client to
   result. Speed-up = median(one) / median(two). The report line of every call says which
   style instance styled how many frames, so the table shows they spread.

2. Cache. Two pipelines that share the deterministic stage video/style on the same frames:
   A = the video as mp4, B = the same video as a gif (another output, the same frames
   styled). In each round, on each mesh, with a style not used before (so A starts cold):
       cached   A then B, the style calls cached (B's frames are answered from the cache)
       bypass   A then B with ``"cache": false`` (set_options(cache=False) on the style calls)
   Ratios: B cached / B bypass, and (A + B) cached / (A + B) bypass. With two instances
   each has its own cache: a frame of B that lands on the instance that did not style it
   in A is computed again (the hit count is in the table).

    python bench/fanout.py [--seconds T] [--size WxH] [--rounds R] [--smoke] [--json PATH]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

import algomesh

HERE = Path(__file__).resolve().parent
VIDEO = HERE.parent / "examples" / "video"
sys.path[:0] = [str(HERE.parent), str(VIDEO)]  # `python bench/fanout.py` as well as `python -m bench.fanout`
from bench.coldstart import Up, stop_all  # noqa: E402  (the meshes, run as coldstart runs them)
import sample  # noqa: E402  (examples/video/sample.py: the test-pattern sample, PyAV probing)

MESHES = {"one": 1, "two": 2}   # mesh -> video/style instances
FPS = 10
SEGMENT_SECONDS = 2.0
TRANSFORM = "video/transform/1.*"


def log(msg: str) -> None:
    print(f"fanout: {msg}", file=sys.stderr, flush=True)


def style_folder(root: Path, instances: int) -> Path:
    """The example's video/style with its instances set to ``instances`` (both bounds)."""
    folder = root / f"style-{instances}"
    shutil.copytree(VIDEO / "style", folder, ignore=shutil.ignore_patterns("__pycache__"))
    toml = folder / "algomesh.toml"
    text = toml.read_text()
    for key in ("min_instances", "max_instances"):
        text, n = re.subn(rf"^{key} = \d+$", f"{key} = {instances}", text, flags=re.M)
        if n != 1:
            raise RuntimeError(f"examples/video/style/algomesh.toml has no single `{key} = N` line to change")
    toml.write_text(text)
    return folder


def wait_instances(up: Up, want: int, timeout: float = 90.0) -> None:
    """Until ``want`` style instances are passing (the reservations the manifest asks for)."""
    end = time.monotonic() + timeout
    while True:
        have = [i for i in up.client.instances("video/style") if i.state == "passing"]
        if len(have) == want:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"mesh {up.mode}: {len(have)} video/style instances after {timeout:.0f}s, want {want}")
        time.sleep(0.2)


@dataclass
class Run:
    seconds: float
    frames: int
    cache_hits: int
    styled_by: dict


def transform(up: Up, video: bytes, **options) -> Run:
    algo = up.client.algo(TRANSFORM).set_options(timeout=600, stdout=True)
    body = {"video": base64.b64encode(video).decode("ascii"), "fps": FPS, "segment_seconds": SEGMENT_SECONDS,
            **options}
    t0 = time.perf_counter()
    resp = algo.pipe(body)
    resp.result
    took = time.perf_counter() - t0
    lines = [line for line in (resp.metadata.stdout or "").splitlines() if line.startswith("report ")]
    if not lines:
        raise RuntimeError(f"mesh {up.mode}: video/transform printed no report: {resp.metadata.stdout!r}")
    report = json.loads(lines[-1][len("report "):])
    return Run(took, report["frames"], report["cache_hits"], report["styled_by"])


@dataclass
class Figures:
    """One mesh's measurements."""
    fanout: list[Run] = field(default_factory=list)
    cached_a: list[Run] = field(default_factory=list)
    cached_b: list[Run] = field(default_factory=list)
    bypass_a: list[Run] = field(default_factory=list)
    bypass_b: list[Run] = field(default_factory=list)


def one_round(up: Up, fig: Figures, video: bytes, r: int, a: argparse.Namespace) -> None:
    fig.fanout.append(transform(up, video, style=0, cache=False))
    style = 1 + r % 25  # not used before on this mesh: A's style calls are all misses
    fig.cached_a.append(transform(up, video, style=style))
    fig.cached_b.append(transform(up, video, style=style, format="gif"))
    fig.bypass_a.append(transform(up, video, style=style, cache=False))
    fig.bypass_b.append(transform(up, video, style=style, format="gif", cache=False))
    log(f"round {r + 1}/{a.rounds}, {MESHES[up.mode]} style instance(s): pipeline {fig.fanout[-1].seconds:.2f}s "
        f"{fig.fanout[-1].styled_by}; cached A {fig.cached_a[-1].seconds:.2f}s B {fig.cached_b[-1].seconds:.2f}s "
        f"({fig.cached_b[-1].cache_hits} hits); bypass A {fig.bypass_a[-1].seconds:.2f}s "
        f"B {fig.bypass_b[-1].seconds:.2f}s")


def med(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def summarize(figs: dict[str, Figures]) -> dict:
    s: dict = {}
    for m, f in figs.items():
        frames = f.fanout[0].frames
        s[m] = {
            "instances": MESHES[m], "frames": frames,
            "pipeline_s": med(f.fanout), "frames_per_s": frames / med(f.fanout),
            "instances_used": statistics.median(len(r.styled_by) for r in f.fanout),
            "cached_a_s": med(f.cached_a), "cached_b_s": med(f.cached_b),
            "bypass_a_s": med(f.bypass_a), "bypass_b_s": med(f.bypass_b),
            "cached_b_hits": statistics.median(r.cache_hits for r in f.cached_b),
            "bypass_hits": sum(r.cache_hits for r in f.bypass_a + f.bypass_b + f.fanout),
        }
        s[m]["b_cached_over_bypass"] = s[m]["cached_b_s"] / s[m]["bypass_b_s"]
        s[m]["ab_cached_over_bypass"] = ((s[m]["cached_a_s"] + s[m]["cached_b_s"])
                                         / (s[m]["bypass_a_s"] + s[m]["bypass_b_s"]))
    s["speedup_two_over_one"] = s["one"]["pipeline_s"] / s["two"]["pipeline_s"]
    return s


def report(s: dict, a: argparse.Namespace) -> None:
    one, two = s["one"], s["two"]
    print(f"algomesh fan-out benchmark: video/transform on a {a.size} test-pattern video, {a.seconds:g} s, "
          f"{one['frames']} frames at {FPS} fps, segments of {SEGMENT_SECONDS:g} s; {a.rounds} round(s), medians; "
          f"{os.cpu_count()} CPUs")
    print()
    print(f"{'1. fan-out (every frame computed)':<40} {'seconds':>8} {'frames/s':>9} {'instances used':>15}")
    for m in ("one", "two"):
        x = s[m]
        label = f"pipeline, {x['instances']} style instance(s)"
        print(f"{label:<40} {x['pipeline_s']:8.2f} "
              f"{x['frames_per_s']:9.1f} {x['instances_used']:15g}")
    print(f"{'speed-up, 2 instances over 1':<40} {s['speedup_two_over_one']:7.2f}x")
    print()
    print("2. cache: A = the video as mp4, then B = the same frames as a gif; shared stage video/style")
    print(f"{'':<26} {'A s':>7} {'B s':>7} {'A+B s':>7} {'B hits':>7}   {'B c/b':>6} {'A+B c/b':>8}")
    for m in ("one", "two"):
        x = s[m]
        cached, bypass = (f"{mode}, {x['instances']} instance(s)" for mode in ("cached", "bypass"))
        print(f"{cached:<26} {x['cached_a_s']:7.2f} {x['cached_b_s']:7.2f} "
              f"{x['cached_a_s'] + x['cached_b_s']:7.2f} {x['cached_b_hits']:4g}/{x['frames']:<2d}   "
              f"{x['b_cached_over_bypass']:5.2f}x {x['ab_cached_over_bypass']:7.2f}x")
        print(f"{bypass:<26} {x['bypass_a_s']:7.2f} {x['bypass_b_s']:7.2f} "
              f"{x['bypass_a_s'] + x['bypass_b_s']:7.2f} {0:4d}/{x['frames']:<2d}")


def run(a: argparse.Namespace) -> int:
    def on_sigterm(signum, frame):  # so the `finally` below stops the meshes
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="algomesh-fanout-"))
    load_at_start = list(os.getloadavg())
    meshes: dict[str, Up] = {}
    figs = {m: Figures() for m in MESHES}
    try:
        video = sample.make(work / "sample.mp4", a.seconds, a.size, FPS).read_bytes()
        for m in MESHES:
            meshes[m] = Up(m, work / m, [])
        try:
            for m, up in meshes.items():
                up.wait_banner()
                up.client.publish(style_folder(work, MESHES[m]))
                up.client.publish(VIDEO / "transform")
            for m, up in meshes.items():
                wait_instances(up, MESHES[m])
                transform(up, video, style=0, fps=1)  # warm: video/transform's cold start, its first ffmpeg runs
            log(f"meshes: one at {meshes['one'].address}, two at {meshes['two'].address}")
            for r in range(a.rounds):
                for m in (list(MESHES) if r % 2 == 0 else list(MESHES)[::-1]):
                    one_round(meshes[m], figs[m], video, r, a)
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

    s = summarize(figs)
    report(s, a)
    out = Path(a.json) if a.json else HERE / "results" / "fanout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "fanout", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "config": {"seconds": a.seconds, "size": a.size, "fps": FPS, "segment_seconds": SEGMENT_SECONDS,
                      "rounds": a.rounds, "smoke": a.smoke, "meshes": MESHES, "map_concurrency": 4},
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__,
                       "loadavg_at_start": load_at_start,
                       "loadavg_at_end": list(os.getloadavg())},
           "summary": s,
           "runs": {m: {k: [vars(r) for r in getattr(f, k)] for k in vars(f)} for m, f in figs.items()}}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/fanout.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, help="the sample's length (default 4; 2 with --smoke)")
    p.add_argument("--size", help="the sample's frame size (default 320x240; 160x120 with --smoke)")
    p.add_argument("--rounds", type=int, help="rounds per mesh; medians are reported (default 3; 1 with --smoke)")
    p.add_argument("--smoke", action="store_true", help="CI mode: a small sample, one round")
    p.add_argument("--keep", action="store_true", help="keep the temporary dir (data dirs, logs)")
    p.add_argument("--json", help="where to write the figures (default bench/results/fanout.json)")
    a = p.parse_args(argv)
    a.seconds = a.seconds if a.seconds is not None else (2.0 if a.smoke else 4.0)
    a.size = a.size or ("160x120" if a.smoke else "320x240")
    a.rounds = a.rounds or (1 if a.smoke else 3)
    if a.seconds <= 0 or a.rounds < 1 or not re.fullmatch(r"\d+x\d+", a.size):
        p.error("need --seconds > 0, --rounds >= 1, --size WxH")
    try:
        return run(a)
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
