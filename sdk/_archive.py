"""Pack an algorithm's folder for publishing: a gzip'd tar, the same bytes every time."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

from ._errors import error

# Never part of an algorithm's content.
EXCLUDED_DIRS = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024


def iter_files(folder: Path):
    """Relative paths of the folder's files, sorted, exclusions applied."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
        for name in sorted(files):
            if name.endswith(EXCLUDED_SUFFIXES):
                continue
            yield (Path(root) / name).relative_to(folder)


def pack(folder: str | os.PathLike[str]) -> bytes:
    folder = Path(folder)
    if not folder.is_dir():
        raise error("INVALID_ARCHIVE", f"{folder} is not a folder")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for rel in iter_files(folder):
            path = folder / rel
            if path.is_symlink():
                raise error("INVALID_ARCHIVE", f"{rel} is a symbolic link; publish real files")
            info = tarfile.TarInfo(rel.as_posix())
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(data))
    out = buf.getvalue()
    if len(out) > MAX_ARCHIVE_BYTES:
        raise error("INVALID_ARCHIVE", f"{folder} packs to {len(out)} bytes; the limit is {MAX_ARCHIVE_BYTES}")
    return out
