"""One distribution, folders mapped onto algomesh.*, a light client install."""
import shutil
import subprocess
import sys
import tomllib
import zipfile
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


def test_the_wheel_holds_every_package_with_its_data_and_builds_without_warnings(tmp_path):
    """A non-editable install gets what the editable one serves from the checkout: the
    dashboard's files, the protos and py.typed. Built from a copy of the mapped folders (files
    without the build products in them, so no stale build/ tree) with the venv's setuptools."""
    cfg = _pyproject()["tool"]["setuptools"]
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "target", "build")
    for folder in {Path(v).parts[0] for v in cfg["package-dir"].values()}:
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    output = built.stdout + built.stderr
    assert "Package would be ignored" not in output and "absent from the `packages`" not in output, output
    (wheel,) = (tmp_path / "dist").glob("algomesh-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        index = archive.read("algomesh/sidecar/static/index.html")

    from algomesh.sidecar.dashboard import _FILES
    served = {f"algomesh/sidecar/static/{name}" for name, _ in _FILES.values()}
    assert served <= names, served - names
    protos = {f"algomesh/v1/{p.name}" for p in (ROOT / "proto" / "algomesh" / "v1").glob("*.proto")}
    assert protos and protos <= names, protos - names
    for package in cfg["packages"]:
        if package != "algomesh.sidecar.static":
            assert f"{package.replace('.', '/')}/py.typed" in names, package
    assert index == (ROOT / "sidecar" / "static" / "index.html").read_bytes()  # what the checkout serves
