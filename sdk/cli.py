"""The ``algomesh`` command.

    algomesh up [--data-dir DIR] [--port PORT]      run the mesh on this machine
    algomesh publish PATH                           publish an algorithm folder
    algomesh call owner/name[/version] -d JSON      call one (also --text, --file, --ref URI, stdin)
    algomesh data put FILE data://owner/coll/path   upload (also get URI [FILE], ls URI, rm [-r] URI)
    algomesh ls                                     list algorithms
    algomesh versions owner/name                    list an algorithm's versions
    algomesh scale owner/name[/version] N           run N instances of it
    algomesh keys create --owner OWNER [...]        make an API key (printed once)
    algomesh keys list | keys revoke ID             see and revoke API keys
    algomesh cert IDENTITY --out DIR                a mesh certificate for grpcurl & co (admin)
    algomesh trace TRACE_ID                         a call's spans as a waterfall

Errors print one line (``error: REASON: message``) and exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import _wire
from ._client import Client
from ._data import DataFile
from ._datauri import parse_data_uri
from ._errors import REASONS, AlgomeshError, AlgorithmError, error
from ._payload import Payload


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algomesh", description="Pipe machine-learning models together.")
    p.add_argument("--address", help=f"the mesh (default ${_wire.ENV_ADDRESS} or {_wire.DEFAULT_ADDRESS})")
    p.add_argument("--api-key", help=f"API key (default ${_wire.ENV_API_KEY})")
    p.add_argument("-v", "--verbose", action="store_true", help="print stack traces of algorithm errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the mesh on this machine (registry, ingress, launcher)")
    up.add_argument("--data-dir", type=Path, help="where the registry, artifacts and logs live "
                    "(default: $XDG_DATA_HOME/algomesh or ~/.local/share/algomesh)")
    up.add_argument("--port", type=int, default=_wire.DEFAULT_PORT, help="gRPC port (0 picks a free one)")
    up.add_argument("--http-port", type=int, default=None,
                    help="HTTP port of /metrics (default: the gRPC port + 1; 0 picks a free one)")
    up.add_argument("--trace-hours", type=float, default=24.0, help="how long spans are kept (default 24)")
    up.add_argument("--prestart-threshold", type=float, default=0.5,
                    help="pre-start an algorithm's followers when at least this share of its calls call them "
                         "(default 0.5; above 1: never)")
    up.add_argument("--scale-interval", type=float, default=1.0,
                    help="seconds between the scheduler's looks at every instance (idle stop, scale-up; default 1)")
    up.add_argument("--scale-up-after", type=float, default=3.0,
                    help="seconds an algorithm's calls must queue (in flight per instance above its "
                         "scaling.scale_up_in_flight) before the scheduler adds an instance (default 3)")
    up.add_argument("--max-instances", type=int, default=256,
                    help="instances of all algorithms together on this machine (default 256); the scheduler "
                         "also keeps memory free (--memory-reserve-mb)")
    up.add_argument("--memory-reserve-mb", type=int, default=None,
                    help="memory left free when pre-starting or adding instances (default: 10%% of RAM, "
                         "at least 512)")
    up.add_argument("--cache-mb", type=float, default=None,
                    help="result cache of each instance of a deterministic algorithm, in MiB (default: "
                         "$ALGOMESH_CACHE_MB, else 64; 0 turns caching off; docs/caching.md)")
    up.add_argument("--launcher", choices=("local", "kubernetes"), default="local",
                    help="where instances run: local subprocesses (default) or a Kubernetes Deployment per "
                         "algorithm version (docs/kubernetes.md; pip install 'algomesh[kubernetes]')")
    up.add_argument("--mesh-port", type=int, default=0,
                    help="the port sidecars reach the control plane on (default: any free one)")
    k8s = up.add_argument_group("kubernetes launcher (--launcher kubernetes)")
    k8s.add_argument("--k8s-registry-address", default="",
                     help="host:port the pods' sidecars dial: the control plane's mesh Service")
    k8s.add_argument("--k8s-namespace", default=None, help="default: the control plane's own, else algomesh")
    k8s.add_argument("--k8s-sidecar-image", default=None)
    k8s.add_argument("--k8s-runner-image", action="append", default=[], metavar="RUNTIME=IMAGE",
                     help="the runner container's image for a runtime (repeatable)")
    k8s.add_argument("--k8s-artifacts-claim", default=None, help="the ReadWriteMany PVC holding the artifacts")
    k8s.add_argument("--k8s-service-account", default=None)
    k8s.add_argument("--k8s-image-pull-secret", action="append", default=[])
    k8s.add_argument("--k8s-api-url", default=None, help="the API server, unauthenticated (kubectl proxy)")
    k8s.add_argument("--k8s-kubeconfig", default=None)
    k8s.add_argument("--k8s-context", default=None)
    up.add_argument("--trace-max-spans", type=int, default=200_000,
                    help="at most this many spans are kept, the oldest dropped first (default 200000)")
    up.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    up.add_argument("--registry", default=os.environ.get("ALGOMESH_REGISTRY", ""),
                    help="registry store: sqlite:///path/registry.db or consul://host:8500[/prefix] "
                         "(default $ALGOMESH_REGISTRY, else sqlite in the data dir)")
    up.add_argument("--health-interval", type=float, default=1.0,
                    help="seconds between health probes of each instance (default 1)")
    up.add_argument("--max-payload-mb", type=float, default=10.0,
                    help="largest unary payload in MiB (default 10; at most 64, the transport's limit)")
    up.add_argument("--max-stream-mb", type=float, default=65536.0,
                    help="largest streamed payload (algo.stream) in MiB, counted as it passes (default 65536)")
    up.add_argument("--insecure", action="store_true",
                    help="DANGEROUS: no API keys and no mesh certificates; anyone who reaches the ports "
                         "can call, publish and scale")
    up.add_argument("--cert-hours", type=float, default=24.0,
                    help="lifetime of an instance's mesh certificate; instances are replaced at 2/3 of it "
                         "(default 24)")
    up.add_argument("--new-admin-key", action="store_true",
                    help="create and print another admin key (when the first one is lost)")

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kc = ksub.add_parser("create", help="create an API key and print it (once)")
    kc.add_argument("--owner", required=True, help="whose private algorithms it reaches; what it may publish")
    kc.add_argument("--algorithms", nargs="+", default=[], metavar="GLOB",
                    help="the algorithms it may call, as globs of owner/name (default: any)")
    kc.add_argument("--no-pipelines", action="store_true",
                    help="the algorithms it calls may not pipe to others")
    kc.add_argument("--data", choices=("none", "read", "write"), default="read",
                    help="data:// access (default read)")
    kc.add_argument("--admin", action="store_true", help="may manage keys and every owner's algorithms")
    kl = ksub.add_parser("list", help="list API keys (never their secrets)")
    kl.add_argument("--owner", default="", help="only this owner's keys")
    kr = ksub.add_parser("revoke", help="revoke an API key by its id")
    kr.add_argument("id")

    tr = sub.add_parser("trace", help="print a call's trace as a waterfall (the id: call --meta, "
                        "or a response's metadata.trace_id)")
    tr.add_argument("trace_id")

    cert = sub.add_parser("cert", help="a mesh certificate for an operator's tools (admin key)")
    cert.add_argument("identity", help="the name it carries, e.g. ops/debug@0")
    cert.add_argument("--out", type=Path, required=True, help="folder for ca.pem, cert.pem, key.pem")
    cert.add_argument("--hours", type=float, default=1.0, help="validity (default 1, at most 168)")

    pub = sub.add_parser("publish", help="publish the algorithm folder at PATH")
    pub.add_argument("path", type=Path)
    pub.add_argument("--private", action="store_true", help="resolve only for the algorithm's owner")

    sc = sub.add_parser("scale", help="run N instances of an algorithm's version")
    sc.add_argument("algorithm", help="owner/name or owner/name/version")
    sc.add_argument("instances", type=int)

    call = sub.add_parser("call", help="call an algorithm and print its result")
    call.add_argument("algorithm", help="owner/name or owner/name/version (1.2.3, 1.2.*, 1.*)")
    data = call.add_mutually_exclusive_group()
    data.add_argument("-d", "--data", help="input as JSON ('-' reads stdin)")
    data.add_argument("-t", "--text", help="input as text ('-' reads stdin)")
    data.add_argument("-f", "--file", help="input as binary, from a file ('-' reads stdin)")
    data.add_argument("-r", "--ref", help="input as a data:// reference (the algorithm reads the object)")
    call.add_argument("--timeout", type=float, default=_wire.DEFAULT_TIMEOUT, help="seconds (default 300)")
    call.add_argument("--stdout", action="store_true", help="also print what the algorithm printed (to stderr)")
    call.add_argument("-o", "--output", type=Path, help="write the result to a file")
    call.add_argument("--meta", action="store_true", help="print the response metadata (to stderr)")
    call.add_argument("-s", "--stream", action="store_true",
                      help="stream the input (-f/-t/-d, a file or '-' for stdin, read as it is sent) and the "
                           "answer (to -o or stdout, as it arrives): payloads of any size (docs/streaming.md)")

    dat = sub.add_parser("data", help="data:// objects: put, get, ls, rm (docs/data.md)")
    dsub = dat.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dp = dsub.add_parser("put", help="upload a local file ('-': stdin) to a data:// URI")
    dp.add_argument("source")
    dp.add_argument("uri")
    dg = dsub.add_parser("get", help="download a data:// object to a file (default: stdout)")
    dg.add_argument("uri")
    dg.add_argument("dest", nargs="?", type=Path)
    dl = dsub.add_parser("ls", help="list data://owner (collections) or data://owner/collection[/prefix]")
    dl.add_argument("uri")
    dr = dsub.add_parser("rm", help="delete a data:// object (-r: a collection or folder)")
    dr.add_argument("uri")
    dr.add_argument("-r", "--recursive", action="store_true")

    sub.add_parser("ls", help="list algorithms")
    ver = sub.add_parser("versions", help="list the versions of an algorithm")
    ver.add_argument("name", help="owner/name")
    return p


def _input(a: argparse.Namespace, client: Client) -> Any:
    if a.ref is not None:
        return client.data(a.ref)
    if a.text is not None:
        return sys.stdin.read() if a.text == "-" else a.text
    if a.file is not None:
        data = sys.stdin.buffer.read() if a.file == "-" else Path(a.file).read_bytes()
        return Payload(data, "binary")
    raw = a.data if a.data is not None and a.data != "-" else sys.stdin.buffer.read()
    # Sent as declared: a malformed document gets the mesh's INVALID_INPUT, like any client.
    return Payload(raw.encode() if isinstance(raw, str) else raw, "json")


def _stream_input(a: argparse.Namespace) -> tuple[Any, str]:
    """``call --stream``'s source, never read whole: a file or stdin, chunk by chunk."""
    if a.ref is not None:
        raise error("INVALID_INPUT", "--stream sends bytes; pass the reference without --stream")
    given, kind = ((a.text, "text") if a.text is not None else (a.file, "binary") if a.file is not None
                   else (a.data if a.data is not None else "-", "json"))
    if given == "-":
        return sys.stdin.buffer, kind
    if kind == "binary":
        return open(given, "rb"), kind
    return given.encode(), kind


def _call_stream(algo: Any, a: argparse.Namespace) -> None:
    source, kind = _stream_input(a)
    answer = algo.stream(source, content_type=kind)
    if a.output is not None:
        answer.save(a.output)
    else:
        for chunk in answer.chunks():
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    md = answer.metadata
    if a.stdout and md.stdout:
        sys.stderr.write(md.stdout)
    if a.meta:
        print(f"{md.algorithm} {md.version}  {md.content_type}  apply {md.duration * 1000:.1f} ms  streamed"
              f"  trace {md.trace_id}", file=sys.stderr)


def _print_result(result: Any, output: Path | None) -> None:
    if output is not None:
        if isinstance(result, bytes):
            output.write_bytes(result)
        elif isinstance(result, str):
            output.write_text(result)
        elif isinstance(result, DataFile):  # the object itself, streamed into the file
            result.save(output)
        else:
            output.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    if isinstance(result, bytes):
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
    elif isinstance(result, (str, DataFile)):  # a reference prints as its URI: `algomesh data get URI`
        print(result)
    else:
        print(json.dumps(result, ensure_ascii=False, indent=2))


def _up(a: argparse.Namespace) -> int:
    try:
        from algomesh.sidecar import controlplane
    except ImportError as exc:
        print(f"error: `algomesh up` needs the server extra (pip install 'algomesh[server]'): {exc}",
              file=sys.stderr)
        return 1
    if a.trace_hours <= 0 or a.trace_max_spans < 1:
        print("error: --trace-hours and --trace-max-spans must be positive", file=sys.stderr)
        return 2
    if not 0.002 <= a.cert_hours <= 24 * 365:
        print("error: --cert-hours must be between 0.002 (7 s, for tests) and 8760", file=sys.stderr)
        return 2
    if not 0 < a.max_payload_mb <= _wire.MAX_MESSAGE_BYTES / 2**20:
        print(f"error: --max-payload-mb must be in (0, {_wire.MAX_MESSAGE_BYTES // 2**20}]", file=sys.stderr)
        return 2
    if not 0 < a.max_stream_mb <= 1 << 30:
        print("error: --max-stream-mb must be in (0, 1073741824]", file=sys.stderr)
        return 2
    if a.cache_mb is not None and not 0 <= a.cache_mb <= 1 << 20:
        print("error: --cache-mb must be between 0 (off) and 1048576", file=sys.stderr)
        return 2
    data_dir = a.data_dir or controlplane.default_data_dir()
    runner_images = {}
    for item in a.k8s_runner_image:
        runtime, eq, image = item.partition("=")
        if not eq or not runtime or not image:
            print(f"error: --k8s-runner-image wants RUNTIME=IMAGE, not {item!r}", file=sys.stderr)
            return 2
        runner_images[runtime] = image
    k8s = {"registry_address": a.k8s_registry_address, "namespace": a.k8s_namespace,
           "sidecar_image": a.k8s_sidecar_image, "runner_images": runner_images or None,
           "artifacts_claim": a.k8s_artifacts_claim, "service_account": a.k8s_service_account,
           "image_pull_secrets": tuple(a.k8s_image_pull_secret), "api_url": a.k8s_api_url,
           "kubeconfig": a.k8s_kubeconfig, "context": a.k8s_context}
    controlplane.run(controlplane.UpConfig(data_dir=data_dir.resolve(), host=a.host, port=a.port,
                                           registry_url=a.registry, health_interval=a.health_interval,
                                           max_payload=int(a.max_payload_mb * 2**20),
                                           max_stream=int(a.max_stream_mb * 2**20),
                                           insecure=a.insecure, new_admin_key=a.new_admin_key,
                                           cert_lifetime=a.cert_hours * 3600, http_port=a.http_port,
                                           trace_retention=a.trace_hours * 3600,
                                           trace_max_spans=a.trace_max_spans,
                                           prestart_threshold=a.prestart_threshold,
                                           scale_interval=a.scale_interval, scale_up_after=a.scale_up_after,
                                           max_instances=a.max_instances,
                                           memory_reserve_mb=a.memory_reserve_mb, launcher=a.launcher,
                                           mesh_port=a.mesh_port, cache_mb=a.cache_mb,
                                           kubernetes=tuple((k, v) for k, v in k8s.items() if v not in (None, ""))))
    return 0


def _run(a: argparse.Namespace) -> int:
    if a.command == "up":
        return _up(a)
    client = Client(a.api_key, a.address)
    if a.command == "publish":
        resp = client.publish(a.path, private=a.private)
        m = resp.version.manifest
        what = "published" if resp.created else "already published (same content)"
        private = " (private)" if resp.version.private else ""
        print(f"{m.name} {m.version}{private} {what}  sha256:{resp.version.digest[:16]}")
    elif a.command == "scale":
        if a.instances < 0:
            raise error("INVALID_INPUT", "the number of instances cannot be negative")
        resp = client.scale(a.algorithm, a.instances)
        m = resp.version.manifest
        print(f"{m.name} {m.version}: {len(resp.instances)} instance(s) passing")
        for inst in resp.instances:
            print(f"  {inst.id}  {inst.address}")
    elif a.command == "call":
        algo = client.algo(a.algorithm).set_options(timeout=a.timeout, stdout=a.stdout)
        if a.stream:
            _call_stream(algo, a)
            return 0
        t0 = time.perf_counter()
        resp = algo.pipe(_input(a, client))
        result = resp.result
        md = resp.metadata
        if a.stdout and md.stdout:
            sys.stderr.write(md.stdout)
        if a.meta:
            print(f"{md.algorithm} {md.version}  {md.content_type}  apply {md.duration * 1000:.1f} ms  "
                  f"total {(time.perf_counter() - t0) * 1000:.1f} ms{'  cold start' if md.cold_start else ''}"
                  f"  trace {md.trace_id}", file=sys.stderr)
        _print_result(result, a.output)
    elif a.command == "ls":
        algos = client.algorithms()
        if not algos:
            print("no algorithms published yet: `algomesh publish PATH`")
        for s in algos:
            print(f"{s.name:32} {s.latest_version:12} {s.version_count:3} version(s)  {s.description}")
    elif a.command == "keys":
        _keys(client, a)
    elif a.command == "data":
        _data(client, a)
    elif a.command == "trace":
        print(waterfall(client.trace(a.trace_id)))
    elif a.command == "cert":
        resp = client.issue_certificate(a.identity, a.hours * 3600)
        a.out.mkdir(parents=True, exist_ok=True)
        for name, pem in (("ca.pem", resp.ca), ("cert.pem", resp.cert), ("key.pem", resp.key)):
            path = a.out / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pem)
        print(f"wrote {a.out}/ca.pem cert.pem key.pem; e.g. grpcurl -cacert {a.out}/ca.pem -cert {a.out}/cert.pem "
              f"-key {a.out}/key.pem -servername mesh.algomesh SIDECAR_ADDRESS list")
    elif a.command == "versions":
        for v in client.versions(a.name):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.published_at))
            print(f"{v.manifest.version:16} {'private' if v.private else 'public':8} {when}  "
                  f"sha256:{v.digest[:16]}")
    return 0


def _data(client: Client, a: argparse.Namespace) -> None:
    f = client.data(a.uri)
    if a.data_command == "put":
        info = f.put(sys.stdin.buffer if a.source == "-" else Path(a.source))
        print(f"{info.uri}  {info.size} bytes  sha256:{info.sha256[:16]}")
    elif a.data_command == "get":
        if a.dest is None:
            for chunk in f.chunks():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        else:
            f.save(a.dest)
    elif a.data_command == "ls":
        if not parse_data_uri(a.uri).collection:
            for c in f.collections():
                print(c.uri)
            return
        for i in f.infos():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.modified))
            print(f"{i.size:>12}  {when}  {i.uri}")
    elif a.data_command == "rm":
        n = f.delete(recursive=a.recursive)
        print(f"deleted {n} object(s)")


def _keys(client: Client, a: argparse.Namespace) -> None:
    if a.keys_command == "create":
        resp = client.create_key(a.owner, algorithms=a.algorithms, pipelines=not a.no_pipelines,
                                 data=a.data, admin=a.admin)
        print(resp.secret)  # alone on stdout, so scripts can capture it
        print(f"created key {resp.key.id} for {resp.key.owner} ({_scopes(resp.key)}); "
              "it is shown only this once", file=sys.stderr)
    elif a.keys_command == "list":
        found = client.keys(a.owner)
        if not found:
            print("no keys")
        for k in found:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created_at))
            print(f"{k.id}  {k.owner:16} {when}  {_scopes(k)}")
    elif a.keys_command == "revoke":
        client.revoke_key(a.id)
        print(f"revoked {a.id}")


def waterfall(trace, width: int = 40) -> str:
    """One line per span, children under their parent, a bar for where its time went."""
    spans = list(trace.spans)
    if not spans:
        return f"trace {trace.trace_id}: no spans"
    t0 = min(s.start_unix_nano for s in spans)
    total = max(max(s.end_unix_nano for s in spans) - t0, 1)
    ids = {s.span_id for s in spans}
    children: dict[str, list] = {}
    for s in spans:
        children.setdefault(s.parent_span_id if s.parent_span_id in ids else "", []).append(s)
    lines = [f"trace {trace.trace_id}  {len(spans)} spans  {total / 1e6:.1f} ms"]

    def walk(parent: str, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x.start_unix_nano):
            start, dur = s.start_unix_nano - t0, s.end_unix_nano - s.start_unix_nano
            left = round(start / total * width)
            bar = " " * left + "█" * max(1, round(dur / total * width))
            flags = []
            if s.attributes.get("algomesh.cold_start") == "true":
                flags.append("cold start")
            if s.error:
                flags.append(f"ERROR {s.status_message}")
            version = s.attributes.get("algomesh.version", "")
            label = s.name + (f" ({version})" if version and version not in s.name else "")
            lines.append(f"{start / 1e6:8.1f} ms {dur / 1e6:8.1f} ms  {bar:<{width + 1}} {'  ' * depth}{label}"
                         + (f"  [{', '.join(flags)}]" if flags else ""))
            walk(s.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def _scopes(k) -> str:
    parts = ["admin"] if k.admin else []
    parts.append("algorithms " + (",".join(k.algorithms) if k.algorithms else "*"))
    parts.append("no pipelines" if k.no_pipelines else "pipelines")
    parts.append(f"data {k.data or 'read'}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        return _run(a)
    except AlgomeshError as exc:
        hint = REASONS[exc.reason].hint if exc.reason in REASONS else ""
        if exc.reason == "BUILD_FAILED" and exc.stacktrace:  # the compiler's output, then what it means
            print(exc.stacktrace.rstrip("\n"), file=sys.stderr)
        print(f"error: {exc.reason}: {exc.message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        if a.verbose and isinstance(exc, AlgorithmError) and exc.stacktrace:
            print(exc.stacktrace, file=sys.stderr, end="")
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
