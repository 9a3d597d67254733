"""``algomesh.toml``: what an algorithm declares about itself.

    name = "demo/clean"            # owner/name
    version = "1.0.0"              # semver; immutable once published
    runtime = "python"             # python (more in runners/)
    entrypoint = "clean.py"        # the module with apply(input) and optional load()
    description = "..."
    deterministic = false          # results may be cached
    isolation = "process"          # or "shared" (python): run inside the sidecar's process

    [permissions]
    can_call = ["demo/tokenize"]   # globs of algorithms this one may pipe to; "*" for any
    callability = "public"         # or "private"

    [scaling]
    min_instances = 0              # instances kept running (reservations)
    max_instances = 0              # 0: no limit of its own
    idle_seconds = 300
    concurrency = 1                # calls one instance runs at once
    max_in_flight = 64             # calls one instance holds (running + waiting); more: OVERLOADED
    scale_up_in_flight = 0         # calls in flight per instance past which another starts (0: concurrency)
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from algomesh._errors import error
from algomesh._refs import check_name
from algomesh.v1 import registry_pb2

from .versions import parse_version

FILENAME = "algomesh.toml"
RUNTIMES = ("python", "node", "go", "rust", "cpp", "java", "exec")
MAX_INSTANCES = 64  # instances of one version, whatever a manifest or a Scale asks
_TOP_KEYS = {"name", "version", "runtime", "entrypoint", "description", "deterministic",
             "permissions", "scaling", "build", "isolation"}
ISOLATIONS = ("process", "shared")


def _bad(msg: str) -> Exception:
    return error("INVALID_MANIFEST", f"{FILENAME}: {msg}")


def _get(table: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise _bad(f"{key} must be {kind.__name__}, not {type(value).__name__}")
    return value


def parse_manifest(text: str) -> registry_pb2.Manifest:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(f"not valid TOML: {exc}") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise _bad(f"unknown keys {sorted(unknown)}")
    for key in ("name", "version", "entrypoint"):
        if key not in doc:
            raise _bad(f"{key} is required")
    name = check_name(_get(doc, "name", str, ""))
    version = _get(doc, "version", str, "")
    parse_version(version)
    runtime = _get(doc, "runtime", str, "python")
    if runtime not in RUNTIMES:
        raise _bad(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    entrypoint = _get(doc, "entrypoint", str, "")
    if not entrypoint or entrypoint.startswith("/") or ".." in Path(entrypoint).parts:
        raise _bad("entrypoint must be a relative path inside the algorithm's folder")
    isolation = _get(doc, "isolation", str, "process")
    if isolation not in ISOLATIONS:
        raise _bad(f"isolation must be process or shared, not {isolation!r}")
    if isolation == "shared" and runtime != "python":
        raise _bad("isolation = \"shared\" runs the algorithm inside the (Python) sidecar: runtime python only")
    perms = _get(doc, "permissions", dict, {})
    can_call = _get(perms, "can_call", list, [])
    if not all(isinstance(g, str) for g in can_call):
        raise _bad("permissions.can_call must be a list of strings")
    callability = _get(perms, "callability", str, "public")
    if callability not in ("public", "private"):
        raise _bad("permissions.callability must be public or private")
    scaling = _get(doc, "scaling", dict, {})
    numbers = {k: _get(scaling, k, int, d) for k, d in
               (("min_instances", 0), ("max_instances", 0), ("idle_seconds", 300), ("concurrency", 1),
                ("max_in_flight", 64), ("scale_up_in_flight", 0))}
    if any(not 0 <= v <= 2**32 - 1 for v in numbers.values()):
        raise _bad("scaling numbers must be between 0 and 4294967295")
    if numbers["min_instances"] > MAX_INSTANCES or numbers["max_instances"] > MAX_INSTANCES:
        raise _bad(f"scaling.min_instances and max_instances are at most {MAX_INSTANCES} on this mesh")
    if numbers["max_instances"] and numbers["max_instances"] < max(1, numbers["min_instances"]):
        raise _bad("scaling.max_instances (0 = no limit) must be at least max(1, min_instances)")
    if numbers["concurrency"] < 1:
        raise _bad("scaling.concurrency must be at least 1")
    if numbers["max_in_flight"] < numbers["concurrency"]:
        raise _bad("scaling.max_in_flight must be at least scaling.concurrency")
    return registry_pb2.Manifest(
        name=name,
        version=version,
        runtime=runtime,
        entrypoint=entrypoint,
        description=_get(doc, "description", str, ""),
        deterministic=_get(doc, "deterministic", bool, False),
        build=_get(doc, "build", str, ""),
        isolation="" if isolation == "process" else isolation,  # the default stays unset: digests unchanged
        permissions=registry_pb2.Permissions(can_call=can_call, callability=callability),
        scaling=registry_pb2.Scaling(**numbers),
    )


def read_manifest(folder: Path) -> registry_pb2.Manifest:
    path = Path(folder) / FILENAME
    if not path.is_file():
        raise error("INVALID_ARCHIVE", f"no {FILENAME} at the root of {folder}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"{FILENAME} is not UTF-8 text: {exc}") from None
    return parse_manifest(text)
