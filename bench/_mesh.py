"""An algomesh path's mesh, built from public surfaces only: the algorithm folders (with
the path's manifest changes, written into a temporary copy), ``algomesh up`` with its
production defaults (run as bench/coldstart.py runs it), and the SDK to publish.

``processes()`` names the processes a mesh runs, from /proc: the ``algomesh up`` process
(the ingress, with the control plane: registry, scheduler, trace store), and for each
algorithm its sidecar(s) and their runner(s).
"""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any, Mapping

from bench import _procs
from bench.coldstart import Up
from bench.paths import HERE, Mesh


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to a manifest")


def dump_toml(doc: Mapping[str, Any]) -> str:
    """A manifest as TOML: top-level keys, then one ``[table]`` per dict (manifests are flat)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, Mapping)]
    for k, v in doc.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{k}]", *(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())]
    return "\n".join(lines) + "\n"


def merge(base: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """``change`` over ``base``, table by table."""
    out = dict(base)
    for k, v in change.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, Mapping) else v
    return out


def materialize(mesh: Mesh, root: Path) -> list[Path]:
    """Copies of the mesh's algorithm folders under ``root``, their manifests changed as
    the description says. Returns the folders to publish, in order."""
    folders = []
    for i, rel in enumerate(mesh.algorithms):
        src = HERE / rel
        dst = root / f"{i}-{rel.replace('/', '-')}"
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        change = merge(mesh.manifest.get("*", {}), mesh.manifest.get(rel, {}))
        if change:
            toml = dst / "algomesh.toml"
            toml.write_text(dump_toml(merge(tomllib.loads(toml.read_text()), change)))
        folders.append(dst)
    return folders


INGRESS = "ingress+control plane"
OFF_PATH = "control plane (off the path)"


class MeshServer:
    """One ``algomesh up`` on a data dir of its own, with a description's algorithms published."""

    def __init__(self, name: str, mesh: Mesh, work: Path) -> None:
        self.name, self.mesh = name, mesh
        self.folders = materialize(mesh, work / f"{name}-algorithms")
        self.up = Up(name, work / name, list(mesh.up_args))
        self.names: list[str] = []

    def start(self) -> None:
        """Waits for the banner and publishes every algorithm (instances start on the first call)."""
        self.up.wait_banner()
        for folder in self.folders:
            self.names.append(tomllib.loads((folder / "algomesh.toml").read_text())["name"])
            self.up.client.publish(folder)

    @property
    def address(self) -> str:
        return self.up.address

    @property
    def key(self) -> str:
        return self.up.key

    def processes(self, direct: bool = False) -> dict[str, int]:
        """label -> pid: the ingress (``algomesh up``), and each algorithm's sidecars and runners.
        A direct client does not call through the ingress, but the control plane in the same
        process still takes every call's spans: its CPU is counted, labelled as off the path."""
        top = self.up.popen.pid
        out = {OFF_PATH if direct else INGRESS: top}
        for pid in _procs.descendants(top):
            try:
                cmd = _procs.cmdline(pid)
            except OSError:
                continue
            if "algomesh.sidecar" not in cmd or "--algorithm" not in cmd:
                continue
            name = cmd[cmd.index("--algorithm") + 1]
            label = f"sidecar {name}"
            n = 2
            while label in out:
                label, n = f"sidecar {name} #{n}", n + 1
            out[label] = pid
            for r, child in enumerate(_procs.descendants(pid)):
                out[label.replace("sidecar", "runner") + (f" ({r + 1})" if r else "")] = child
        return out

    def log_tail(self) -> str:
        return self.up.log_tail()
