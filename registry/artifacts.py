"""Content-addressed copies of published folders: ``ROOT/<sha256>/``.

The digest covers every file's relative path, executable bit and bytes, so the same
folder always has the same digest however it was archived.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from algomesh._archive import iter_files
from algomesh._errors import error

MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_FILES = 100_000


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for rel in iter_files(folder):
        path = folder / rel
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        mode = "x" if os.access(path, os.X_OK) else "-"
        h.update(f"{rel.as_posix()}\0{mode}\0{file_hash}\n".encode())
    return h.hexdigest()


def unpack(archive: bytes, dest: Path) -> None:
    """Extract a published archive safely: regular files and folders only, inside dest."""
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES:
                raise error("INVALID_ARCHIVE", f"archive has {len(members)} entries; the limit is {MAX_FILES}")
            for m in members:
                parts = PurePosixPath(m.name).parts
                if not parts or m.name.startswith("/") or ".." in parts:
                    raise error("INVALID_ARCHIVE", f"archive entry {m.name!r} points outside the folder")
                if not (m.isfile() or m.isdir()):
                    raise error("INVALID_ARCHIVE", f"archive entry {m.name!r} is not a regular file")
                total += m.size
                if total > MAX_UNPACKED_BYTES:
                    raise error("INVALID_ARCHIVE", "archive unpacks to more than 1 GiB")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise error("INVALID_ARCHIVE", f"not a gzip'd tar archive: {exc}") from None


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest

    def stage(self, archive: bytes) -> Path:
        """Unpack into a fresh staging folder (caller commits or discards it)."""
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            unpack(archive, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def commit(self, staging: Path, digest: str) -> Path:
        final = self.path(digest)
        if final.exists():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            os.replace(staging, final)
        return final

    @staticmethod
    def discard(staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
