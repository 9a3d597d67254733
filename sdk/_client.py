"""The client: ``algomesh.client(key).algo("owner/name").pipe(input).result``.

Two clients of one shape. ``Client`` is for ordinary code: ``pipe`` starts the call at
once and returns a ``Response`` future; ``.result`` waits. Passing a response into the
next ``pipe`` chains without waiting (the next call starts when the first finishes), so
the whitepaper's ``algo2.pipe(algo1.pipe(input)).result`` costs one wait. ``AsyncClient``
is for asyncio code: ``await algo.pipe(x)``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, Sequence

import grpc

from algomesh.v1 import payload_pb2, registry_pb2, registry_pb2_grpc, traces_pb2, traces_pb2_grpc

from . import _local, _onloop, _wire
from ._archive import pack
from ._context import CALL_CONTEXT
from ._data import DataFile
from ._direct import Routes, aio_channel, sync_channel, went_away
from ._errors import AlgomeshError, error, from_rpc_error
from ._payload import content_type_name, decode, encode
from ._refs import Target, parse_target

if TYPE_CHECKING:
    from ._stream import AsyncStreamResponse, StreamResponse

__all__ = ["Client", "AsyncClient", "Algorithm", "AsyncAlgorithm", "Response", "Metadata", "client", "async_client"]


@dataclass(frozen=True)
class Metadata:
    content_type: str       # "json", "text" or "binary"
    duration: float         # seconds inside the algorithm's apply
    version: str            # the exact version that answered
    algorithm: str          # owner/name that answered
    stdout: str | None      # what the algorithm printed, when asked with stdout=True
    cold_start: bool = False
    trace_id: str = ""      # the call's trace: `algomesh trace TRACE_ID`, client.trace(...)
    cache_hit: bool = False  # answered from the algorithm's result cache (deterministic algorithms)


@dataclass(frozen=True)
class _Options:
    timeout: float = _wire.DEFAULT_TIMEOUT
    stdout: bool = False
    cache: bool = True      # False: bypass result caches (neither read nor written)


class _Raw:
    """A finished call: the undecoded CallResponse and its trailing metadata."""

    __slots__ = ("response", "trailing")

    def __init__(self, body: bytes, trailing: Any) -> None:
        self.response = payload_pb2.CallResponse.FromString(body)
        self.trailing = {k: v for k, v in (trailing or ())}

    def metadata(self) -> Metadata:
        r = self.response
        return Metadata(
            content_type=content_type_name(r.output.content_type),
            duration=r.duration,
            version=str(self.trailing.get(_wire.VERSION_KEY, "")),
            algorithm=str(self.trailing.get(_wire.ALGORITHM_KEY, "")),
            stdout=r.stdout if r.stdout else None,
            cold_start=self.trailing.get(_wire.COLD_START_KEY) == "1",
            trace_id=str(self.trailing.get(_wire.TRACE_ID_KEY, "")),
            cache_hit=self.trailing.get(_wire.CACHE_HIT_KEY) == "1",
        )


def _request(value: Any, options: _Options) -> bytes:
    payload = value.response.output if isinstance(value, _Raw) else encode(value)
    return payload_pb2.CallRequest(input=payload, capture_stdout=options.stdout).SerializeToString()


def _call_metadata(target: Target, api_key: str | None, context: tuple[tuple[str, str], ...],
                   value: Any = None, options: _Options | None = None) -> tuple[tuple[str, str], ...]:
    md: tuple[tuple[str, str], ...] = ((_wire.TARGET_KEY, str(target)),)
    if api_key:
        md += ((_wire.AUTH_KEY, f"Simple {api_key}"),)
    if options is not None and not options.cache:
        md += ((_wire.CACHE_KEY, "off"),)
    if isinstance(value, _Raw) and not context:  # chained onto a call: join its trace
        parent = value.trailing.get(_wire.TRACEPARENT_KEY)
        if parent:
            md += ((_wire.TRACEPARENT_KEY, str(parent)),)
    return md + context  # inside an algorithm: the call this pipe belongs to, and its trace


def _stream_route(algo: "Algorithm | AsyncAlgorithm", ingress: Callable[..., Any]) -> tuple[Any, Any, Any]:
    """A streamed call's ``Mesh/CallStream`` multicallable and metadata: straight to an
    instance once the client has a route (_direct.py), with the ingress as its fallback;
    else (or inside an algorithm) the ingress's, without one."""
    from ._stream import Fallback

    client, token = algo._client, CALL_CONTEXT.get()
    metadata = _call_metadata(algo.target, client.api_key, token, None, algo._options)
    routes = client._routes
    route = None if routes is None or token else routes.lookup(algo.target, stream=True)
    if route is None:
        return ingress, metadata, None
    exact, send = route
    return (send, _call_metadata(parse_target(exact), client.api_key, token, None, algo._options),
            Fallback(ingress, metadata, lambda: routes.drop(algo.target)))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# ---------------------------------------------------------------------------- sync


class _Outcome:
    """How a finished call reads, for both clients' responses."""

    _owner: Any = None  # the client that made the call: a data:// result reads through it

    def _raw(self) -> _Raw:
        raise NotImplementedError

    @property
    def result(self) -> Any:
        """The decoded output: str for TEXT, bytes for BINARY, a ``DataFile`` for a
        data:// reference, JSON values otherwise."""
        value = decode(self._raw().response.output)
        if isinstance(value, DataFile) and self._owner is not None:
            value._client = self._owner._sync()
        return value

    @property
    def metadata(self) -> Metadata:
        return self._raw().metadata()

    @property
    def error(self) -> AlgomeshError | None:
        """The call's typed error, or None if it succeeded (waits like ``.result``)."""
        try:
            self._raw()
        except AlgomeshError as exc:
            return exc
        return None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        return f"<algomesh.{type(self).__name__} {'done' if self.done() else 'pending'}>"  # type: ignore[attr-defined]


class Response(_Outcome):
    """A call in flight or finished. ``.result`` waits; ``await response`` works too."""

    def __init__(self, future: "concurrent.futures.Future[_Raw]", owner: "Client | None" = None) -> None:
        self._future = future
        self._owner = owner

    def _raw(self) -> _Raw:
        if not self._future.done() and _running_loop() is not None:
            raise RuntimeError(
                "Response.result would block the running event loop; "
                "use `await response` or algomesh.async_client()"
            )
        return self._future.result()

    def done(self) -> bool:
        return self._future.done()

    def __await__(self):  # type: ignore[no-untyped-def]
        yield from asyncio.wrap_future(self._future).__await__()
        return self


class Algorithm:
    """One algorithm, at a version or version range. Cheap to create."""

    def __init__(self, client: "Client", ref: str) -> None:
        self._client = client
        self.target = parse_target(ref)
        self._options = _Options()

    def set_options(self, timeout: float | None = None, stdout: bool | None = None,
                    cache: bool | None = None) -> "Algorithm":
        """Per-algorithm options (Algorithmia's names): timeout in seconds, stdout capture;
        ``cache=False``: bypass the algorithm's result cache (docs/caching.md)."""
        opts = self._options
        self._options = _Options(
            timeout=opts.timeout if timeout is None else float(timeout),
            stdout=opts.stdout if stdout is None else bool(stdout),
            cache=opts.cache if cache is None else bool(cache),
        )
        return self

    def pipe(self, input: Any) -> Response:
        """Call the algorithm with ``input``; a Response passed in is chained, not awaited."""
        out: concurrent.futures.Future[_Raw] = concurrent.futures.Future()
        token = CALL_CONTEXT.get()  # now, in the caller's context: chains start in other threads
        if isinstance(input, Response):
            def chain(prev: "concurrent.futures.Future[_Raw]") -> None:
                exc = prev.exception()
                if exc is not None:
                    out.set_exception(exc)
                else:
                    self._start(prev.result(), out, token)
            input._future.add_done_callback(chain)
        else:
            self._start(input, out, token)
        return Response(out, self._client)

    def _start(self, value: Any, out: "concurrent.futures.Future[_Raw]", token: tuple,
               ingress: bool = False) -> None:
        routes = self._client._routes
        route = None if ingress or routes is None or token else routes.lookup(self.target)
        try:
            body = _request(value, self._options)
            if route is None:
                send, target = self._client._call, self.target
            else:  # straight to an instance (_direct.py)
                send, target = route[1], parse_target(route[0])
            call = send.future(
                body,
                metadata=_call_metadata(target, self._client.api_key, token, value, self._options),
                timeout=self._options.timeout,
            )
        except AlgomeshError as exc:
            out.set_exception(exc)
            return

        def done(f: grpc.Future) -> None:
            try:
                out.set_result(_Raw(f.result(), f.trailing_metadata()))
            except grpc.RpcError as exc:
                typed = from_rpc_error(exc)
                if route is not None and went_away(typed):  # that instance is gone: ask again, via the ingress
                    routes.drop(self.target)
                    self._start(value, out, token, ingress=True)
                    return
                out.set_exception(typed)
            except AlgomeshError as exc:  # an in-process pipe's error, typed already (_local.py)
                out.set_exception(exc)
            except grpc.FutureCancelledError:
                out.set_exception(error("INTERNAL", "call cancelled"))
            except Exception as exc:  # undecodable response from a foreign server
                out.set_exception(error("INTERNAL", f"bad response: {exc!r}"))

        call.add_done_callback(done)

    def stream(self, source: Any, content_type: str | None = None) -> "StreamResponse":
        """Call the algorithm with ``source`` streamed in chunks (bytes, str, a file object,
        an iterable of bytes or str, an ``algomesh.Stream``, another ``StreamResponse``), for
        payloads of any size at bounded memory; the answer streams back. ``content_type``
        ("json", "text", "binary") overrides what the source implies. See docs/streaming.md."""
        from ._stream import start
        multicallable, metadata, fallback = _stream_route(self, self._client._call_stream)
        return start(multicallable, source, content_type, self._options.stdout, metadata, self._options.timeout,
                     fallback)

    def map(self, inputs: Any, concurrency: int = 8, *, progress: bool | None = None,
            total: int | None = None) -> list[Response]:
        """Call the algorithm on every input, at most ``concurrency`` calls in flight (the
        mesh balances each over the instances); finished responses in input order, each
        with its own ``.result`` / ``.error``. A bar on stderr when it is a terminal
        (``progress=True``: always). See docs/sdk.md."""
        from ._fanout import run_sync
        return list(run_sync(self, inputs, concurrency, progress=progress, total=total,
                             bounded=False, method="Algorithm.map"))

    def imap(self, inputs: Any, concurrency: int = 8, *, progress: bool | None = None,
             total: int | None = None) -> Iterator[Response]:
        """``map`` as an iterator: each response in input order as soon as it can, holding
        a bounded number of them."""
        from ._fanout import run_sync
        return run_sync(self, inputs, concurrency, progress=progress, total=total,
                        bounded=True, method="Algorithm.imap")

    def __or__(self, other: Any) -> Any:
        """``a | b``: one pipeline of both (algomesh.Pipeline)."""
        from ._compose import Pipeline
        return Pipeline((self, other))

    def __repr__(self) -> str:
        return f"<algomesh.Algorithm {self.target}>"


class Client:
    """A connection to the mesh. Inside an algorithm it reaches the algorithm's sidecar."""

    def __init__(self, api_key: str | None = None, address: str | None = None, *, direct: bool | None = None) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get(_wire.ENV_API_KEY)
        self.address = _wire.resolve_address(address)
        self._channel = grpc.insecure_channel(self.address, options=_wire.CLIENT_CHANNEL_OPTIONS)
        # straight to the instances (docs/sdk.md); never from inside an algorithm (its sidecar routes)
        if direct is None:
            direct = os.environ.get(_wire.ENV_DIRECT, "") in ("1", "true", "yes")
        self._routes = (Routes(self.address, self.api_key, sync_channel)
                        if direct and not self.address.startswith("unix:") else None)
        self._call: Callable[..., Any] = self._channel.unary_unary(_wire.CALL_METHOD)
        local = _local.for_address(self.address)  # inside an algorithm that runs in its sidecar
        if local is not None:
            self._call = _local.LocalUnary(*local)
        self._call_stream: Callable[..., Any] = self._channel.stream_stream(_wire.CALL_STREAM_METHOD)
        local_stream = _local.stream_for_address(self.address)
        if local_stream is not None:
            self._call_stream = _local.LocalStream(*local_stream)
        elif (loop := _onloop.loop_for(self.address)) is not None:  # inside a runner process
            self._call_stream = _onloop.LoopStream(self._call_stream, self.address, loop)

    def algo(self, ref: str) -> Algorithm:
        return Algorithm(self, ref)

    def data(self, uri: str) -> DataFile:
        """The ``data://owner/collection/path`` object (or collection, for ``list``):
        put, get, save, list, delete; pass it to ``pipe`` as a reference (docs/data.md)."""
        return DataFile(uri, self)

    def _sync(self) -> "Client":
        return self

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    # registry -----------------------------------------------------------------------

    def _registry(self, method: str, request: Any, timeout: float = 60.0, stub: Any = None) -> Any:
        """One unary control-plane RPC (Registry, or ``stub``'s service) with this client's key."""
        stub = stub or registry_pb2_grpc.RegistryStub(self._channel)
        auth = ((_wire.AUTH_KEY, f"Simple {self.api_key}"),) if self.api_key else ()
        try:
            return getattr(stub, method)(request, timeout=timeout, metadata=auth)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def publish(self, path: str | os.PathLike[str], *, private: bool = False) -> registry_pb2.PublishResponse:
        """Publish the algorithm folder at ``path`` (its algomesh.toml names it). A private
        version resolves only for its owner."""
        return self._registry("Publish", registry_pb2.PublishRequest(archive=pack(path), private=private),
                              timeout=1500)  # a compiled runtime's build step runs inside publish

    def scale(self, ref: str, instances: int) -> registry_pb2.ScaleResponse:
        """Run ``instances`` instances of the version ``ref`` resolves to."""
        return self._registry("Scale", registry_pb2.ScaleRequest(target=str(parse_target(ref)), instances=instances),
                              timeout=600)

    def algorithms(self) -> list[registry_pb2.AlgorithmSummary]:
        return list(self._registry("ListAlgorithms", registry_pb2.ListAlgorithmsRequest()).algorithms)

    def versions(self, name: str) -> list[registry_pb2.VersionInfo]:
        """Every published version of ``owner/name``, newest first."""
        return list(self._registry("ListVersions", registry_pb2.ListVersionsRequest(name=name)).versions)

    def instances(self, name: str = "") -> list[registry_pb2.Instance]:
        return list(self._registry("ListInstances", registry_pb2.ListInstancesRequest(algorithm=name)).instances)

    # API keys -----------------------------------------------------------------------

    def create_key(self, owner: str, *, algorithms: Sequence[str] = (), pipelines: bool = True,
                   data: str = "read", admin: bool = False) -> registry_pb2.CreateKeyResponse:
        """A new API key for ``owner`` (needs an admin key). ``.secret`` is the key: it is
        shown this once. ``algorithms``: globs it may call (default any); ``pipelines``:
        may the algorithms it calls pipe onward; ``data``: none, read or write."""
        return self._registry("CreateKey", registry_pb2.CreateKeyRequest(
            owner=owner, algorithms=list(algorithms), no_pipelines=not pipelines, data=data, admin=admin))

    def keys(self, owner: str = "") -> list[registry_pb2.ApiKey]:
        """The keys this key may see (an admin's: every key, or ``owner``'s), without secrets."""
        return list(self._registry("ListKeys", registry_pb2.ListKeysRequest(owner=owner)).keys)

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key by its id; calls with it are refused from when this returns."""
        self._registry("RevokeKey", registry_pb2.RevokeKeyRequest(id=key_id))

    def issue_certificate(self, identity: str, lifetime: float = 3600) -> registry_pb2.IssueCertificateResponse:
        """A mesh certificate naming ``identity`` for an operator's tools (admin keys only):
        PEMs of the mesh CA, the certificate and its key. Verify servers as ``mesh.algomesh``."""
        return self._registry("IssueCertificate", registry_pb2.IssueCertificateRequest(
            identity=identity, lifetime_seconds=int(lifetime)))

    def trace(self, trace_id: str) -> traces_pb2.Trace:
        """Every span the control plane kept of one call (its ``metadata.trace_id``)."""
        return self._registry("GetTrace", traces_pb2.GetTraceRequest(trace_id=trace_id),
                              stub=traces_pb2_grpc.TracesStub(self._channel))

    def close(self) -> None:
        if self._routes is not None:
            for channel in self._routes.opened():
                channel.close()
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client(api_key: str | None = None, address: str | None = None, *, direct: bool | None = None) -> Client:
    """``algomesh.client("KEY")``: key and address fall back to ALGOMESH_API_KEY,
    ALGOMESH_ADDRESS, then localhost:7700. ``direct=True`` (or ALGOMESH_DIRECT=1): calls
    go straight to the algorithms' instances once the client knows where they run, not
    through the ingress (docs/sdk.md)."""
    return Client(api_key, address, direct=direct)


# ---------------------------------------------------------------------------- async


class AsyncResponse(_Outcome):
    """A call running as an asyncio task. ``await`` it, then read ``.result``."""

    def __init__(self, task: "asyncio.Future[_Raw]", owner: "AsyncClient | None" = None) -> None:
        self._owner = owner
        self._task = task

    def _raw(self) -> _Raw:
        if not self._task.done():
            raise RuntimeError("the response is not ready: `await` it first")
        return self._task.result()

    def done(self) -> bool:
        return self._task.done()

    def __await__(self):  # type: ignore[no-untyped-def]
        yield from self._task.__await__()
        return self


class AsyncAlgorithm:
    def __init__(self, client: "AsyncClient", ref: str) -> None:
        self._client = client
        self.target = parse_target(ref)
        self._options = _Options()

    set_options = Algorithm.set_options  # same options, same semantics

    def pipe(self, input: Any) -> AsyncResponse:
        """Start the call now; ``await`` the response. Responses passed in are chained."""
        return AsyncResponse(asyncio.ensure_future(self._run(input, CALL_CONTEXT.get())), self._client)

    async def _run(self, value: Any, token: tuple) -> _Raw:
        if isinstance(value, AsyncResponse):
            value = (await value)._raw()
        elif isinstance(value, Response):
            value = (await value)._raw()
        body = _request(value, self._options)
        routes = self._client._routes
        route = None if routes is None or token else routes.lookup(self.target)
        if route is not None:  # straight to an instance (_direct.py)
            exact, send = route
            call = send(body, metadata=_call_metadata(parse_target(exact), self._client.api_key, token, value,
                                                      self._options), timeout=self._options.timeout)
            try:
                reply = await call
                return _Raw(reply, await call.trailing_metadata())
            except grpc.RpcError as exc:
                typed = from_rpc_error(exc)
                if not went_away(typed):
                    raise typed from None
                routes.drop(self.target)  # that instance is gone: ask again, via the ingress
        call = self._client._stub()(
            body,
            metadata=_call_metadata(self.target, self._client.api_key, token, value, self._options),
            timeout=self._options.timeout,
        )
        try:
            reply = await call
            return _Raw(reply, await call.trailing_metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def stream(self, source: Any, content_type: str | None = None) -> "AsyncStreamResponse":
        """As ``Algorithm.stream`` (``source`` may also be an async iterable); read the answer
        with ``async for chunk in answer.chunks()`` or ``await answer.save(path)``."""
        from ._stream import AsyncStreamResponse
        self._client._stub()
        multicallable, metadata, fallback = _stream_route(self, self._client._stream_multicallable)
        return AsyncStreamResponse(multicallable, source, content_type, self._options.stdout, metadata,
                                   self._options.timeout, fallback)

    async def map(self, inputs: Any, concurrency: int = 8, *, progress: bool | None = None,
                  total: int | None = None) -> list[AsyncResponse]:
        """``await algo.map(inputs)``: as ``Algorithm.map``; ``inputs`` may be async."""
        from ._fanout import collect, run_async
        return await collect(run_async(self, inputs, concurrency, progress=progress, total=total, bounded=False))

    def imap(self, inputs: Any, concurrency: int = 8, *, progress: bool | None = None,
             total: int | None = None) -> AsyncIterator[AsyncResponse]:
        """``async for response in algo.imap(inputs)``: in input order, as soon as it can."""
        from ._fanout import run_async
        return run_async(self, inputs, concurrency, progress=progress, total=total, bounded=True)

    def __or__(self, other: Any) -> Any:
        from ._compose import AsyncPipeline
        return AsyncPipeline((self, other))

    def __repr__(self) -> str:
        return f"<algomesh.AsyncAlgorithm {self.target}>"


class AsyncClient:
    def __init__(self, api_key: str | None = None, address: str | None = None, *, direct: bool | None = None) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get(_wire.ENV_API_KEY)
        self.address = _wire.resolve_address(address)
        self._channel: grpc.aio.Channel | None = None
        self._multicallable: Any = None
        if direct is None:  # as Client: straight to the instances once routed (_direct.py)
            direct = os.environ.get(_wire.ENV_DIRECT, "") in ("1", "true", "yes")
        self._routes = (Routes(self.address, self.api_key, aio_channel)
                        if direct and not self.address.startswith("unix:") else None)

    def _stub(self) -> Any:
        if self._multicallable is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=_wire.CHANNEL_OPTIONS)
            self._multicallable = self._channel.unary_unary(_wire.CALL_METHOD)
            self._stream_multicallable = self._channel.stream_stream(_wire.CALL_STREAM_METHOD)
            local = _local.for_address(self.address)  # inside an algorithm that runs in its sidecar
            if local is not None:
                self._multicallable = _local.AioLocalUnary(*local)
            local_stream = _local.stream_for_address(self.address)
            if local_stream is not None:
                self._stream_multicallable = _local.AioLocalStream(*local_stream, self._stream_multicallable)
        return self._multicallable

    def algo(self, ref: str) -> AsyncAlgorithm:
        return AsyncAlgorithm(self, ref)

    def data(self, uri: str) -> DataFile:
        """As ``Client.data``; its transfers block, so run them in a thread
        (``await asyncio.to_thread(f.save, path)``) inside an event loop."""
        return DataFile(uri, self._sync())

    def _sync(self) -> Client:
        """A blocking twin on the same address and key, for data:// transfers."""
        twin = getattr(self, "_twin", None)
        if twin is None:
            twin = self._twin = Client(self.api_key, self.address)
        return twin

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._routes is not None:
            for channel in self._routes.opened():
                await channel.close()
        twin = getattr(self, "_twin", None)
        if twin is not None:
            twin.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def async_client(api_key: str | None = None, address: str | None = None, *,
                 direct: bool | None = None) -> AsyncClient:
    return AsyncClient(api_key, address, direct=direct)
