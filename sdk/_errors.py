"""Every error algomesh raises, and the one table that maps it to the wire.

The hierarchy::

    AlgomeshError                      every error below; .reason .message .code
    ├── AlgorithmError                 the algorithm raised (ALGORITHM_ERROR, ALGORITHM_LOAD_FAILED)
    ├── NotFoundError                  (ALGORITHM_NOT_FOUND, VERSION_NOT_FOUND, KEY_NOT_FOUND,
    │                                  TRACE_NOT_FOUND)
    ├── InvalidError                   the request is wrong (INVALID_INPUT, INVALID_VERSION,
    │                                  INVALID_MANIFEST, INVALID_ARCHIVE, STREAMING_UNSUPPORTED)
    ├── VersionExistsError             a published version is immutable (VERSION_EXISTS)
    ├── PermissionError_               (PERMISSION_DENIED, UNAUTHENTICATED)
    ├── LimitError                     (PAYLOAD_TOO_LARGE, OVERLOADED)
    ├── PipelineError                  the pipeline is too deep or loops (CALL_DEPTH_EXCEEDED, CALL_CYCLE)
    ├── DeadlineExceededError          the call ran past its deadline (DEADLINE_EXCEEDED)
    ├── RunnerCrashedError             the algorithm's process died during the call (RUNNER_CRASHED)
    ├── UnavailableError               nothing could serve the call (INSTANCE_UNAVAILABLE,
    │                                  LAUNCH_FAILED, MESH_UNAVAILABLE, REGISTRY_UNAVAILABLE)
    └── InternalError                  a bug in algomesh (INTERNAL)

On the wire an error is a gRPC status whose ``grpc-status-details-bin`` trailer holds a
``google.rpc.Status`` with a ``google.rpc.ErrorInfo`` (domain ``algomesh``, the stable
reason, and metadata such as ``algorithm`` and ``version``) and, for algorithm errors, a
``google.rpc.DebugInfo`` with the algorithm's stack trace. ``REASONS`` is the only place a
reason meets its gRPC code and its exception class; servers raise ``AlgomeshError``
subclasses and the rescue layer turns them into statuses with ``to_status``; the SDK turns
statuses back into exceptions with ``from_rpc_error``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "algomesh"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class AlgomeshError(Exception):
    """Base of every algomesh error. ``reason`` is stable; ``message`` is for people."""

    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        stacktrace: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.stacktrace = stacktrace

    @property
    def code(self) -> grpc.StatusCode:
        return REASONS[self.reason].code if self.reason in REASONS else grpc.StatusCode.UNKNOWN

    @property
    def algorithm(self) -> str | None:
        return self.metadata.get("algorithm")

    @property
    def version(self) -> str | None:
        return self.metadata.get("version")

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class AlgorithmError(AlgomeshError):
    """The algorithm's own code raised. ``stacktrace`` is the algorithm's traceback."""

    default_reason = "ALGORITHM_ERROR"

    @property
    def error_type(self) -> str | None:
        return self.metadata.get("error_type")


class NotFoundError(AlgomeshError):
    default_reason = "ALGORITHM_NOT_FOUND"


class InvalidError(AlgomeshError):
    default_reason = "INVALID_INPUT"


class VersionExistsError(AlgomeshError):
    default_reason = "VERSION_EXISTS"


class PermissionError_(AlgomeshError):  # noqa: N801 - the builtin name is taken
    default_reason = "PERMISSION_DENIED"


class LimitError(AlgomeshError):
    default_reason = "OVERLOADED"


class PipelineError(AlgomeshError):
    """The shape of the pipeline is refused: too deep, or a cycle."""

    default_reason = "CALL_CYCLE"


class DeadlineExceededError(AlgomeshError):
    default_reason = "DEADLINE_EXCEEDED"


class RunnerCrashedError(AlgomeshError):
    default_reason = "RUNNER_CRASHED"


class UnavailableError(AlgomeshError):
    default_reason = "INSTANCE_UNAVAILABLE"


class InternalError(AlgomeshError):
    default_reason = "INTERNAL"


@dataclass(frozen=True)
class Reason:
    code: grpc.StatusCode
    exception: type[AlgomeshError]
    hint: str  # what the reader should do next


_C = grpc.StatusCode
# The one table: reason -> gRPC code, exception class, and what to do about it.
REASONS: dict[str, Reason] = {
    "ALGORITHM_ERROR": Reason(_C.UNKNOWN, AlgorithmError, "the algorithm raised; see its stack trace"),
    "ALGORITHM_LOAD_FAILED": Reason(_C.FAILED_PRECONDITION, AlgorithmError, "the algorithm's load() raised; fix it and publish a new version"),
    "ALGORITHM_NOT_FOUND": Reason(_C.NOT_FOUND, NotFoundError, "check the name with `algomesh ls`"),
    "VERSION_NOT_FOUND": Reason(_C.NOT_FOUND, NotFoundError, "check the versions with `algomesh versions NAME`"),
    "INVALID_INPUT": Reason(_C.INVALID_ARGUMENT, InvalidError, "fix the input or its content type"),
    "INVALID_VERSION": Reason(_C.INVALID_ARGUMENT, InvalidError, "use latest, 1.2.3, 1.2.* or 1.*"),
    "INVALID_TARGET": Reason(_C.INVALID_ARGUMENT, InvalidError, "name an algorithm as owner/name[/version]"),
    "INVALID_MANIFEST": Reason(_C.INVALID_ARGUMENT, InvalidError, "fix algomesh.toml"),
    "INVALID_ARCHIVE": Reason(_C.INVALID_ARGUMENT, InvalidError, "publish a folder with algomesh.toml at its root"),
    "BUILD_FAILED": Reason(_C.FAILED_PRECONDITION, InvalidError, "fix the build step or the sources; the compiler's output is the stack trace"),
    "VERSION_EXISTS": Reason(_C.ALREADY_EXISTS, VersionExistsError, "versions are immutable; bump the version"),
    "TRACE_NOT_FOUND": Reason(_C.NOT_FOUND, NotFoundError, "traces are kept for a day (--trace-hours); copy the id from the response's trace_id"),
    "DATA_NOT_FOUND": Reason(_C.NOT_FOUND, NotFoundError, "check the URI with `algomesh data ls data://OWNER/COLLECTION`"),
    "INVALID_DATA_URI": Reason(_C.INVALID_ARGUMENT, InvalidError, "name data as data://owner/collection/path (or data://.my/collection/path)"),
    "DATA_STORE_FULL": Reason(_C.RESOURCE_EXHAUSTED, LimitError, "free space in the control plane's data folder or delete objects"),
    "KEY_NOT_FOUND": Reason(_C.NOT_FOUND, NotFoundError, "check the key's id with `algomesh keys list`"),
    "UNAUTHENTICATED": Reason(_C.UNAUTHENTICATED, PermissionError_, "pass a valid API key"),
    "PERMISSION_DENIED": Reason(_C.PERMISSION_DENIED, PermissionError_, "ask for the permission named"),
    "PAYLOAD_TOO_LARGE": Reason(_C.RESOURCE_EXHAUSTED, LimitError, "send a smaller payload or a data:// reference"),
    "STREAMING_UNSUPPORTED": Reason(_C.UNIMPLEMENTED, InvalidError, "this algorithm's runner takes no streams: call it with pipe() (up to the payload limit) or pass a data:// reference"),
    "OVERLOADED": Reason(_C.RESOURCE_EXHAUSTED, LimitError, "retry later or add instances"),
    "DEADLINE_EXCEEDED": Reason(_C.DEADLINE_EXCEEDED, DeadlineExceededError, "raise the timeout or make the stage faster"),
    "CALL_DEPTH_EXCEEDED": Reason(_C.FAILED_PRECONDITION, PipelineError, "a pipeline this deep is probably runaway recursion"),
    "CALL_CYCLE": Reason(_C.FAILED_PRECONDITION, PipelineError, "break the loop between the algorithms named"),
    "RUNNER_CRASHED": Reason(_C.INTERNAL, RunnerCrashedError, "the algorithm's process died; it restarts on the next call"),
    "INSTANCE_UNAVAILABLE": Reason(_C.UNAVAILABLE, UnavailableError, "retry; the instance went away"),
    "LAUNCH_FAILED": Reason(_C.UNAVAILABLE, UnavailableError, "the algorithm could not be started; see the mesh's logs"),
    "MESH_UNAVAILABLE": Reason(_C.UNAVAILABLE, UnavailableError, "is `algomesh up` running at that address?"),
    "REGISTRY_UNAVAILABLE": Reason(_C.UNAVAILABLE, UnavailableError, "the registry's store (Consul) is unreachable; running instances keep serving from the last good view"),
    "INTERNAL": Reason(_C.INTERNAL, InternalError, "a bug in algomesh; please report it"),
}

# For statuses that arrive without an ErrorInfo (raw gRPC failures).
_CODE_FALLBACK: dict[grpc.StatusCode, str] = {
    _C.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    _C.UNAVAILABLE: "MESH_UNAVAILABLE",
    _C.RESOURCE_EXHAUSTED: "PAYLOAD_TOO_LARGE",
    _C.UNAUTHENTICATED: "UNAUTHENTICATED",
    _C.PERMISSION_DENIED: "PERMISSION_DENIED",
    _C.NOT_FOUND: "ALGORITHM_NOT_FOUND",
    _C.INVALID_ARGUMENT: "INVALID_INPUT",
}


def error(reason: str, message: str, *, stacktrace: str = "", **metadata: str) -> AlgomeshError:
    """Build the exception for ``reason`` (the class comes from the table)."""
    cls = REASONS[reason].exception if reason in REASONS else InternalError
    return cls(message, reason=reason, metadata=metadata, stacktrace=stacktrace)


# A status travels in trailing metadata, which gRPC caps at 8 KiB by default: the message
# twice (grpc-message, percent-encoded: up to 3 bytes per byte; and in the details, base64:
# 4 per 3) and the stack trace once. Cut to these sizes (in UTF-8 bytes) so that an error
# quoting a long input or a long algorithm message keeps its type instead of being lost.
MESSAGE_BYTES, STACK_BYTES, META_BYTES = 512, 2560, 160


def _cut(text: str, limit: int, *, tail: bool = False) -> str:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    if tail:  # a stack trace's end is where the error is
        return "…(cut)\n" + raw[-limit:].decode("utf-8", "ignore")
    return raw[:limit].decode("utf-8", "ignore") + "…(cut)"


def to_status(exc: AlgomeshError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """(code, details, trailing metadata) for ``context.abort`` on a grpc.aio server."""
    code = exc.code
    message = _cut(exc.message, MESSAGE_BYTES)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN,
                                       metadata={_cut(k, 64): _cut(str(v), META_BYTES) for k, v in exc.metadata.items()})
    details = [_pack(info)]
    if exc.stacktrace:
        details.append(_pack(error_details_pb2.DebugInfo(detail=_cut(exc.stacktrace, STACK_BYTES, tail=True))))
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return code, message, ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def from_status(
    code: grpc.StatusCode, details: str | None, trailing: Mapping[str, object] | None
) -> AlgomeshError:
    """Rebuild the typed error from a status and its trailing metadata."""
    raw = (trailing or {}).get(STATUS_DETAILS_KEY)
    if isinstance(raw, bytes):
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except Exception:  # a foreign server's garbage: fall through to the code
            status = None
        if status is not None:
            reason, meta, stack = None, {}, ""
            for any_msg in status.details:
                if any_msg.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    any_msg.Unpack(info)
                    if info.domain == DOMAIN:
                        reason, meta = info.reason, dict(info.metadata)
                elif any_msg.Is(error_details_pb2.DebugInfo.DESCRIPTOR):
                    dbg = error_details_pb2.DebugInfo()
                    any_msg.Unpack(dbg)
                    stack = dbg.detail
            if reason:
                return error(reason, status.message or (details or ""), stacktrace=stack, **meta)
    reason = _CODE_FALLBACK.get(code, "INTERNAL")
    text = details or code.name
    if code is _C.UNAVAILABLE:
        text = f"cannot reach the mesh: {text}"
    elif code is _C.DEADLINE_EXCEEDED:
        text = f"no answer within the call's timeout ({text})"
    return error(reason, text, grpc_code=code.name)


def from_rpc_error(exc: grpc.RpcError) -> AlgomeshError:
    trailing = {k: v for k, v in (exc.trailing_metadata() or ())}  # type: ignore[attr-defined]
    return from_status(exc.code(), exc.details(), trailing)  # type: ignore[attr-defined]


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)  # type: ignore[arg-type]
    return out
