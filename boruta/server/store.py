"""Durable state in SQLite: what the server acknowledged survives any crash.

The scheduler keeps its books in memory; after each turn of the server's
loop the shell hands this store the records that turn changed, and they are
committed in one transaction *before* any reply of that turn leaves (group
commit). On start the server loads the books back. WAL mode; the fsync
policy is the `synchronous` pragma (FULL by default, NORMAL or OFF by
configuration).

Users and dryad enrolments live here too; each admin change to them is its
own transaction, durable before the call that made it is answered. The JSON
lines of `boruta admin dump|restore` are boruta.server.dump's.

The schema is versioned: an older file is migrated forward, a newer one is
refused with a clear message (no guessing at a future format). The file
holds the private keys of jobs in progress: it is created 0600 in a 0700
directory, and SQLite gives its -wal and -shm files the same mode.

Every failure to use the file (unreadable, truncated, corrupted, not ours,
from a newer Boruta, locked by another server) is a `StoreError` whose
message says what is wrong and what to do; never a traceback.

A request row whose times lie outside the window the core keeps
(boruta.core.types: EARLIEST_TIME .. LATEST_TIME; older versions accepted
any time) is read with those times moved to the window's nearest end, and
logged. Its meaning is unchanged (a deadline in year 10000 and one at the
end of 9999 both never come; one before 1970 has passed either way), the
owner can still see and close it, and no listing fails on it. The row is
rewritten when the request next changes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from boruta.core.records import Changes, Snapshot
from boruta.core.types import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from boruta.server.dump import EXPR_VERSION, IDENTITY_VERSION, LEASE_VERSION, DumpAndRestore
from boruta.server.rows import (INSERT_REQUESTS, INSERT_WORKERS, REQUEST_COLUMNS, WORKER_COLUMNS,
                                RowEncoder, StoreError, json_decoder)

log = logging.getLogger("boruta.server.store")

SCHEMA_VERSION = 6
DB_NAME = "boruta.sqlite3"
LOCK_NAME = "boruta.lock"

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

# Entry i migrates from version i+1 to i+2; version 1 is the first schema. A new
# database is created at version 1 and migrated, so every migration is exercised.
_MIGRATIONS: list[list[str]] = [
    # 2: the tunnel port of each job in progress, so that a restart reopens the
    # tunnel on the port its owner was told; an index of the live requests, so
    # that a restart reads them first and serves while the history follows.
    ["CREATE TABLE tunnels (req_id INTEGER PRIMARY KEY, port INTEGER NOT NULL)",
     "CREATE INDEX requests_live ON requests(state) WHERE state IN ('WAITING', 'IN PROGRESS')"],
    # 3: the index of the live requests goes. Every NewRequest paid for it (a sixth
    # of what a durable one cost SQLite), and it saved nothing: a restart with
    # 1,000,000 stored requests reads the 100,000 live ones in 0.7-1.0 s by a scan
    # of the table, as fast as through the index (bench/e2e_durability.py).
    ["DROP INDEX IF EXISTS requests_live"],
    # 4: users and dryad enrolments (who may call, which dryad key may register which
    # worker), and each request's owner by name ("" for those filed before users).
    ["ALTER TABLE requests ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
     "CREATE TABLE users (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
     "CREATE TABLE enrolments (uuid TEXT PRIMARY KEY, key TEXT NOT NULL)"],
    # 5: the grace of each request's lease (NULL: no lease). Renewals are not
    # written: a restart gives every lease its whole grace again.
    ["ALTER TABLE requests ADD COLUMN lease REAL"],
    # 6: each request's capability expressions, as a JSON list (NULL: none).
    ["ALTER TABLE requests ADD COLUMN expr TEXT"],
]
LIVE = "state IN ('WAITING', 'IN PROGRESS')"          # what a restart reads first

_TIME_COLUMNS = ("valid_after", "deadline", "job_timeout", "ended_at")
# Selected after a request's columns: true when one of its times is outside the window
# (NULL, an absent job timeout or end, counts as inside). SQLite tests it, not Python:
# a restart reads a million rows.
_TIMES_OUT_OF_WINDOW = " OR ".join(
    f"({name} IS NOT NULL AND {name} NOT BETWEEN {EARLIEST_TIMESTAMP!r} AND {LATEST_TIMESTAMP!r})"
    for name in _TIME_COLUMNS)
# What an older file, read as it is (readonly), holds in place of a column it lacks.
_ABSENT_BEFORE = {"owner": (IDENTITY_VERSION, "''"), "lease": (LEASE_VERSION, "NULL"),
                  "expr": (EXPR_VERSION, "NULL")}


def _unusable(path: Path, exc: BaseException) -> StoreError:
    return StoreError(f"state database {path} is unreadable ({exc}); it may be truncated or "
                      "corrupted: restore it from a dump (boruta admin restore) into an empty "
                      "state directory, or move it away to start afresh")


class Store(DumpAndRestore):
    """One SQLite database in the server's state directory.

    `readonly=True` opens an existing database for reading only (dumps, even
    while a server runs: WAL lets a reader see the last committed state);
    `lock=True` takes the directory's lock so that no second server (or
    restore) uses it at the same time.
    """

    def __init__(self, state_dir: str | os.PathLike[str], synchronous: str = "FULL", *,
                 readonly: bool = False, lock: bool = False) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"unknown fsync policy {synchronous!r} (OFF, NORMAL, FULL or EXTRA)")
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self.readonly = readonly
        self.version = SCHEMA_VERSION
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._request_row = RowEncoder(REQUEST_COLUMNS)
        self._worker_row = RowEncoder(WORKER_COLUMNS)
        try:
            if readonly:
                if not self.path.is_file():
                    raise StoreError(f"no Boruta state in {self.state_dir} ({self.path} "
                                     "does not exist)")
                uri = self.path.resolve().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None,
                                           check_same_thread=False)
            else:
                self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                _keep_private(self.state_dir)
                if lock:
                    self._take_lock()
                if not self.path.exists():
                    # 0600 from the start: the file will hold private job keys.
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                self._db = sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False)
            self._check_length()
            self._db.execute("PRAGMA busy_timeout=5000")
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._prepare_schema()
        except StoreError:
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            raise _unusable(self.path, exc) from None
        except OSError as exc:
            self.close()
            raise StoreError(f"state directory {self.state_dir} cannot be used: {exc}") from None

    def _check_length(self) -> None:
        """A file shorter than its header says was truncated: say so before reading it.

        (The header's page count is valid when its two change counters agree.
        Only checked without a -wal file: a checkpoint cut short by a crash can
        leave the main file shorter than page 1 says, and SQLite repairs that
        from the WAL; damage there shows up when the pages are read.)
        """
        try:
            with open(self.path, "rb") as fh:
                header = fh.read(100)
                size = os.fstat(fh.fileno()).st_size
            wal = Path(f"{self.path}-wal")
            wal_size = wal.stat().st_size if wal.exists() else 0
        except OSError:
            return                                  # sqlite3 will say what is wrong
        if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
            if size:
                raise StoreError(f"state database {self.path} is not an SQLite database "
                                 f"(it may be corrupted or not Boruta's): restore a dump "
                                 "(boruta admin restore) into an empty state directory, or "
                                 "move the file away to start afresh")
            return
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        if wal_size == 0 and header[24:28] == header[92:96] and pages and size < pages * page_size:
            raise StoreError(f"state database {self.path} is truncated ({size} bytes; its "
                             f"header says {pages * page_size}): restore a dump (boruta admin "
                             "restore) into an empty state directory, or move it away to "
                             "start afresh")

    def _take_lock(self) -> None:
        lock_path = self.state_dir / LOCK_NAME
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"state directory {self.state_dir} is in use by another Boruta "
                             "server (or a restore); stop it first") from None
        self._lock_fd = fd

    # -- schema ------------------------------------------------------------
    def _prepare_schema(self) -> None:
        db = self._conn()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            if self.readonly:
                raise StoreError(f"{self.path} is empty: no Boruta state in {self.state_dir}")
            with self._transaction():
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        db.execute(statement)
                self._set_meta("schema_version", 1)
                self._set_meta("last_id", 0)
                self._set_meta("last_seq", 0)
            tables = {"meta"}
        if "meta" not in tables:
            raise StoreError(f"{self.path} is not a Boruta state database")
        version = self._meta("schema_version")
        if version is None:
            raise StoreError(f"{self.path} has no schema version: not a Boruta state database")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer Boruta (schema version {version}; this "
                f"Boruta knows versions up to {SCHEMA_VERSION}): run that newer version, or "
                "restore a dump made by this version into an empty state directory")
        if version < 1:
            raise StoreError(f"{self.path} has an impossible schema version {version}")
        self.version = version
        if self.readonly:
            return                      # an older file is read as it is; nothing is written
        while version < SCHEMA_VERSION:
            with self._transaction():
                for statement in _MIGRATIONS[version - 1]:
                    db.execute(statement)
                version += 1
                self._set_meta("schema_version", version)
        self.version = version

    def check(self) -> None:
        """Read every page (PRAGMA quick_check): StoreError if the file is damaged."""
        try:
            rows = self._conn().execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise _unusable(self.path, exc) from None
        if rows != [("ok",)]:
            raise _unusable(self.path, "; ".join(str(r[0]) for r in rows[:3]))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"state database {self.path} is closed")
        return self._db

    def _meta(self, key: str) -> int | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return int(row[0])
        except (TypeError, ValueError):
            raise StoreError(f"{self.path}: meta value {key}={row[0]!r} is not a number; "
                             "the file is damaged") from None

    def _set_meta(self, key: str, value: int) -> None:
        self._conn().execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             (key, str(value)))

    def _transaction(self) -> "_Tx":
        return _Tx(self._conn())

    # -- writing -----------------------------------------------------------
    def commit(self, changes: Changes, ports: Mapping[int, int | None] | None = None) -> None:
        """Write one turn's changes atomically; durable (per the fsync policy) when this returns.

        `ports` maps the request IDs of jobs whose tunnel opened (port) or
        closed (None). Deletions are applied before upserts, so a worker
        deregistered and registered again within one turn is kept.
        Raises sqlite3 errors as they are (the caller decides: the server
        answers `storage_failed` and keeps the changes for its next commit).
        """
        if not changes and not ports:
            return
        db = self._conn()
        with self._transaction():
            if changes.removed_workers:
                db.executemany("DELETE FROM workers WHERE uuid=?",
                               [(u,) for u in changes.removed_workers])
            if changes.purged_requests:
                purged = [(i,) for i in changes.purged_requests]
                db.executemany("DELETE FROM requests WHERE id=?", purged)
                db.executemany("DELETE FROM tunnels WHERE req_id=?", purged)
            if changes.requests:
                db.executemany(INSERT_REQUESTS,
                               [self._request_row(r) for r in changes.requests])
            if changes.workers:
                db.executemany(INSERT_WORKERS,
                               [self._worker_row(w) for w in changes.workers])
            if ports:
                gone = [(i,) for i, p in ports.items() if p is None]
                kept = [(i, p) for i, p in ports.items() if p is not None]
                if gone:
                    db.executemany("DELETE FROM tunnels WHERE req_id=?", gone)
                if kept:
                    db.executemany("INSERT OR REPLACE INTO tunnels(req_id, port) VALUES (?, ?)",
                                   kept)
            counters = [(key, str(value)) for key, value in
                        (("last_id", changes.last_id), ("last_seq", changes.last_seq))
                        if value is not None]
            if counters:
                db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", counters)

    # -- reading -----------------------------------------------------------
    @contextlib.contextmanager
    def _read_errors(self) -> Iterator[None]:
        """A read that fails on the file or on a record in it: StoreError saying so."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise _unusable(self.path, exc) from None
        except (ValueError, TypeError) as exc:      # a JSON column that does not parse
            raise _unusable(self.path, f"bad record: {exc}") from None

    def load(self, history: bool = True) -> Snapshot:
        """The records, as the scheduler's `restore` takes them.

        `history=False`: only the live requests (WAITING, IN PROGRESS, or the
        job of some worker); the finished ones come with `history()` in
        chunks. `last_id` is never below the highest ID stored.
        """
        with self._read_errors(), self._reading():
            decode = json_decoder()
            top = self._conn().execute("SELECT MAX(id) FROM requests").fetchone()[0] or 0
            snap = Snapshot(last_id=max(self._meta("last_id") or 0, top),
                            last_seq=self._meta("last_seq") or 0)
            if history:
                snap.requests = list(self._records(REQUEST_COLUMNS, "requests", "id", decode))
            else:
                snap.requests = self._live_requests(decode)
            snap.workers = list(self._records(WORKER_COLUMNS, "workers", "uuid", decode))
            return snap

    def _live_requests(self, decode: Any) -> list[dict[str, Any]]:
        live = list(self._records(REQUEST_COLUMNS, "requests", "id", decode, LIVE))
        seen = {r["id"] for r in live}
        jobs = [r for r in self._records(
            REQUEST_COLUMNS, "requests", "id", decode,
            "id IN (SELECT job FROM workers WHERE job IS NOT NULL)") if r["id"] not in seen]
        if jobs:
            live = sorted(live + jobs, key=lambda r: r["id"])
        return live

    def history(self, after_id: int = 0, limit: int = 20_000) -> list[dict[str, Any]]:
        """Finished requests with IDs above `after_id`, by ID, at most `limit` of them."""
        with self._read_errors():
            return list(self._records(REQUEST_COLUMNS, "requests", "id", json_decoder(),
                                      f"id > ? AND NOT ({LIVE})", (after_id,), limit))

    def load_request(self, req_id: int) -> dict[str, Any] | None:
        """One request's record (None if there is none)."""
        with self._read_errors():
            found = list(self._records(REQUEST_COLUMNS, "requests", "id", json_decoder(),
                                       "id = ?", (req_id,)))
        return found[0] if found else None

    def _records(self, columns: tuple[str, ...], table: str, order: str, decode: Any,
                 where: str | None = None, params: tuple = (),
                 limit: int | None = None) -> Iterator[dict[str, Any]]:
        # Lean: on a big restart this runs a million times. Each distinct JSON text
        # is decoded once and the object shared (the scheduler relies on that).
        g = columns.index("groups")
        c = columns.index("caps")
        e = columns.index("expr") if "expr" in columns else None
        cache: dict[str, Any] = decode.cache
        loads = json.loads
        flag = len(columns) if table == "requests" else None
        sql = f"SELECT {','.join(self._column_sql(name) for name in columns)}"
        if flag is not None:
            sql += f",({_TIMES_OUT_OF_WINDOW})"
        sql += f" FROM {table}"
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = self._conn().execute(sql, params)
        while rows := cursor.fetchmany(4096):
            for row in rows:
                record = dict(zip(columns, row))
                text = row[g]
                value = cache.get(text)
                if value is None:
                    value = cache[text] = loads(text)
                record["groups"] = value
                text = row[c]
                value = cache.get(text)
                if value is None:
                    value = cache[text] = loads(text)
                record["caps"] = value
                if e is not None and row[e] is not None:
                    record["expr"] = loads(row[e])
                if flag is not None and row[flag]:
                    _move_times_into_window(record, self.path)
                yield record

    def _column_sql(self, name: str) -> str:
        """A column as a SELECT names it: an older file read as it is lacks the newer ones."""
        since, absent = _ABSENT_BEFORE.get(name, (0, name))
        return name if self.version >= since else f"{absent} AS {name}"

    def tunnel_ports(self) -> dict[int, int]:
        """The tunnel port of each job in progress, by request ID."""
        if self.version < 2:
            return {}
        with self._read_errors():
            return dict(self._conn().execute("SELECT req_id, port FROM tunnels"))

    def is_empty(self) -> bool:
        db = self._conn()
        tables = ("requests", "workers") + (("users", "enrolments")
                                            if self.version >= IDENTITY_VERSION else ())
        return (all(db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is None for t in tables)
                and not self._meta("last_id"))

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One read transaction: every SELECT inside sees the same committed state."""
        db = self._conn()
        if db.in_transaction:
            yield
            return
        db.execute("BEGIN")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("COMMIT")

    # -- users and dryad enrolments ----------------------------------------
    # Each write is its own transaction, durable when the call returns: an admin's
    # change is answered only once the disk holds it. Like `commit`, these run on the
    # server's loop thread and finish their transaction before returning, so a turn's
    # group commit never shares a transaction with them.
    def save_user(self, doc: Mapping[str, Any]) -> None:
        """Add or replace a user (their document, boruta.core.users.User.to_doc())."""
        self._identity_write(self._write_user, dict(doc))

    def delete_user(self, name: str) -> None:
        self._identity_write(lambda: self._conn().execute(
            "DELETE FROM users WHERE name=?", (name,)))

    def load_users(self) -> list[dict[str, Any]]:
        """Every user's document, by name."""
        if self.version < IDENTITY_VERSION:
            return []
        with self._read_errors():
            return [json.loads(doc) for (doc,) in
                    self._conn().execute("SELECT doc FROM users ORDER BY name")]

    def save_enrolment(self, uuid: str, key: str) -> None:
        """Let `key` (a dryad's public key) register worker `uuid`; replaces its old key."""
        self._identity_write(self._write_enrolment, uuid, key)

    def delete_enrolment(self, uuid: str) -> None:
        self._identity_write(lambda: self._conn().execute(
            "DELETE FROM enrolments WHERE uuid=?", (uuid,)))

    def load_enrolments(self) -> list[tuple[str, str]]:
        """(uuid, key) pairs, by UUID."""
        if self.version < IDENTITY_VERSION:
            return []
        with self._read_errors():
            return [(uuid, key) for uuid, key in
                    self._conn().execute("SELECT uuid, key FROM enrolments ORDER BY uuid")]

    def _write_user(self, doc: Mapping[str, Any]) -> None:
        if not isinstance(doc.get("name"), str):
            raise StoreError("a user document without a name cannot be saved")
        self._conn().execute("INSERT OR REPLACE INTO users(name, doc) VALUES (?, ?)",
                             (doc["name"], json.dumps(doc, sort_keys=True)))

    def _write_enrolment(self, uuid: str, key: str) -> None:
        self._conn().execute("INSERT OR REPLACE INTO enrolments(uuid, key) VALUES (?, ?)",
                             (uuid, key))

    def _identity_write(self, write: Callable[..., Any], *args: Any) -> None:
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        try:
            with self._transaction():
                write(*args)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot save to {self.path}: {exc}") from None

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            self._db.execute("COMMIT")
        else:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")


def _move_times_into_window(record: dict[str, Any], path: Path) -> None:
    """A request's times outside the window, moved to its nearest end and logged
    (see the module docstring). A time that is not a number is a damaged record."""
    moved = {}
    for name in _TIME_COLUMNS:
        value = record[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"request {record['id']}: {name} {value!r} is not a time")
        if not EARLIEST_TIMESTAMP <= value <= LATEST_TIMESTAMP:
            record[name] = min(max(value, EARLIEST_TIMESTAMP), LATEST_TIMESTAMP)
            moved[name] = value
    if moved:
        log.warning("stored request %s has times outside the window Boruta keeps; "
                    "read as the window's nearest end", record["id"],
                    extra={"fields": {"state_db": str(path), "request": record["id"],
                                      **{name: repr(value) for name, value in moved.items()}}})


def _keep_private(state_dir: Path) -> None:
    """The state directory holds private job keys: 0700, even when it was made before us
    with looser modes (an operator's `mkdir`); the change is logged, never silent."""
    mode = state_dir.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            state_dir.chmod(0o700)
        except OSError as exc:
            raise StoreError(f"state directory {state_dir} is readable by others (mode "
                             f"{mode:o}) and cannot be made private: {exc}") from None
        log.warning("state directory %s was mode %o; made it 0700 (it holds private keys)",
                    state_dir, mode)
