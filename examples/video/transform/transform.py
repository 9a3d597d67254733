"""video/transform: a video in, the same video style-transferred out.

Input, either:
  - BINARY: the video (any container ffmpeg reads: mp4, mkv, webm, gif, ...), with the
    defaults below;
  - a data:// reference to the video (a DataFile: docs/data.md), with the defaults below;
  - JSON {"video": "<base64>" or "data://owner/collection/path", and any of:
      "fps": frames a second to split at and to play back at (default: the video's own),
      "style": 0..25 or a blend "3:0.5,12:0.5" (default 0), "strength": 0..1 (default 1),
      "segment_seconds": cut a longer video into segments this long (default 5; 0: never),
      "format": "mp4" (H.264, default) or "gif",
      "concurrency": frames in flight to video/style at once (default 4),
      "cache": false to bypass video/style's result cache (default true),
      "output": "data://..." where to write the styled video}.
Output: the styled video at ``fps``: one frame per frame split, so it lasts frames / fps
seconds. BINARY for a video sent as bytes; for a video sent by reference, a reference to
the styled one, written next to it (``in.mp4`` -> ``in-styled.mp4``) or to ``output``: a
large video never travels through the mesh as one payload, and is read and written in
chunks (the caller's key needs data write access for the result).

How: ffmpeg (imageio-ffmpeg's) splits the video into PNG frames at ``fps``; every frame
goes to ``video/style`` by ``algo.map(frames, concurrency=N)``, which the mesh balances
over the style algorithm's instances; ffmpeg puts the styled frames back together.
A video longer than ``segment_seconds`` is cut into segments (each a whole number of
frames at ``fps``) and each segment is transformed by a call to this algorithm itself,
two at a time; the parent joins what they return. Segments also keep every payload well
under the mesh's unary limit (10 MiB by default).

It prints one line, ``report {...}`` (JSON: frames, fps, duration, segments, and
``styled_by``: how many frames each style instance styled, from the style calls' own
output, and ``cache_hits``), which a caller reads with ``set_options(stdout=True)``.
Bad input (not a video, a bad option) is INVALID_INPUT; so is a style video/style refuses.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import algomesh

import ffmpeg_tools as ffmpeg

STYLE = "video/style/1.*"
MAX_FPS = 60.0
MAX_FRAMES = 1500           # frames one call styles itself; a longer video needs segments
SEGMENTS_AT_ONCE = 2        # segment calls in flight (each holds one of this instance's slots)
REPORT = "report "
OPTIONS = ("video", "fps", "style", "strength", "segment_seconds", "format", "concurrency", "cache", "output")

client = None
me = ""  # owner/name/version of this algorithm: a segment goes to exactly this version


def load():
    global client, me
    manifest = tomllib.loads((Path(__file__).resolve().parent / "algomesh.toml").read_text())
    me = f"{manifest['name']}/{manifest['version']}"
    client = algomesh.client()


@dataclass(frozen=True)
class Options:
    fps: float | None = None
    style: int | str = 0
    strength: float = 1.0
    segment_seconds: float = 5.0
    format: str = "mp4"
    concurrency: int = 4
    cache: bool = True
    output: str = ""          # data:// URI for the result ("" : bytes, or next to a referenced input)


@dataclass
class Report:
    frames: int = 0
    fps: float = 0.0
    duration: float = 0.0     # seconds of output video
    segments: int = 1
    seconds: float = 0.0      # wall time of this call
    cache_hits: int = 0
    styled_by: dict = field(default_factory=dict)  # style instance -> frames

    def add(self, other: "Report") -> None:
        self.frames += other.frames
        self.cache_hits += other.cache_hits
        self.styled_by = dict(Counter(self.styled_by) + Counter(other.styled_by))


def _number(value, name: str, low: float, high: float, *, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not low <= value <= high:
        kind = "a whole number" if integer else "a number"
        raise algomesh.InvalidError(f'"{name}" is {kind} from {low:g} to {high:g}, not {json.dumps(value)}')
    return value


def parse(input) -> tuple["bytes | algomesh.DataFile", Options]:
    """The video (its bytes, or a reference to it) and the options, or InvalidError naming
    what is wrong."""
    if isinstance(input, (bytes, bytearray)):
        return bytes(input), Options()
    if isinstance(input, algomesh.DataFile):
        return input, Options()
    if not isinstance(input, dict):
        raise algomesh.InvalidError('a video is BINARY bytes, a data:// reference or JSON {"video": base64 or '
                                    f'"data://...", "fps": N, "style": N, ...}}, not {type(input).__name__}')
    unknown = sorted(set(input) - set(OPTIONS))
    if unknown:
        raise algomesh.InvalidError(f"unknown field {unknown[0]!r}: the fields are {', '.join(OPTIONS)}")
    if not isinstance(input.get("video"), str):
        raise algomesh.InvalidError('JSON input needs "video": the video file base64-encoded, or its data:// URI')
    if input["video"].startswith("data://"):
        data = client.data(input["video"])  # INVALID_DATA_URI if it is not one
    else:
        try:
            data = base64.b64decode(input["video"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise algomesh.InvalidError(f'"video" is not base64 (nor a data:// URI): {e}') from None
    opts = Options()
    if "output" in input:
        if not isinstance(input["output"], str) or not input["output"].startswith("data://"):
            raise algomesh.InvalidError('"output" is a data:// URI for the styled video')
        client.data(input["output"])  # INVALID_DATA_URI early
        opts = replace(opts, output=input["output"])
    if input.get("fps") is not None:
        opts = replace(opts, fps=float(_number(input["fps"], "fps", 0.1, MAX_FPS)))
    if "style" in input:
        if isinstance(input["style"], bool) or not isinstance(input["style"], (int, str)):
            raise algomesh.InvalidError('"style" is a style number 0..25 or a blend like "3:0.5,12:0.5"')
        opts = replace(opts, style=input["style"])
    if "strength" in input:
        opts = replace(opts, strength=float(_number(input["strength"], "strength", 0, 1)))
    if "segment_seconds" in input:
        seconds = _number(input["segment_seconds"], "segment_seconds", 0, 3600)
        if 0 < seconds < 0.5:
            raise algomesh.InvalidError('"segment_seconds" is 0 (never cut) or at least 0.5')
        opts = replace(opts, segment_seconds=float(seconds))
    if "format" in input:
        if input["format"] not in ffmpeg.FORMATS:
            raise algomesh.InvalidError(f'"format" is one of {", ".join(ffmpeg.FORMATS)}, '
                                        f'not {json.dumps(input["format"])}')
        opts = replace(opts, format=input["format"])
    if "concurrency" in input:
        opts = replace(opts, concurrency=_number(input["concurrency"], "concurrency", 1, 64, integer=True))
    if "cache" in input:
        if not isinstance(input["cache"], bool):
            raise algomesh.InvalidError('"cache" is true or false')
        opts = replace(opts, cache=input["cache"])
    return data, opts


def style_frames(pictures: list[Path], opts: Options, out: Path, report: Report) -> None:
    """Every picture through video/style, at most ``opts.concurrency`` at once, written to
    ``out`` as 000001.png, ... in order. Who styled each frame is in the call's output."""
    style = client.algo(STYLE).set_options(stdout=True, cache=opts.cache)
    frames = ({"image": base64.b64encode(p.read_bytes()).decode("ascii"), "style": opts.style,
               "strength": opts.strength} for p in pictures)
    out.mkdir()
    by = Counter()
    for n, resp in enumerate(style.map(frames, concurrency=opts.concurrency, total=len(pictures), progress=False), 1):
        (out / f"{n:06d}.png").write_bytes(resp.result)  # a frame that failed raises its own typed error
        found = re.search(r"styled by (\S+):", resp.metadata.stdout or "")
        by[found.group(1) if found else "unknown"] += 1
        report.cache_hits += resp.metadata.cache_hit
    report.styled_by = dict(by)


def whole(src: Path, tmp: Path, fps: float, opts: Options, report: Report) -> Path:
    """Split, style, combine: the video as one piece."""
    pictures = ffmpeg.frames(src, fps, tmp / "frames")
    if not pictures:
        raise algomesh.InvalidError(f"the video has no frames at {fps:g} fps")
    if len(pictures) > MAX_FRAMES:
        raise algomesh.InvalidError(f"{len(pictures)} frames at {fps:g} fps is more than one call styles "
                                    f"({MAX_FRAMES}): set \"segment_seconds\" to cut it into segments")
    style_frames(pictures, opts, tmp / "styled", report)
    out = ffmpeg.encode(tmp / "styled", fps, tmp / f"out.{opts.format}", opts.format)
    report.frames = len(pictures)
    return out


def segmented(src: Path, tmp: Path, duration: float, fps: float, opts: Options, report: Report) -> Path:
    """Cut into segments of a whole number of frames at ``fps``, each transformed by a call
    to this very algorithm (its own version), two at a time; join the results in order."""
    length = max(1, round(opts.segment_seconds * fps)) / fps
    count = math.ceil((duration - 0.5 / fps) / length)  # a tail shorter than half a frame is no segment
    pieces = [ffmpeg.cut(src, i * length, length, tmp / f"segment-{i:04d}.mp4") for i in range(count)]
    # A segment is transformed whole (segment_seconds 0: it never cuts again), as mp4; the
    # format asked for is made once, at the end.
    child = {**{k: v for k, v in asdict(opts).items() if k != "output"},  # a segment comes back as bytes
             "fps": fps, "segment_seconds": 0, "format": "mp4"}
    calls = ({**child, "video": base64.b64encode(p.read_bytes()).decode("ascii")} for p in pieces)
    done = []
    itself = client.algo(me).set_options(stdout=True)
    for i, resp in enumerate(itself.map(calls, concurrency=SEGMENTS_AT_ONCE, total=count, progress=False)):
        done.append(tmp / f"styled-{i:04d}.mp4")
        done[-1].write_bytes(resp.result)  # a segment that failed raises its own typed error
        report.add(read_report(resp.metadata.stdout or ""))
    report.segments = count
    return ffmpeg.concat(done, tmp / f"out.{opts.format}", opts.format)


def read_report(stdout: str) -> Report:
    """The report line a transform call printed (the last, if several)."""
    lines = [line for line in stdout.splitlines() if line.startswith(REPORT)]
    if not lines:
        return Report(frames=0)
    fields = json.loads(lines[-1][len(REPORT):])
    return Report(**{k: v for k, v in fields.items() if k in Report.__dataclass_fields__})


def apply(input):
    t0 = time.perf_counter()
    data, opts = parse(input)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="video-transform-") as name:
        tmp = Path(name)
        src = tmp / "input"
        if isinstance(data, algomesh.DataFile):
            data.save(src)  # in chunks: the video is never one payload, nor in memory whole
        else:
            src.write_bytes(data)
        info = ffmpeg.probe(src)
        fps = opts.fps or info.fps
        if not 0 < fps <= MAX_FPS:
            raise algomesh.InvalidError(f"the video's frame rate is {info.fps:g} fps; "
                                        f"pass \"fps\" (at most {MAX_FPS:g}) to choose one")
        length = max(1, round(opts.segment_seconds * fps)) / fps if opts.segment_seconds else math.inf
        if info.duration > length + 0.5 / fps:
            out = segmented(src, tmp, info.duration, fps, opts, report)
        else:
            out = whole(src, tmp, fps, opts, report)
        if isinstance(data, algomesh.DataFile) or opts.output:
            target = client.data(opts.output or styled_name(data.uri, opts.format))
            target.put(out)  # streamed from the file
            out = target
        else:
            out = out.read_bytes()
    report.fps, report.duration = fps, round(report.frames / fps, 6)
    report.seconds = round(time.perf_counter() - t0, 3)
    print(REPORT + json.dumps(asdict(report), sort_keys=True))
    return out


def styled_name(uri: str, fmt: str) -> str:
    """Next to the input: data://a/v/in.mp4 -> data://a/v/in-styled.mp4 (gif: .gif)."""
    folder, _, name = uri.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{folder}/{stem}-styled.{fmt}"
