from algomesh.v1 import payload_pb2 as _payload_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class LoadRequest(_message.Message):
    __slots__ = ("algorithm", "version")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    version: str
    def __init__(self, algorithm: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("duration", "runtime")
    DURATION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    duration: float
    runtime: str
    def __init__(self, duration: _Optional[float] = ..., runtime: _Optional[str] = ...) -> None: ...
