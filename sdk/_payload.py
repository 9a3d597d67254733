"""Python values <-> payloads, as Algorithmia's client maps them.

str -> TEXT, bytes -> BINARY, a ``DataFile`` -> DATA_REF (its data:// URI, a reference
to the blob store: docs/data.md), anything else -> JSON; and back. A payload that is
already encoded (a previous response, or ``Payload``) passes through untouched.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from algomesh.v1 import payload_pb2

from ._errors import error

JSON = payload_pb2.CONTENT_TYPE_JSON
TEXT = payload_pb2.CONTENT_TYPE_TEXT
BINARY = payload_pb2.CONTENT_TYPE_BINARY
DATA_REF = payload_pb2.CONTENT_TYPE_DATA_REF

_NAMES = {JSON: "json", TEXT: "text", BINARY: "binary", DATA_REF: "data"}
_BY_NAME = {v: k for k, v in _NAMES.items()}


@dataclass(frozen=True)
class Payload:
    """Bytes plus a content type ("json", "text" or "binary"), sent as they are."""

    data: bytes
    content_type: str = "binary"

    def to_proto(self) -> payload_pb2.Payload:
        if self.content_type not in _BY_NAME:
            raise ValueError(f"content_type must be one of {sorted(_BY_NAME)}, not {self.content_type!r}")
        return payload_pb2.Payload(content_type=_BY_NAME[self.content_type], data=bytes(self.data))


def content_type_name(ct: int) -> str:
    return _NAMES.get(ct, "unspecified")


def encode(value: Any) -> payload_pb2.Payload:
    if isinstance(value, Payload):
        return value.to_proto()
    if isinstance(value, str):
        return payload_pb2.Payload(content_type=TEXT, data=value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return payload_pb2.Payload(content_type=BINARY, data=bytes(value))
    from ._data import DataFile
    if isinstance(value, DataFile):
        return payload_pb2.Payload(content_type=DATA_REF, data=value.uri.encode("utf-8"))
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise error("INVALID_INPUT", f"cannot encode {type(value).__name__} as JSON: {exc}") from None
    return payload_pb2.Payload(content_type=JSON, data=text.encode("utf-8"))


def decode(payload: payload_pb2.Payload) -> Any:
    """Decode a payload; a malformed one raises InvalidError (INVALID_INPUT)."""
    ct, data = payload.content_type, payload.data
    if ct == BINARY:
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error("INVALID_INPUT", f"{content_type_name(ct)} payload is not UTF-8: {exc}") from None
    if ct == TEXT:
        return text
    if ct == DATA_REF:
        from ._data import DataFile
        return DataFile(text)  # INVALID_DATA_URI if it is not one
    if ct == JSON:
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:  # also: nested too deep, a 5000-digit integer
            raise error("INVALID_INPUT", f"payload declared JSON is not valid JSON: {exc}") from None
    raise error("INVALID_INPUT", f"unsupported content type {ct}")
