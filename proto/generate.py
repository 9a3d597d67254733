"""Regenerate the committed Python stubs from proto/algomesh/v1/*.proto.

    python proto/generate.py            # write next to the .proto files
    python proto/generate.py OUT_DIR    # write into OUT_DIR (the freshness test uses this)

The protos say `package algomesh.v1;`, so the generated imports
(`from algomesh.v1 import payload_pb2`) need no rewriting: pyproject.toml maps the
Python package `algomesh.v1` onto this folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "algomesh" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # build-time tool, not a runtime dependency

    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)
