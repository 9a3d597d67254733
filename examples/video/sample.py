"""The sample video and how to look at a video, for run.py, the end-to-end test and the
benchmark (not part of any algorithm).

    make(path, seconds, size, rate)  ffmpeg's `testsrc` pattern (a moving sweep, a frame
                                     counter, colour bars), written at run time, never committed
    probe(path)                      frames (counted by decoding), duration and frame rate, by PyAV
    pictures(path, fps=None)         the decoded frames as RGB arrays (all of them, or
                                     sampled at ``fps`` the way ffmpeg's fps filter does)

PyAV (libav in-process) reads what the algorithms wrote with the ffmpeg binary, so the
checks do not trust the tool that made the video.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np


@dataclass(frozen=True)
class Info:
    frames: int
    duration: float  # seconds, from the stream's timestamps
    fps: float       # the stream's average frame rate
    width: int
    height: int


def make(path: Path, seconds: float = 3.0, size: str = "160x120", rate: int = 10) -> Path:
    """A test-pattern video, H.264 in mp4, ``seconds`` long at ``rate`` frames a second."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-t", f"{seconds:g}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4", str(path)], check=True)
    return Path(path)


def probe(path: Path) -> Info:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames, end = 0, 0.0
        for frame in c.decode(stream):
            frames += 1
            if frame.time is not None:
                step = float(frame.duration * frame.time_base) if frame.duration else 0.0
                end = max(end, frame.time + step)
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        duration = end if end > 0 else (c.duration or 0) / av.time_base
        return Info(frames, duration, rate, stream.codec_context.width, stream.codec_context.height)


def pictures(path: Path, fps: float | None = None) -> list[np.ndarray]:
    """Every frame as an HxWx3 uint8 array; with ``fps``, the frame shown at each k / fps
    (what the fps filter keeps when it drops frames)."""
    with av.open(str(path)) as c:
        decoded = [(f.time or 0.0, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    if fps is None or not decoded:
        return [a for _, a in decoded]
    end = decoded[-1][0] + (decoded[1][0] - decoded[0][0] if len(decoded) > 1 else 0)
    out, i = [], 0
    for k in range(round(end * fps)):
        t = k / fps
        while i + 1 < len(decoded) and decoded[i + 1][0] <= t + 1e-6:
            i += 1
        out.append(decoded[i][1])
    return out
