"""Semantic versions and Algorithmia's version forms.

Forms a caller may ask for: ``""``/``latest`` (the newest release), ``1.2.3`` (exactly,
pre-releases included: ``1.2.3-rc.1``), ``1.2.*`` and ``1.*`` (the newest release in
the range). Pre-releases never match ``latest`` or a range.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from typing import Iterable

from algomesh._errors import error

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_RANGE = re.compile(r"^(0|[1-9]\d*)\.(?:(0|[1-9]\d*)\.)?\*$")


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    text: str = ""

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _key(self) -> tuple:
        # Semver precedence: a release sorts after its pre-releases; numeric identifiers
        # sort numerically and before alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, not self.prerelease, pre)

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __str__(self) -> str:
        return self.text


def parse_version(text: str) -> Version:
    """Parse an exact semver version; raise InvalidError (INVALID_VERSION) otherwise."""
    _check_length(text)
    m = _SEMVER.match(text or "")
    if not m:
        raise error("INVALID_VERSION", f"{text!r} is not a semantic version such as 1.2.3")
    pre = tuple(m.group(4).split(".")) if m.group(4) else ()
    return Version(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, text)


@dataclass(frozen=True)
class Spec:
    """What a caller asked for."""

    text: str
    exact: Version | None = None
    major: int | None = None
    minor: int | None = None

    def matches(self, v: Version) -> bool:
        if self.exact is not None:
            return v == self.exact or v.text == self.exact.text
        if v.is_prerelease:
            return False
        if self.major is not None and v.major != self.major:
            return False
        if self.minor is not None and v.minor != self.minor:
            return False
        return True


MAX_LENGTH = 128


def _check_length(text: str) -> None:
    if text and len(text) > MAX_LENGTH:
        raise error("INVALID_VERSION", f"a version is at most {MAX_LENGTH} characters ({text[:40]!r}… has {len(text)})")


def parse_spec(text: str) -> Spec:
    text = (text or "").strip()
    _check_length(text)
    if text in ("", "latest", "*"):
        return Spec("latest")
    m = _RANGE.match(text)
    if m:
        return Spec(text, major=int(m.group(1)), minor=int(m.group(2)) if m.group(2) else None)
    if _SEMVER.match(text):
        return Spec(text, exact=parse_version(text))
    raise error(
        "INVALID_VERSION",
        f"{text!r} is not a version: use latest, an exact version (1.2.3), or a range (1.2.*, 1.*)",
    )


def pick(spec: Spec, available: Iterable[str]) -> str | None:
    """The newest available version matching ``spec``, or None."""
    best: Version | None = None
    for text in available:
        v = parse_version(text)
        if spec.matches(v) and (best is None or v > best):
            best = v
    return best.text if best else None
