"""Durable state in SQLite: what the server acknowledged survives any crash.

The scheduler keeps its books in memory; after each turn of the server's
loop the shell hands this store the records that turn changed, and they are
committed in one transaction *before* any reply of that turn leaves (group
commit). On start the server loads the books back. WAL mode; the fsync
policy is the `synchronous` pragma (FULL by default, NORMAL or OFF by
configuration).

The schema is versioned: an older file is migrated forward, a newer one is
refused with a clear message (no guessing at a future format).
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

from boruta.core.records import Changes, Snapshot

SCHEMA_VERSION = 1
DB_NAME = "boruta.sqlite3"

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    groups TEXT NOT NULL,
    caps TEXT NOT NULL,
    valid_after REAL NOT NULL,
    deadline REAL NOT NULL,
    state TEXT NOT NULL,
    job_worker TEXT,
    job_timeout REAL,
    seq INTEGER NOT NULL,
    prolongs INTEGER NOT NULL,
    ended_at REAL
);
CREATE INDEX requests_ended_at ON requests(ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE workers (
    uuid TEXT PRIMARY KEY,
    caps TEXT NOT NULL,
    groups TEXT NOT NULL,
    state TEXT NOT NULL,
    dryad_address TEXT NOT NULL,
    ssh_address TEXT NOT NULL,
    key TEXT,
    username TEXT,
    fail_reason TEXT,
    job INTEGER
);
"""

# Each entry migrates from version i+1 to i+2; version 1 is the first schema.
_MIGRATIONS: list[str] = []

REQUEST_COLUMNS = ("id", "priority", "groups", "caps", "valid_after", "deadline", "state",
                   "job_worker", "job_timeout", "seq", "prolongs", "ended_at")
WORKER_COLUMNS = ("uuid", "caps", "groups", "state", "dryad_address", "ssh_address", "key",
                  "username", "fail_reason", "job")
_JSON_COLUMNS = frozenset({"groups", "caps"})


class StoreError(Exception):
    """The state directory cannot be used; the message says why and what to do."""


def _encode(columns: tuple[str, ...], record: dict[str, Any], cache: dict[int, str]) -> tuple:
    row = []
    for name in columns:
        value = record.get(name)
        if name in _JSON_COLUMNS:
            # Requests share interned caps: encode each distinct object once.
            text = cache.get(id(value))
            if text is None:
                text = json.dumps(value if not isinstance(value, tuple) else list(value),
                                  sort_keys=True, separators=(",", ":"))
                cache[id(value)] = text
            value = text
        row.append(value)
    return tuple(row)


def _decoder() -> Any:
    cache: dict[str, Any] = {}

    def decode(text: str) -> Any:
        value = cache.get(text)
        if value is None:
            value = cache[text] = json.loads(text)
        return value
    return decode


class Store:
    """One SQLite database in the server's state directory."""

    def __init__(self, state_dir: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"unknown fsync policy {synchronous!r} (OFF, NORMAL, FULL or EXTRA)")
        self.path = Path(state_dir) / DB_NAME
        try:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._prepare_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"state database {self.path} is unreadable ({exc}); "
                             "restore it from a dump (boruta admin restore) or move it away") from None
        except OSError as exc:
            raise StoreError(f"state directory {state_dir} cannot be used: {exc}") from None

    # -- schema ------------------------------------------------------------
    def _prepare_schema(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            with self._transaction():
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._set_meta("schema_version", SCHEMA_VERSION)
                self._set_meta("last_id", 0)
                self._set_meta("last_seq", 0)
            return
        if "meta" not in tables:
            raise StoreError(f"{self.path} is not a Boruta state database")
        version = self._meta("schema_version")
        if version is None:
            raise StoreError(f"{self.path} has no schema version: not a Boruta state database")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer Boruta (schema {version}, this one knows "
                f"up to {SCHEMA_VERSION}); run the newer version or restore a dump")
        while version < SCHEMA_VERSION:
            with self._transaction():
                self._db.execute(_MIGRATIONS[version - 1])
                version += 1
                self._set_meta("schema_version", version)
        self._db.execute("PRAGMA quick_check").fetchone()

    def _meta(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    def _transaction(self) -> "_Tx":
        return _Tx(self._db)

    # -- writing -----------------------------------------------------------
    def commit(self, changes: Changes) -> None:
        """Write one turn's changes atomically; durable when this returns."""
        if not changes:
            return
        cache: dict[int, str] = {}
        with self._transaction():
            if changes.requests:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO requests({','.join(REQUEST_COLUMNS)}) "
                    f"VALUES ({','.join('?' * len(REQUEST_COLUMNS))})",
                    [_encode(REQUEST_COLUMNS, r, cache) for r in changes.requests])
            if changes.workers:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO workers({','.join(WORKER_COLUMNS)}) "
                    f"VALUES ({','.join('?' * len(WORKER_COLUMNS))})",
                    [_encode(WORKER_COLUMNS, w, cache) for w in changes.workers])
            if changes.removed_workers:
                self._db.executemany("DELETE FROM workers WHERE uuid=?",
                                     [(u,) for u in changes.removed_workers])
            if changes.purged_requests:
                self._db.executemany("DELETE FROM requests WHERE id=?",
                                     [(i,) for i in changes.purged_requests])
            if changes.last_id is not None:
                self._set_meta("last_id", changes.last_id)
            if changes.last_seq is not None:
                self._set_meta("last_seq", changes.last_seq)

    # -- reading -----------------------------------------------------------
    def load(self) -> Snapshot:
        decode = _decoder()
        snap = Snapshot(last_id=self._meta("last_id") or 0, last_seq=self._meta("last_seq") or 0)
        snap.requests = [self._row(REQUEST_COLUMNS, row, decode) for row in self._db.execute(
            f"SELECT {','.join(REQUEST_COLUMNS)} FROM requests ORDER BY id")]
        snap.workers = [self._row(WORKER_COLUMNS, row, decode) for row in self._db.execute(
            f"SELECT {','.join(WORKER_COLUMNS)} FROM workers ORDER BY uuid")]
        return snap

    @staticmethod
    def _row(columns: tuple[str, ...], row: tuple, decode: Any) -> dict[str, Any]:
        record = dict(zip(columns, row))
        for name in _JSON_COLUMNS:
            record[name] = decode(record[name])
        return record

    def is_empty(self) -> bool:
        return (self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0
                and self._db.execute("SELECT COUNT(*) FROM workers").fetchone()[0] == 0
                and not self._meta("last_id"))

    # -- dump and restore --------------------------------------------------
    def dump(self) -> Iterator[dict[str, Any]]:
        """JSON-lines records of the whole state: meta first, then workers, then requests."""
        snap = self.load()
        yield {"kind": "meta", "schema_version": SCHEMA_VERSION, "last_id": snap.last_id,
               "last_seq": snap.last_seq}
        for worker in snap.workers:
            yield {"kind": "worker", **worker}
        for request in snap.requests:
            yield {"kind": "request", **request}

    def restore(self, records: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Load a dump into this (empty) store; returns (workers, requests) restored."""
        if not self.is_empty():
            raise StoreError(f"{self.path} is not empty: restore only into an empty state directory")
        changes = Changes()
        seen_meta = False
        for number, record in enumerate(records, 1):
            kind = record.get("kind") if isinstance(record, dict) else None
            body = {k: v for k, v in record.items() if k != "kind"} if kind else {}
            if kind == "meta":
                version = body.get("schema_version")
                if not isinstance(version, int) or version > SCHEMA_VERSION:
                    raise StoreError(f"line {number}: dump schema {version!r} is not supported")
                changes.last_id, changes.last_seq = int(body["last_id"]), int(body["last_seq"])
                seen_meta = True
            elif kind == "worker" and set(WORKER_COLUMNS) <= set(body):
                changes.workers.append(body)
            elif kind == "request" and set(REQUEST_COLUMNS) <= set(body):
                changes.requests.append(body)
            else:
                raise StoreError(f"line {number}: not a Boruta dump record")
        if not seen_meta:
            raise StoreError("the dump has no meta record: not a Boruta dump")
        top = max((r["id"] for r in changes.requests), default=0)
        changes.last_id = max(changes.last_id or 0, top)
        self.commit(changes)
        return len(changes.workers), len(changes.requests)

    def close(self) -> None:
        self._db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
