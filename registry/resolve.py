"""Resolve ``owner/name[/VERSION]``: the one place the rules are applied, over the store's
versions (the control plane) or a local view of them (sidecars, the ingress)."""
from __future__ import annotations

from typing import Iterable

from algomesh._errors import error
from algomesh._refs import parse_target
from algomesh.v1 import registry_pb2

from .store import Store
from .versions import parse_spec, pick


def owner_of(name: str) -> str:
    return name.split("/", 1)[0]


def visible(info: registry_pb2.VersionInfo, requester: str) -> bool:
    """A private version is visible only to its owner (their keys and algorithms)."""
    return not info.private or (bool(requester) and owner_of(info.manifest.name) == requester)


def resolve_in(target: str, infos: Iterable[registry_pb2.VersionInfo], requester: str = "") -> registry_pb2.VersionInfo:
    """Pick the version of ``target`` among ``infos`` (that algorithm's versions)."""
    t = parse_target(target)
    spec = parse_spec(t.version)
    by_version = {i.manifest.version: i for i in infos if visible(i, requester)}
    if not by_version:  # none at all, or none this requester may see: the same answer
        raise error("ALGORITHM_NOT_FOUND", f"no algorithm named {t.name}; `algomesh ls` lists them",
                    algorithm=t.name)
    chosen = pick(spec, by_version)
    if chosen is None:
        known = ", ".join(sorted(by_version))
        what = "no release" if spec.text == "latest" else f"no version matching {spec.text}"
        raise error("VERSION_NOT_FOUND", f"{t.name} has {what} (published: {known})",
                    algorithm=t.name, version=t.version)
    return by_version[chosen]


def resolve(store: Store, target: str, requester: str = "") -> registry_pb2.VersionInfo:
    return resolve_in(target, store.versions(parse_target(target).name), requester)
