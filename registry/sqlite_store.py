"""The embedded default store: one SQLite file, WAL mode, one writer at a time.

Change feeds are two generation counters bumped in the same transaction as each write;
``wait_*`` wakes at once for writes from this process and polls for other processes'.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from google.protobuf import json_format

from algomesh._errors import error
from algomesh.v1 import registry_pb2

from .store import PASSING, register_backend

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    manifest     TEXT NOT NULL,   -- the Manifest as JSON
    published_at INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    private      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS instances (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    address    TEXT NOT NULL,
    state      TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    metrics    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_by_algorithm ON instances (name, version);
CREATE TABLE IF NOT EXISTS keys (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL          -- the ApiKey as JSON: salted hash, never the secret
);
CREATE TABLE IF NOT EXISTS generations (
    feed  TEXT PRIMARY KEY,       -- versions | instances | keys
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO generations VALUES ('versions', 1), ('instances', 1), ('keys', 1);
"""
_POLL = 0.2  # seconds between looks for writes made by other processes


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by worker threads, serialised by a lock;
        # isolation_level=None so transactions are explicit.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(versions)")}
            if "private" not in columns:  # a registry.db from before private versions
                self._db.execute("ALTER TABLE versions ADD COLUMN private INTEGER NOT NULL DEFAULT 0")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(instances)")}
            if "metrics" not in columns:  # from before sidecars served /metrics
                self._db.execute("ALTER TABLE instances ADD COLUMN metrics TEXT NOT NULL DEFAULT ''")

    def _write(self, feed: str, sql: str, args: tuple) -> int:
        """One statement and, if it changed a row, its feed's generation bump, atomically.
        Returns the number of rows changed."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                changed = db.execute(sql, args).rowcount
                if changed:
                    db.execute("UPDATE generations SET value = value + 1 WHERE feed = ?", (feed,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self._notify()
        return changed

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

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
                    "INSERT INTO versions (name, version, digest, manifest, published_at, seq, private) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (m.name, m.version, info.digest, manifest_json, info.published_at, seq, int(info.private)),
                )
                db.execute("UPDATE generations SET value = value + 1 WHERE feed = 'versions'")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self._notify()
        return True

    _COLUMNS = "digest, manifest, published_at, private"

    @staticmethod
    def _row_to_info(row: tuple) -> registry_pb2.VersionInfo:
        digest, manifest_json, published_at, private = row
        manifest = json_format.Parse(manifest_json, registry_pb2.Manifest())
        return registry_pb2.VersionInfo(manifest=manifest, digest=digest, published_at=published_at,
                                        private=bool(private))

    def _select(self, where: str = "", args: tuple = ()) -> list[registry_pb2.VersionInfo]:
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM versions {where} ORDER BY seq", args).fetchall()
        return [self._row_to_info(r) for r in rows]

    def get_version(self, name: str, version: str) -> registry_pb2.VersionInfo | None:
        found = self._select("WHERE name = ? AND version = ?", (name, version))
        return found[0] if found else None

    def versions(self, name: str) -> list[registry_pb2.VersionInfo]:
        return self._select("WHERE name = ?", (name,))

    def all_versions(self) -> list[registry_pb2.VersionInfo]:
        return self._select()

    def algorithms(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    # instances --------------------------------------------------------------------

    def register_instance(self, instance: registry_pb2.Instance, ttl: float = 0) -> None:
        # The embedded store has no TTL checks: the control plane's prober keeps states.
        self._write("instances",
                    "INSERT OR REPLACE INTO instances (id, name, version, address, state, started_at, metrics) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (instance.id, instance.algorithm, instance.version, instance.address,
                     PASSING, instance.started_at, instance.metrics_address))

    def set_instance_state(self, instance_id: str, state: str) -> None:
        self._write("instances", "UPDATE instances SET state = ? WHERE id = ? AND state != ?",
                    (state, instance_id, state))

    def deregister_instance(self, instance_id: str) -> None:
        self._write("instances", "DELETE FROM instances WHERE id = ?", (instance_id,))

    def instances(self, name: str = "", version: str = "") -> list[registry_pb2.Instance]:
        sql = "SELECT id, name, version, address, state, started_at, metrics FROM instances"
        args: tuple = ()
        if name:
            sql += " WHERE name = ?" + (" AND version = ?" if version else "")
            args = (name, version) if version else (name,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY started_at, id", args).fetchall()
        return [
            registry_pb2.Instance(id=r[0], algorithm=r[1], version=r[2], address=r[3], state=r[4], started_at=r[5],
                                  metrics_address=r[6])
            for r in rows
        ]

    def clear_instances(self) -> None:
        self._write("instances", "DELETE FROM instances", ())

    # API keys ---------------------------------------------------------------------

    def add_key(self, key: registry_pb2.ApiKey) -> None:
        self._write("keys", "INSERT INTO keys (id, record) VALUES (?, ?)",
                    (key.id, json_format.MessageToJson(key, indent=None)))

    def remove_key(self, key_id: str) -> bool:
        return self._write("keys", "DELETE FROM keys WHERE id = ?", (key_id,)) > 0

    def keys(self) -> list[registry_pb2.ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM keys ORDER BY rowid").fetchall()
        return [json_format.Parse(r[0], registry_pb2.ApiKey()) for r in rows]

    # change feeds -----------------------------------------------------------------

    def _generation(self, feed: str) -> int:
        with self._lock:
            return self._db.execute("SELECT value FROM generations WHERE feed = ?", (feed,)).fetchone()[0]

    def _wait(self, feed: str, index: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            current = self._generation(feed)
            left = deadline - time.monotonic()
            if current != index or left <= 0:
                return current
            with self._changed:
                self._changed.wait(min(_POLL, left))

    def wait_versions(self, index: int, timeout: float) -> int:
        return self._wait("versions", index, timeout)

    def wait_instances(self, index: int, timeout: float) -> int:
        return self._wait("instances", index, timeout)

    def wait_keys(self, index: int, timeout: float) -> int:
        return self._wait("keys", index, timeout)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._notify()


@register_backend("sqlite")
def _from_url(url: str) -> SqliteStore:
    parsed = urlparse(url)
    path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
    if not path:
        raise ValueError(f"sqlite URL needs a path: {url!r} (sqlite:///abs/path/registry.db)")
    return SqliteStore(path)
