"""Resolve ``owner/name[/VERSION]`` against a store: the one place the rules are applied."""
from __future__ import annotations

from algomesh._errors import error
from algomesh._refs import parse_target
from algomesh.v1 import registry_pb2

from .store import Store
from .versions import parse_spec, pick


def resolve(store: Store, target: str) -> registry_pb2.VersionInfo:
    t = parse_target(target)
    spec = parse_spec(t.version)
    infos = store.versions(t.name)
    if not infos:
        raise error("ALGORITHM_NOT_FOUND", f"no algorithm named {t.name}; `algomesh ls` lists them",
                    algorithm=t.name)
    by_version = {i.manifest.version: i for i in infos}
    chosen = pick(spec, by_version)
    if chosen is None:
        known = ", ".join(sorted(by_version)) or "none"
        what = "no release" if spec.text == "latest" else f"no version matching {spec.text}"
        raise error("VERSION_NOT_FOUND", f"{t.name} has {what} (published: {known})",
                    algorithm=t.name, version=t.version)
    return by_version[chosen]
