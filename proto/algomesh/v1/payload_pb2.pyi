from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTENT_TYPE_UNSPECIFIED: _ClassVar[ContentType]
    CONTENT_TYPE_JSON: _ClassVar[ContentType]
    CONTENT_TYPE_TEXT: _ClassVar[ContentType]
    CONTENT_TYPE_BINARY: _ClassVar[ContentType]
    CONTENT_TYPE_DATA_REF: _ClassVar[ContentType]
CONTENT_TYPE_UNSPECIFIED: ContentType
CONTENT_TYPE_JSON: ContentType
CONTENT_TYPE_TEXT: ContentType
CONTENT_TYPE_BINARY: ContentType
CONTENT_TYPE_DATA_REF: ContentType

class Payload(_message.Message):
    __slots__ = ("content_type", "data")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    content_type: ContentType
    data: bytes
    def __init__(self, content_type: _Optional[_Union[ContentType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("input", "capture_stdout")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_STDOUT_FIELD_NUMBER: _ClassVar[int]
    input: Payload
    capture_stdout: bool
    def __init__(self, input: _Optional[_Union[Payload, _Mapping]] = ..., capture_stdout: _Optional[bool] = ...) -> None: ...

class CallResponse(_message.Message):
    __slots__ = ("output", "stdout", "duration")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    output: Payload
    stdout: str
    duration: float
    def __init__(self, output: _Optional[_Union[Payload, _Mapping]] = ..., stdout: _Optional[str] = ..., duration: _Optional[float] = ...) -> None: ...

class CallChunk(_message.Message):
    __slots__ = ("content_type", "data", "capture_stdout", "stdout", "duration")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    content_type: ContentType
    data: bytes
    capture_stdout: bool
    stdout: str
    duration: float
    def __init__(self, content_type: _Optional[_Union[ContentType, str]] = ..., data: _Optional[bytes] = ..., capture_stdout: _Optional[bool] = ..., stdout: _Optional[str] = ..., duration: _Optional[float] = ...) -> None: ...
