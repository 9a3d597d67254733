"""Rescue: whatever goes wrong below leaves as a typed AlgomeshError, never a bare crash.

Also ``rescued``, the same promise for ordinary grpc.aio servicer methods.
"""
from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from algomesh._errors import AlgomeshError, error, from_rpc_error, to_status

from .stack import Call, Handler, Reply

log = logging.getLogger("algomesh.rescue")


def as_typed(exc: BaseException) -> AlgomeshError:
    """Map a foreign exception to our hierarchy (the one place that does)."""
    if isinstance(exc, AlgomeshError):
        return exc
    if isinstance(exc, grpc.RpcError):
        return from_rpc_error(exc)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return error("DEADLINE_EXCEEDED", "the call ran past its deadline")
    log.exception("unexpected error on the request path", exc_info=exc)
    return error("INTERNAL", f"{type(exc).__name__}: {exc}")


def stray(exc: asyncio.CancelledError) -> AlgomeshError | None:
    """A CancelledError that is not this task's own cancellation (the call's deadline, the
    client giving up) came from below: a gRPC call whose channel closed under it. Left to
    rise, grpc.aio would take it for the RPC's cancellation and send the client nothing,
    so it waits for its deadline; it is answered as the instance going away instead."""
    task = asyncio.current_task()
    if task is None or task.cancelling():
        return None
    return error("INSTANCE_UNAVAILABLE", "the instance serving this call went away during it")


def rescue(inner: Handler) -> Handler:
    async def handle(call: Call) -> Reply:
        try:
            return await inner(call)
        except AlgomeshError:
            raise
        except asyncio.CancelledError as exc:
            typed = stray(exc)
            if typed is None:
                raise
            raise typed from None
        except Exception as exc:
            raise as_typed(exc) from None

    return handle


async def abort(context: grpc.aio.ServicerContext, exc: AlgomeshError) -> None:
    code, details, trailing = to_status(exc)
    await context.abort(code, details, trailing)


def rescued(method):
    """Decorate a grpc.aio servicer method: typed errors become statuses with ErrorInfo."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):  # context.abort: already a status
                raise
            await abort(context, as_typed(exc))

    return wrapper
