"""The committed stubs are what the .proto files generate, byte for byte."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_are_fresh(tmp_path):
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(tmp_path)
    committed = ROOT / "proto" / "algomesh" / "v1"
    fresh = sorted(p.relative_to(tmp_path / "algomesh" / "v1") for p in (tmp_path / "algomesh" / "v1").iterdir())
    assert fresh, "protoc generated nothing"
    assert {p.suffix for p in fresh} >= {".py", ".pyi"}
    stale = [str(p) for p in fresh if (committed / p).read_bytes() != (tmp_path / "algomesh" / "v1" / p).read_bytes()]
    assert not stale, f"regenerate with `python proto/generate.py`: stale {stale}"
    extra = {p.name for p in committed.glob("*_pb2*.py*")} - {p.name for p in fresh}
    assert not extra, f"committed stubs with no .proto: {extra}"


def test_stubs_import_as_algomesh_v1():
    from algomesh.v1 import mesh_pb2_grpc, payload_pb2, registry_pb2, runner_pb2  # noqa: F401

    assert payload_pb2.DESCRIPTOR.package == "algomesh.v1"
    assert "algomesh.v1" in sys.modules
