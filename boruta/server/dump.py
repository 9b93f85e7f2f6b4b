"""The state as JSON lines (`boruta admin dump`) and back (`boruta admin restore`).

A dump is the portable form of a state directory: it outlives schema
versions (a dump of any version this Boruta knows restores into the current
one) and a damaged database file (restore it into an empty directory). It
holds what the database holds, job keys included: as secret as the file.

Kept apart from boruta.server.store (the file, its schema, commits and
reads), which it completes: `Store` takes `dump` and `restore` from here.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Iterator

from boruta.server.rows import (INSERT_REQUESTS, INSERT_WORKERS, REQUEST_COLUMNS, WORKER_COLUMNS,
                                StoreError, check_enrolment, check_request, check_worker, is_int,
                                json_decoder, user_doc)

RESTORE_CHUNK = 10_000          # request rows written at once by a restore
IDENTITY_VERSION = 4            # the first schema with users and enrolments
LEASE_VERSION = 5               # the first schema with requests' leases
EXPR_VERSION = 6                # the first schema with capability expressions


class DumpAndRestore:
    """`dump` and `restore` of boruta.server.store.Store (a mixin: it uses the store's
    connection, transactions and record reader)."""

    def dump(self) -> Iterator[dict[str, Any]]:
        """JSON-lines records of the whole state, from one consistent read.

        Meta first, then users, enrolments, workers, tunnels, requests (by
        ID). Streams: a big state is never held in memory whole. Worker
        records carry the job keys as the server stored them.
        """
        from boruta.server.store import SCHEMA_VERSION
        with self._read_errors(), self._reading():
            decode = json_decoder()
            yield {"kind": "meta", "schema_version": SCHEMA_VERSION,
                   "last_id": self._meta("last_id") or 0,
                   "last_seq": self._meta("last_seq") or 0}
            for doc in self.load_users():
                yield {"kind": "user", **doc}
            for uuid, key in self.load_enrolments():
                yield {"kind": "enrolment", "uuid": uuid, "key": key}
            for worker in self._records(WORKER_COLUMNS, "workers", "uuid", decode):
                yield {"kind": "worker", **worker}
            if self.version >= 2:
                for req_id, port in self._conn().execute(
                        "SELECT req_id, port FROM tunnels ORDER BY req_id"):
                    yield {"kind": "tunnel", "req_id": req_id, "port": port}
            for request in self._records(REQUEST_COLUMNS, "requests", "id", decode):
                yield {"kind": "request", **request}

    def restore(self, records: Iterable[Any]) -> tuple[int, int]:
        """Load a dump into this (empty) store, all or nothing; returns (workers, requests).

        Every record is checked; the first bad one is reported by its line
        number and nothing is written.
        """
        if self.readonly:
            raise StoreError("cannot restore into a store opened read-only")
        if not self.is_empty():
            raise StoreError(f"{self.path} is not empty: restore only into an empty state "
                             "directory (move the old one away first)")
        loading = _Loading(self)
        try:
            with self._transaction():
                for number, record in enumerate(records, 1):
                    loading.number = number
                    loading.add(record)
                loading.finish()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"line {loading.number}: cannot write {self.path}: {exc}") from None
        return loading.workers, len(loading.req_ids)


class _Loading:
    """One restore in progress: what the records seen so far hold, and the rows to write."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.db = store._conn()
        self.number = 0
        self.seen_meta = False
        self.last_id = self.last_seq = self.top_id = self.top_seq = 0
        self.req_ids: set[int] = set()
        self.tunnel_ids: set[int] = set()
        self.names: dict[str, set[Any]] = {"user": set(), "enrolment": set(), "worker": set()}
        self.requests: list[tuple] = []
        self.workers = 0
        self._handlers = {"meta": self._meta, "user": self._user, "enrolment": self._enrolment,
                          "worker": self._worker, "tunnel": self._tunnel,
                          "request": self._request}

    def add(self, record: Any) -> None:
        kind = record.get("kind") if isinstance(record, dict) else None
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise StoreError(f"line {self.number}: not a Boruta dump record")
        handler(record)

    def _once(self, kind: str, name: Any, what: str) -> None:
        if name in self.names[kind]:
            raise StoreError(f"line {self.number}: {what} appears twice")
        self.names[kind].add(name)

    def _meta(self, record: dict[str, Any]) -> None:
        from boruta.server.store import SCHEMA_VERSION
        version = record.get("schema_version")
        if not is_int(version) or version < 1 or version > SCHEMA_VERSION:
            raise StoreError(f"line {self.number}: a dump of schema version {version!r} cannot "
                             f"be restored by this Boruta (versions 1 to {SCHEMA_VERSION})")
        if not (is_int(record.get("last_id")) and is_int(record.get("last_seq"))):
            raise StoreError(f"line {self.number}: meta record without last_id/last_seq")
        self.last_id, self.last_seq = record["last_id"], record["last_seq"]
        self.seen_meta = True

    def _user(self, record: dict[str, Any]) -> None:
        doc = user_doc(record, self.number)
        self._once("user", doc["name"], f"user {doc['name']}")
        self.store._write_user(doc)

    def _enrolment(self, record: dict[str, Any]) -> None:
        uuid, key = check_enrolment(record, self.number)
        self._once("enrolment", uuid, f"the enrolment of {uuid}")
        self.store._write_enrolment(uuid, key)

    def _worker(self, record: dict[str, Any]) -> None:
        check_worker(record, self.number)
        self._once("worker", record["uuid"], f"worker {record['uuid']}")
        self.db.execute(INSERT_WORKERS, self.store._worker_row(record))
        self.workers += 1

    def _tunnel(self, record: dict[str, Any]) -> None:
        req_id, port = record.get("req_id"), record.get("port")
        if not (is_int(req_id) and is_int(port) and 0 < port < 65536):
            raise StoreError(f"line {self.number}: bad tunnel record")
        if req_id in self.tunnel_ids:
            raise StoreError(f"line {self.number}: tunnel of request {req_id} appears twice")
        self.tunnel_ids.add(req_id)
        self.db.execute("INSERT INTO tunnels(req_id, port) VALUES (?, ?)", (req_id, port))

    def _request(self, record: dict[str, Any]) -> None:
        check_request(record, self.number)
        if record["id"] in self.req_ids:
            raise StoreError(f"line {self.number}: request {record['id']} appears twice")
        self.req_ids.add(record["id"])
        self.top_id = max(self.top_id, record["id"])
        self.top_seq = max(self.top_seq, record["seq"])
        self.requests.append(self.store._request_row(record))
        if len(self.requests) >= RESTORE_CHUNK:
            self.db.executemany(INSERT_REQUESTS, self.requests)
            self.requests.clear()

    def finish(self) -> None:
        if not self.seen_meta:
            raise StoreError("the dump has no meta record: not a Boruta dump "
                             "(or an empty input)")
        if self.requests:
            self.db.executemany(INSERT_REQUESTS, self.requests)
        self.store._set_meta("last_id", max(self.last_id, self.top_id))
        self.store._set_meta("last_seq", max(self.last_seq, self.top_seq))
