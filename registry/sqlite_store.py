"""The embedded default store: one SQLite file, WAL mode, one writer at a time."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from urllib.parse import urlparse

from google.protobuf import json_format

from algomesh._errors import error
from algomesh.v1 import registry_pb2

from .store import register_backend

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    manifest     TEXT NOT NULL,   -- the Manifest as JSON
    published_at INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS instances (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    address    TEXT NOT NULL,
    state      TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_algorithm ON instances (name, version);
"""


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the service's worker threads, serialised by a lock;
        # isolation_level=None so transactions are explicit.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    # versions ---------------------------------------------------------------------

    def publish(self, info: registry_pb2.VersionInfo) -> bool:
        m = info.manifest
        manifest_json = json_format.MessageToJson(m, indent=None)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT digest FROM versions WHERE name = ? AND version = ?", (m.name, m.version)
                ).fetchone()
                if row is not None:
                    db.execute("ROLLBACK")
                    if row[0] == info.digest:
                        return False
                    raise error(
                        "VERSION_EXISTS",
                        f"{m.name} {m.version} is already published with other content "
                        f"(digest {row[0][:12]}, yours {info.digest[:12]}); versions are immutable, "
                        "bump the version",
                        algorithm=m.name, version=m.version,
                    )
                seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM versions").fetchone()[0]
                db.execute(
                    "INSERT INTO versions (name, version, digest, manifest, published_at, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (m.name, m.version, info.digest, manifest_json, info.published_at, seq),
                )
                db.execute("COMMIT")
                return True
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @staticmethod
    def _row_to_info(row: tuple) -> registry_pb2.VersionInfo:
        digest, manifest_json, published_at = row
        manifest = json_format.Parse(manifest_json, registry_pb2.Manifest())
        return registry_pb2.VersionInfo(manifest=manifest, digest=digest, published_at=published_at)

    def get_version(self, name: str, version: str) -> registry_pb2.VersionInfo | None:
        with self._lock:
            row = self._db.execute(
                "SELECT digest, manifest, published_at FROM versions WHERE name = ? AND version = ?",
                (name, version),
            ).fetchone()
        return self._row_to_info(row) if row else None

    def versions(self, name: str) -> list[registry_pb2.VersionInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT digest, manifest, published_at FROM versions WHERE name = ? ORDER BY seq", (name,)
            ).fetchall()
        return [self._row_to_info(r) for r in rows]

    def algorithms(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    # instances --------------------------------------------------------------------

    def register_instance(self, instance: registry_pb2.Instance) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO instances (id, name, version, address, state, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (instance.id, instance.algorithm, instance.version, instance.address,
                 instance.state, instance.started_at),
            )

    def deregister_instance(self, instance_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))

    def instances(self, name: str = "", version: str = "") -> list[registry_pb2.Instance]:
        sql = "SELECT id, name, version, address, state, started_at FROM instances"
        args: tuple = ()
        if name:
            sql += " WHERE name = ?" + (" AND version = ?" if version else "")
            args = (name, version) if version else (name,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY started_at, id", args).fetchall()
        return [
            registry_pb2.Instance(id=r[0], algorithm=r[1], version=r[2], address=r[3], state=r[4], started_at=r[5])
            for r in rows
        ]

    def clear_instances(self) -> None:
        """Forget every instance (at control-plane start: the previous run's are gone)."""
        with self._lock:
            self._db.execute("DELETE FROM instances")

    def close(self) -> None:
        with self._lock:
            self._db.close()


@register_backend("sqlite")
def _from_url(url: str) -> SqliteStore:
    parsed = urlparse(url)
    path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
    if not path:
        raise ValueError(f"sqlite URL needs a path: {url!r} (sqlite:///abs/path/registry.db)")
    return SqliteStore(path)
