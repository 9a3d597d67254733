"""Algorithm references: ``owner/name`` or ``owner/name/VERSION``."""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

from ._errors import error

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Target(NamedTuple):
    name: str      # owner/name
    version: str   # "" for latest, else 1.2.3, 1.2.*, 1.*

    def __str__(self) -> str:
        return f"{self.name}/{self.version}" if self.version else self.name


def check_name(name: str) -> str:
    """Validate ``owner/name``; raise InvalidError (INVALID_TARGET) otherwise."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(_SEGMENT.match(p) for p in parts):
        raise error(
            "INVALID_TARGET",
            f"{name!r} is not an algorithm name: use owner/name (letters, digits, _ . -)",
        )
    return name


def parse_target(ref: str) -> Target:
    """Split ``owner/name[/version]``. The version's form is checked by the registry."""
    if not isinstance(ref, str) or not ref:
        raise error("INVALID_TARGET", f"{ref!r} is not an algorithm reference: use owner/name[/version]")
    return _parse(ref)


@functools.lru_cache(maxsize=4096)
def _parse(ref: str) -> Target:
    # Memoized: the same few targets are parsed on every pipe (errors are not cached).
    parts = ref.strip().split("/")
    if len(parts) == 3:
        name, version = "/".join(parts[:2]), parts[2]
        if version == "latest":
            version = ""
    elif len(parts) == 2:
        name, version = ref.strip(), ""
    else:
        raise error("INVALID_TARGET", f"{ref!r} is not an algorithm reference: use owner/name[/version]")
    return Target(check_name(name), version)
