"""One distribution, folders mapped onto algomesh.*, a light client install."""
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = ("sdk", "sidecar", "registry", "runners", "proto")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_declared_and_typed():
    cfg = _pyproject()["tool"]["setuptools"]
    dirs = {str(Path(v)) for v in cfg["package-dir"].values()}
    assert set(cfg["packages"]) == set(cfg["package-dir"])
    for top in MAPPED:
        for init in (ROOT / top).rglob("__init__.py"):
            folder = str(init.parent.relative_to(ROOT))
            assert folder in dirs, f"{folder} has an __init__.py but is not mapped in pyproject.toml"
            assert (init.parent / "py.typed").exists(), f"{folder} lacks py.typed"


def test_no_bare_top_level_modules_are_importable():
    # only ours count: another distribution may own one of these names (proto-plus installs
    # `proto`, and comes with the `bench` extra's Ray)
    code = ("import importlib.util as u, sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
            "ours = lambda m, s: any(str(p).startswith(%r + '/' + m) for p in [s.origin or '', *(s.submodule_search_locations or [])]); "
            "print([m for m in ('sdk', 'sidecar', 'registry', 'runners', 'proto') if (s := u.find_spec(m)) and ours(m, s)])"
            % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "[]"


def test_the_sdk_imports_nothing_server_side():
    code = ("import sys, algomesh; c = algomesh.client('k', 'localhost:1'); c.algo('a/b'); "
            "heavy = ('uvloop', 'opentelemetry.sdk', 'consul', 'algomesh.sidecar', 'algomesh.registry', "
            "'algomesh.runners', 'grpc_health.v1', 'grpc_reflection.v1alpha'); "
            "print([m for m in sys.modules if m.startswith(heavy)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "[]"


def test_server_dependencies_are_an_extra():
    project = _pyproject()["project"]
    base = " ".join(project["dependencies"])
    for heavy in ("uvloop", "opentelemetry-sdk", "py-consul", "grpcio-health-checking"):
        assert heavy not in base
        assert any(d.startswith(heavy) for d in project["optional-dependencies"]["server"])
    assert project["requires-python"] == ">=3.11"
