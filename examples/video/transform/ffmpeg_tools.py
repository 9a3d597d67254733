"""The video work of video/transform, done by ffmpeg (the binary imageio-ffmpeg ships in its
wheel: nothing to install on the machine). Every function works on files in a directory
the caller owns; a video ffmpeg cannot read is algomesh.InvalidError with ffmpeg's words.

    probe(video)                    -> Probe(duration, fps, width, height)
    frames(video, fps, folder)      -> the frames at ``fps``, as PNG files, in order
    encode(folder, fps, out, fmt)   -> a video of the folder's numbered PNGs at ``fps`` (mp4: H.264; gif)
    cut(video, start, seconds, out) -> a segment, re-encoded so it starts on its own frame
    concat(videos, out, fmt)        -> the segments one after another
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import algomesh
import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
TIMEOUT = 300  # seconds for one ffmpeg run (the call's own deadline is usually shorter)
# H.264 needs even sides; yuv420p is what every player reads.
MP4 = ["-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
       "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
GIF = ["-vf", "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse", "-loop", "0"]
FORMATS = {"mp4": MP4, "gif": GIF}
# Before a video from a caller: only local files and the usual video containers, so a
# playlist or a concat list posing as a video cannot make ffmpeg read other files or the network.
UNTRUSTED = ["-protocol_whitelist", "file",
             "-format_whitelist", "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,gif,mpegts,flv,ogg"]


@dataclass(frozen=True)
class Probe:
    duration: float  # seconds
    fps: float       # the source's frame rate (0 when the container does not say)
    width: int
    height: int


def _run(args: list[str], what: str) -> str:
    """Run ffmpeg; its stderr (where it reports) on success, InvalidError on failure."""
    try:
        out = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", *args], capture_output=True, text=True,
                             timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"ffmpeg took more than {TIMEOUT} s to {what}") from None
    if out.returncode != 0:
        said = " / ".join(line.strip() for line in out.stderr.strip().splitlines()[-3:])
        raise algomesh.InvalidError(f"cannot {what}: ffmpeg says: {said}")
    return out.stderr


def probe(video: Path) -> Probe:
    """Duration, frame rate and size from the container's header (nothing is decoded)."""
    # `ffmpeg -i FILE` with no output describes the input, then exits 1 ("At least one
    # output file must be specified"): read its description either way.
    out = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", *UNTRUSTED, "-i", str(video)], capture_output=True,
                         text=True, timeout=TIMEOUT).stderr
    stream = re.search(r"Stream #\S+.*?: Video: .*?, (\d+)x(\d+)[, \[].*", out)
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", out)
    if not stream or not duration:
        said = " / ".join(line.strip() for line in out.strip().splitlines()[-2:])
        raise algomesh.InvalidError(f"not a video ffmpeg can read: {said}")
    h, m, s = duration.groups()
    rate = re.search(r"(\d+(?:\.\d+)?) fps", stream.group(0))
    return Probe(int(h) * 3600 + int(m) * 60 + float(s), float(rate.group(1)) if rate else 0.0,
                 int(stream.group(1)), int(stream.group(2)))


def frames(video: Path, fps: float, folder: Path) -> list[Path]:
    """Every frame at ``fps`` frames a second (ffmpeg's fps filter: frames are dropped or
    repeated to keep time), as PNG files in order."""
    folder.mkdir(parents=True, exist_ok=True)
    _run([*UNTRUSTED, "-i", str(video), "-vf", f"fps={fps:g}", "-f", "image2", "-c:v", "png", str(folder / "%06d.png")],
         "split the video into frames")
    return sorted(folder.glob("*.png"))


def encode(folder: Path, fps: float, out: Path, fmt: str) -> Path:
    """The pictures ``folder/000001.png``, ``000002.png``, ... as a video at ``fps``: each
    one frame, so the video lasts their count / fps seconds."""
    _run(["-y", "-framerate", f"{fps:g}", "-i", str(folder / "%06d.png"), *FORMATS[fmt], "-f", fmt, str(out)],
         f"encode the frames as {fmt}")
    return out


def cut(video: Path, start: float, seconds: float, out: Path) -> Path:
    """``seconds`` of the video from ``start``, re-encoded (a cut by stream copy could only
    start on a key frame), nearly losslessly."""
    _run(["-y", "-ss", f"{start:.6f}", *UNTRUSTED, "-i", str(video), "-t", f"{seconds:.6f}", "-an", "-c:v", "libx264",
          "-preset", "veryfast", "-crf", "10", "-pix_fmt", "yuv420p", "-f", "mp4", str(out)],
         f"cut {seconds:g} s at {start:g} s")
    return out


def concat(videos: list[Path], out: Path, fmt: str) -> Path:
    """The videos one after another: copied as they are into mp4 (the segments were all
    encoded alike), or encoded once into a gif."""
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{v.resolve()}'\n" for v in videos))
    codec = ["-c", "copy"] if fmt == "mp4" else FORMATS[fmt]
    _run(["-y", "-f", "concat", "-safe", "0", "-i", str(listing), *codec, "-f", fmt, str(out)],
         f"join {len(videos)} segments")
    return out
