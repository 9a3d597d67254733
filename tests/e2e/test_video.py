"""The video transformation pipeline of examples/video, end to end (issue 8, point 2).

video/transform splits a video into frames at a chosen rate (ffmpeg), styles every frame by
fanning out over video/style's two instances (algo.map inside the algorithm), recombines
them, and transforms a long video segment by segment through calls to itself. The
example's folders are published as they are into a real mesh; the sample videos are made
here with ffmpeg's test pattern, and every output is read back with PyAV.
"""
import base64
import io
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import algomesh
from tests.conftest import EXAMPLES, stored_trace

VIDEO = EXAMPLES / "video"
sys.path.insert(0, str(VIDEO))
import sample  # noqa: E402  (examples/video/sample.py)

STYLED = 20.0   # mean absolute pixel difference (0..255) a styled frame has at least from its original
NOISE = 4.0     # what re-encoding alone gives (measured below, on the same video)


@pytest.fixture(scope="module", autouse=True)
def published(mesh, client):
    for folder in ("style", "transform"):
        mesh.publish(VIDEO / folder)
    # the style manifest keeps two instances (min_instances): wait for both before the first frame
    deadline = time.monotonic() + 60
    while len([i for i in client.instances("video/style") if i.state == "passing"]) < 2:
        assert time.monotonic() < deadline, "video/style's two reserved instances did not start"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {"3s": sample.make(d / "3s.mp4", 3), "5s": sample.make(d / "5s.mp4", 5),
            "4.05s": sample.make(d / "4.05s.mp4", 4.05, rate=20)}


@pytest.fixture(scope="module")
def transform(client):
    return client.algo("video/transform").set_options(timeout=120, stdout=True)


def run(transform, tmp_path, video, name="out", **options):
    """Call video/transform; the output's path, its report, and the response."""
    data = video.read_bytes()
    body = data if not options else {"video": base64.b64encode(data).decode(), **options}
    resp = transform.pipe(body)
    out = tmp_path / f"{name}.{options.get('format', 'mp4')}"
    out.write_bytes(resp.result)
    assert resp.metadata.content_type == "binary"
    lines = [line for line in resp.metadata.stdout.splitlines() if line.startswith("report ")]
    assert len(lines) == 1, resp.metadata.stdout
    return out, json.loads(lines[0][len("report "):]), resp


def difference(a, b) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def test_binary_video_keeps_its_rate_and_every_frame_is_styled(client, transform, videos, tmp_path):
    src = videos["3s"]
    out, report, resp = run(transform, tmp_path, src)  # BINARY in: the defaults (its own 10 fps, style 0)
    info = sample.probe(out)
    assert (info.frames, info.fps, info.duration) == (30, 10.0, pytest.approx(3.0, abs=0.01))
    assert (info.width, info.height) == (160, 120)
    assert (report["frames"], report["segments"], report["fps"]) == (30, 1, 10)
    before, after = sample.pictures(src), sample.pictures(out)
    diffs = [difference(a, b) for a, b in zip(before, after)]
    assert min(diffs) > STYLED, diffs
    # the output moves as the input does: its frames are not one picture repeated
    assert difference(after[0], after[-1]) > NOISE
    # the frames were spread over the style algorithm's two instances, each doing a real share
    assert sum(report["styled_by"].values()) == 30
    assert len(report["styled_by"]) == 2 and min(report["styled_by"].values()) >= 5, report["styled_by"]
    assert len(client.instances("video/style")) == 2


def test_reencoding_alone_is_noise(videos, tmp_path):
    """The yardstick for STYLED: the same frames through the same ffmpeg encode, unstyled."""
    import imageio_ffmpeg
    src, copy = videos["3s"], tmp_path / "copy.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(src), "-c:v", "libx264", "-crf", "18",
                    "-pix_fmt", "yuv420p", str(copy)], check=True)
    diffs = [difference(a, b) for a, b in zip(sample.pictures(src), sample.pictures(copy))]
    assert max(diffs) < NOISE < STYLED, diffs


@pytest.mark.parametrize("fps, frames", [(4, 12), (2.5, 8)])
def test_a_chosen_frame_rate(transform, videos, tmp_path, fps, frames):
    src = videos["3s"]
    out, report, _ = run(transform, tmp_path, src, fps=fps, style=3)
    info = sample.probe(out)
    assert info.frames == frames and report["frames"] == frames
    assert info.fps == pytest.approx(fps) and info.duration == pytest.approx(frames / fps, abs=0.01)
    # each output frame is the input's frame at k / fps, styled
    before = sample.pictures(src, fps)
    assert len(before) == frames
    assert min(difference(a, b) for a, b in zip(before, sample.pictures(out))) > STYLED


def test_a_long_video_is_cut_into_segments_that_call_itself(client, transform, videos, tmp_path):
    src = videos["5s"]  # 5 s at 5 fps, segments of 2 s: 2 + 2 + 1 s, 10 + 10 + 5 frames
    whole, whole_report, _ = run(transform, tmp_path, src, "whole", fps=5, style=7, segment_seconds=0)
    cut, report, resp = run(transform, tmp_path, src, "cut", fps=5, style=7, segment_seconds=2)
    assert (whole_report["segments"], report["segments"]) == (1, 3)
    a, b = sample.probe(whole), sample.probe(cut)
    assert a.frames == b.frames == report["frames"] == 25
    assert a.duration == pytest.approx(5.0, abs=0.01) and b.duration == pytest.approx(5.0, abs=0.01)
    assert b.fps == 5
    # the same pictures, styled: the segments were cut on frame boundaries (only the cut's
    # near-lossless re-encoding differs)
    before, segmented, unsegmented = sample.pictures(src, 5), sample.pictures(cut), sample.pictures(whole)
    assert min(difference(x, y) for x, y in zip(before, segmented)) > STYLED
    assert max(difference(x, y) for x, y in zip(segmented, unsegmented)) < STYLED / 2
    assert len(report["styled_by"]) == 2 and sum(report["styled_by"].values()) == 25
    # one trace: the ingress's call; the parent (inbound, apply); three pipes to itself
    # (pipe, inbound, apply); 25 frames (pipe, inbound, and apply unless a cache hit).
    # Every process sends its own spans: wait for all of them.
    trace = stored_trace(client, resp.metadata.trace_id, 1 + 2 + 3 * 3 + 25 * 3 - report["cache_hits"])
    names = [s.name for s in trace.spans]
    assert names.count("apply video/transform@1.0.0") == 4
    assert names.count("pipe video/transform/1.0.0") == 3  # to its own exact version
    assert names.count("pipe video/style/1.*") == 25


def test_a_tail_shorter_than_half_a_frame_is_no_segment(transform, videos, tmp_path):
    """4.05 s at 5 fps is 20 frames in one piece; cut at 2 s it is two segments, not a
    third of 0.05 s adding a frame of its own."""
    src = videos["4.05s"]
    whole, r1, _ = run(transform, tmp_path, src, "whole", fps=5, segment_seconds=0, concurrency=8)
    cut, r2, _ = run(transform, tmp_path, src, "cut", fps=5, segment_seconds=2, concurrency=8)
    assert (r1["segments"], r2["segments"]) == (1, 2)
    assert sample.probe(whole).frames == sample.probe(cut).frames == r1["frames"] == r2["frames"] == 20


def test_gif_out_of_segments(transform, videos, tmp_path):
    out, report, _ = run(transform, tmp_path, videos["5s"], fps=4, segment_seconds=2, format="gif")
    info = sample.probe(out)
    assert out.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert info.frames == report["frames"] == 20 and report["segments"] == 3


def test_the_style_stage_is_cached(transform, videos, tmp_path):
    """video/style is deterministic: the same frames in a second pipeline (the gif after the
    mp4) are answered by its cache, and cache=false (passed on to the style calls as
    set_options(cache=False)) computes them."""
    src = videos["5s"]
    first, r1, _ = run(transform, tmp_path, src, "first", fps=4, style=11, segment_seconds=0)
    again, r2, _ = run(transform, tmp_path, src, "again", fps=4, style=11, segment_seconds=0, format="gif")
    fresh, r3, _ = run(transform, tmp_path, src, "fresh", fps=4, style=11, segment_seconds=0, cache=False)
    assert r1["frames"] == r2["frames"] == r3["frames"] == 20
    # Each of the two instances has its own cache, and the mesh sends a frame to either
    # (the less busy of the two): about half of the gif's frames find the instance that
    # styled them for the mp4 (fewer than 2 of 20: about 1 run in 2000).
    assert r1["cache_hits"] == 0 and r2["cache_hits"] >= 2 and r3["cache_hits"] == 0, (r1, r2, r3)
    assert max(difference(x, y) for x, y in zip(sample.pictures(first), sample.pictures(fresh))) == 0.0


@pytest.mark.parametrize("body, message", [
    (b"not a video at all", "not a video ffmpeg can read"),
    # a concat list or playlist posing as a video would make ffmpeg read other files: refused
    (b"ffconcat version 1.0\nfile /etc/hostname\n", "not a video ffmpeg can read"),
    (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n", "not a video ffmpeg can read"),
    ({"video": "!!!"}, '"video" is not base64'),
    ({"vid": ""}, "unknown field 'vid'"),
    ({"video": base64.b64encode(b"x").decode(), "fps": 0}, '"fps" is a number from 0.1 to 60'),
    ({"video": base64.b64encode(b"x").decode(), "format": "avi"}, '"format" is one of mp4, gif'),
    ({"video": base64.b64encode(b"x").decode(), "concurrency": 2.5}, '"concurrency" is a whole number'),
    ({"video": base64.b64encode(b"x").decode(), "segment_seconds": 0.1}, '"segment_seconds" is 0'),
    ("a text", "not str"),
])
def test_bad_input_is_invalid_input(transform, body, message):
    with pytest.raises(algomesh.InvalidError) as e:
        transform.pipe(body).result
    assert e.value.reason == "INVALID_INPUT" and message in e.value.message, e.value.message


def test_a_style_the_network_lacks_is_the_style_stages_invalid_input(transform, videos):
    body = {"video": base64.b64encode(videos["3s"].read_bytes()).decode(), "fps": 1, "style": 26}
    with pytest.raises(algomesh.InvalidError) as e:
        transform.pipe(body).result
    assert "style index must be 0 to 25" in e.value.message and e.value.metadata["algorithm"] == "video/style"


def test_style_alone(client, videos):
    frame = tmp_png(videos["3s"])
    style = client.algo("video/style").set_options(stdout=True)
    resp = style.pipe(frame)  # BINARY: style 0
    assert resp.result[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.match(r"styled by \S+/\d+: 160x120 style 0", resp.metadata.stdout), resp.metadata.stdout
    with pytest.raises(algomesh.InvalidError) as e:
        style.pipe(b"GIF89a not an image").result
    assert "not a PNG or JPEG image" in e.value.message


def tmp_png(video) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(sample.pictures(video)[0]).save(buf, format="PNG")
    return buf.getvalue()


def test_a_video_by_reference_comes_back_by_reference(client, transform, videos, tmp_path):
    """Large videos travel as data:// references (docs/data.md): the algorithm reads the
    input and writes the result in chunks through its sidecar; only URIs cross the mesh."""
    src = client.data("data://admin/videos/5s.mp4")
    src.put(videos["5s"])
    resp = transform.pipe(src)  # a reference alone: the defaults (own rate, 5 s segments)
    out = resp.result
    assert isinstance(out, algomesh.DataFile) and out.uri == "data://admin/videos/5s-styled.mp4"
    assert resp.metadata.content_type == "data"
    info = sample.probe(out.save(tmp_path / "ref.mp4"))
    assert (info.frames, info.duration) == (50, pytest.approx(5.0, abs=0.01))
    assert difference(sample.pictures(videos["5s"])[7], sample.pictures(tmp_path / "ref.mp4")[7]) > STYLED
    # JSON names the input by URI and where the result goes; segments (2 s) still call itself
    resp = transform.pipe({"video": src.uri, "fps": 4, "segment_seconds": 2, "format": "gif",
                           "output": "data://admin/styled/short.gif"})
    assert resp.result.uri == "data://admin/styled/short.gif"
    info = sample.probe(resp.result.save(tmp_path / "short.gif"))
    assert info.frames == 20
    # a reader-only key may send its video, but the result cannot be written for it
    reader = algomesh.client(client.create_key("admin", data="read").secret, address=client.address)
    with pytest.raises(algomesh.PermissionError_) as e:
        reader.algo("video/transform").set_options(timeout=120).pipe(reader.data(src.uri)).result
    assert "may not write" in e.value.message
    reader.close()
    # a URI that names nothing is the store's typed error, through the algorithm
    with pytest.raises(algomesh.NotFoundError) as e:
        transform.pipe({"video": "data://admin/videos/missing.mp4"}).result
    assert e.value.reason == "DATA_NOT_FOUND"


def test_the_readme_command_runs_the_demo(tmp_path):
    """`bash examples/video/demo.sh`: a mesh of its own, the algorithms published, a 5 s
    sample styled at 5 fps in three segments, the video written, the mesh stopped."""
    env = {k: v for k, v in os.environ.items() if k not in ("ALGOMESH_API_KEY", "ALGOMESH_ADDRESS")}
    out = subprocess.run(["bash", str(VIDEO / "demo.sh")], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for name in ("video/style", "video/transform"):
        assert re.search(rf"^  {re.escape(name)} +1\.0\.0  published$", text, re.M), text
    assert re.search(r"^input +50 frames +5\.00 s +at 10 fps +160x120$", text, re.M), text
    assert re.search(r"^output +25 frames +5\.00 s +at 5 fps +160x120$", text, re.M), text
    assert re.search(r"^3 segment\(s\), 25 frames styled in ", text, re.M), text
    assert len(re.findall(r"^  video/style instance ", text, re.M)) == 2, text
    assert sample.probe(tmp_path / "styled.mp4").frames == 25
    # the video went by reference, and came back as one
    assert re.search(r"^put data://admin/videos/sample\.mp4 \(\d+ bytes\)$", text, re.M), text
    assert re.search(r"^got data://admin/videos/sample-styled\.mp4$", text, re.M), text
    assert text.rstrip().endswith("Mesh stopped.")
    scratch = re.search(r"algomesh up --data-dir (\S+)/data\)", text).group(1)
    assert not os.path.exists(scratch)
