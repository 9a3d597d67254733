#!/usr/bin/env python3
"""Calling algomesh with NO generated stubs and no .proto files, from Python (docs/clients.md).

Every message type (algomesh.v1.CallRequest, google.rpc.ErrorInfo, ...) is fetched from the
mesh's server reflection with grpcio-reflection's client and built at run time with
protobuf's message_factory; the algomesh package is not imported.

    reflect.py [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON
    reflect.py [--address HOST:PORT] [--key API_KEY] list      (Registry.ListAlgorithms)
    reflect.py [--address HOST:PORT] services                   (what reflection serves)

--address defaults to $ALGOMESH_ADDRESS, then localhost:7700; --key to $ALGOMESH_API_KEY.
Needs: pip install grpcio grpcio-reflection protobuf.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

# A status without an ErrorInfo (the transport failed, nothing of algomesh answered) maps by
# its code, as the Python SDK does (docs/contract.md, "Errors").
FALLBACK = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    grpc.StatusCode.UNAVAILABLE: "MESH_UNAVAILABLE",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "PAYLOAD_TOO_LARGE",
    grpc.StatusCode.UNAUTHENTICATED: "UNAUTHENTICATED",
    grpc.StatusCode.PERMISSION_DENIED: "PERMISSION_DENIED",
    grpc.StatusCode.NOT_FOUND: "ALGORITHM_NOT_FOUND",
    grpc.StatusCode.INVALID_ARGUMENT: "INVALID_INPUT",
}
MAX_MESSAGE = 64 << 20  # the transport's ceiling; the mesh's payload limit is policy


class Reflected:
    """Message classes and unary callables for whatever the server describes."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)

    def message(self, full_name: str):
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def method(self, full_name: str):
        """``full_name`` like ``algomesh.v1.Mesh.Call``: (callable, request class)."""
        service, _, name = full_name.rpartition(".")
        m = self.pool.FindServiceByName(service).methods_by_name[name]  # asks the server for the service's file
        request = message_factory.GetMessageClass(m.input_type)
        response = message_factory.GetMessageClass(m.output_type)
        rpc = self.channel.unary_unary(f"/{m.containing_service.full_name}/{m.name}",
                                       request_serializer=request.SerializeToString,
                                       response_deserializer=response.FromString)
        return rpc, request


def print_error(reflected: Reflected, err: grpc.RpcError) -> int:
    """The typed error from grpc-status-details-bin, decoded with reflected google.rpc types."""
    code, message = err.code(), err.details() or ""
    reason, meta, stack = None, {}, ""
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw:
        status = reflected.message("google.rpc.Status").FromString(raw)
        message = status.message or message
        for detail in status.details:
            name = detail.type_url.rsplit("/", 1)[-1]
            if name == "google.rpc.ErrorInfo":
                info = reflected.message(name).FromString(detail.value)
                if info.domain == "algomesh":
                    reason, meta = info.reason, dict(info.metadata)
            elif name == "google.rpc.DebugInfo":
                stack = reflected.message(name).FromString(detail.value).detail
    reason = reason or FALLBACK.get(code, "INTERNAL")
    print(f"error: {reason} (gRPC {code.name}): {message}", file=sys.stderr)
    for key in sorted(meta):
        print(f"  {key}: {meta[key]}", file=sys.stderr)
    if stack:
        print("stack trace:\n" + "\n".join("  " + line for line in stack.rstrip().splitlines()), file=sys.stderr)
    if meta.get("trace_id"):
        print(f"trace-id: {meta['trace_id']}")
    return 1


def print_payload(payload) -> None:
    kind = payload.DESCRIPTOR.fields_by_name["content_type"].enum_type.values_by_number[payload.content_type].name
    if kind == "CONTENT_TYPE_JSON":
        print("result (json):", json.dumps(json.loads(payload.data), separators=(",", ":"), ensure_ascii=False))
    elif kind == "CONTENT_TYPE_TEXT":
        print("result (text):", payload.data.decode("utf-8", "replace"))
    else:
        print(f"result (binary, {len(payload.data)} bytes):", base64.b64encode(payload.data).decode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("ALGOMESH_ADDRESS") or "localhost:7700")
    parser.add_argument("--key", default=os.environ.get("ALGOMESH_API_KEY", ""))
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("command", choices=["call", "list", "services"])
    parser.add_argument("args", nargs="*")
    a = parser.parse_args()
    wants = {"call": 2, "list": 0, "services": 0}[a.command]
    if len(a.args) != wants:
        parser.error(f"{a.command} takes {wants} argument(s)")
    auth = (("authorization", f"Simple {a.key}"),) if a.key else ()

    channel = grpc.insecure_channel(a.address, options=(("grpc.max_send_message_length", MAX_MESSAGE),
                                                        ("grpc.max_receive_message_length", MAX_MESSAGE)))
    reflected = Reflected(channel)
    try:
        if a.command == "services":
            for service in sorted(reflected.db.get_services()):
                print(service)
                for m in reflected.pool.FindServiceByName(service).methods:
                    print(f"  rpc {m.name}({m.input_type.full_name}) returns ({m.output_type.full_name})")
            return 0
        if a.command == "list":
            rpc, request = reflected.method("algomesh.v1.Registry.ListAlgorithms")
            for algo in rpc(request(), metadata=auth, timeout=a.timeout).algorithms:
                print(f"{algo.name}  {algo.latest_version}  {algo.description}")
            return 0
        target, text = a.args
        try:
            json.loads(text)
        except ValueError as e:
            parser.error(f"INPUT_JSON is not JSON ({e}); a text input is a JSON string, e.g. '\"hello\"'")
        rpc, request = reflected.method("algomesh.v1.Mesh.Call")
        req = json_format.ParseDict({"input": {"content_type": "CONTENT_TYPE_JSON",
                                               "data": base64.b64encode(text.encode()).decode()}}, request())
        res, call = rpc.with_call(req, metadata=(*auth, ("algomesh-target", target)), timeout=a.timeout)
        trailers = dict(call.trailing_metadata() or ())
        print_payload(res.output)
        print(f"algorithm: {trailers.get('algomesh-algorithm', '')} {trailers.get('algomesh-version', '')}")
        print(f"trace-id: {trailers.get('algomesh-trace-id', '')}")
        return 0
    except grpc.RpcError as err:
        return print_error(reflected, err)
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
