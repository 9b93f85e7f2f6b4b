"""The rows of the state database: columns, their encoding and decoding, and the
checks a record from a dump must pass before it is written.

Kept apart from boruta.server.store (the file, its schema and transactions) so
that each stays readable; the store is this module's only user.
"""
from __future__ import annotations

import json
import math
import operator
from typing import Any, Mapping

from boruta.core.enrolment import check_uuid
from boruta.core.errors import BadArgumentError
from boruta.core.users import User, is_public_key

REQUEST_COLUMNS = ("id", "priority", "groups", "caps", "valid_after", "deadline", "state",
                   "job_worker", "job_timeout", "seq", "prolongs", "ended_at", "owner", "lease",
                   "expr")
WORKER_COLUMNS = ("uuid", "caps", "groups", "state", "dryad_address", "ssh_address", "key",
                  "username", "fail_reason", "job")
_JSON_COLUMNS = frozenset({"groups", "caps", "expr"})
# What a record without the field means: requests filed before users existed have no
# owner, and those filed before leases no lease.
_DEFAULTS: dict[str, Any] = {"owner": "", "lease": None, "expr": None}

# An upsert, not INSERT OR REPLACE: a request's later changes (state, job, prolongs)
# update its row in place instead of deleting and inserting it again.
INSERT_REQUESTS = (f"INSERT INTO requests({','.join(REQUEST_COLUMNS)}) "
                   f"VALUES ({','.join('?' * len(REQUEST_COLUMNS))}) ON CONFLICT(id) DO UPDATE "
                   f"SET {','.join(f'{c}=excluded.{c}' for c in REQUEST_COLUMNS[1:])}")
INSERT_WORKERS = (f"INSERT OR REPLACE INTO workers({','.join(WORKER_COLUMNS)}) "
                  f"VALUES ({','.join('?' * len(WORKER_COLUMNS))})")

_REQUEST_STATES = frozenset({"WAITING", "IN PROGRESS", "CANCELLED", "TIMEOUT", "INVALID",
                             "DONE", "FAILED"})
_WORKER_STATES = frozenset({"MAINTENANCE", "IDLE", "RUNNING", "FAILED", "PREPARE", "BUSY"})


class StoreError(Exception):
    """The state directory cannot be used; the message says why and what to do."""


class RowEncoder:
    """Records to rows for one table. The JSON columns' texts are cached by value:
    thousands of requests share a few caps, and json.dumps was a third of what a
    durable NewRequest cost the loop. By value, not identity, so a cached text never
    outlives the meaning of its key (the values inside are strings: records are checked
    before they get here)."""

    _CACHE_MAX = 4096

    def __init__(self, columns: tuple[str, ...]) -> None:
        self._columns = columns
        self._fields = operator.itemgetter(*columns)
        self._texts: dict[int, dict[Any, str]] = {
            i: {} for i, name in enumerate(columns) if name in _JSON_COLUMNS}

    def __call__(self, record: Mapping[str, Any]) -> tuple:
        try:
            row = list(self._fields(record))
        except KeyError:                   # a record without some field: its default there
            row = [record.get(name, _DEFAULTS.get(name)) for name in self._columns]
        for i, texts in self._texts.items():
            value = row[i]
            # The type is part of the key: a dict and a tuple of its pairs differ in JSON.
            key = (dict, tuple(value.items())) if isinstance(value, dict) else (type(value), value)
            try:
                row[i] = texts[key]
                continue
            except KeyError:
                pass
            except TypeError:              # unhashable (a list): not cached
                key = None
            text = json.dumps(value if not isinstance(value, tuple) else list(value),
                              sort_keys=True, separators=(",", ":"))
            if key is not None:
                if len(texts) >= self._CACHE_MAX:
                    texts.clear()
                texts[key] = text
            row[i] = text
        return tuple(row)


def json_decoder() -> Any:
    cache: dict[str, Any] = {}

    def decode(text: str) -> Any:
        value = cache.get(text)
        if value is None:
            value = cache[text] = json.loads(text)
        return value
    decode.cache = cache          # type: ignore[attr-defined]
    return decode


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_caps(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items())


def _check(ok: bool, number: int, what: str, field: str) -> None:
    if not ok:
        raise StoreError(f"line {number}: {what} record with a missing or bad {field!r}")


def check_request(r: dict[str, Any], number: int) -> None:
    for name in REQUEST_COLUMNS:
        _check(name in r or name in _DEFAULTS, number, "request", name)
    _check(isinstance(r.get("owner", ""), str), number, "request", "owner")
    lease = r.get("lease")
    _check(lease is None or (_is_num(lease) and lease > 0), number, "request", "lease")
    expr = r.get("expr")
    _check(expr is None or _is_str_list(expr), number, "request", "expr")
    _check(is_int(r["id"]) and r["id"] > 0, number, "request", "id")
    for name in ("priority", "seq", "prolongs"):
        _check(is_int(r[name]), number, "request", name)
    for name in ("valid_after", "deadline"):
        _check(_is_num(r[name]), number, "request", name)
    for name in ("job_timeout", "ended_at"):
        _check(r[name] is None or _is_num(r[name]), number, "request", name)
    _check(r["state"] in _REQUEST_STATES, number, "request", "state")
    _check(_is_str_list(r["groups"]), number, "request", "groups")
    _check(_is_caps(r["caps"]), number, "request", "caps")
    _check(r["job_worker"] is None or isinstance(r["job_worker"], str), number, "request",
           "job_worker")


def check_worker(w: dict[str, Any], number: int) -> None:
    for name in WORKER_COLUMNS:
        _check(name in w, number, "worker", name)
    _check(isinstance(w["uuid"], str) and bool(w["uuid"]), number, "worker", "uuid")
    _check(w["state"] in _WORKER_STATES, number, "worker", "state")
    _check(_is_str_list(w["groups"]), number, "worker", "groups")
    _check(_is_caps(w["caps"]), number, "worker", "caps")
    for name in ("dryad_address", "ssh_address"):
        _check(isinstance(w[name], str), number, "worker", name)
    for name in ("key", "username", "fail_reason"):
        _check(w[name] is None or isinstance(w[name], str), number, "worker", name)
    _check(w["job"] is None or is_int(w["job"]), number, "worker", "job")


def user_doc(record: dict[str, Any], number: int) -> dict[str, Any]:
    """A dump's user record as the document the store keeps (checked as the server checks
    a new user: name, keys, groups, role, priorities, cap)."""
    try:
        return User.from_doc({k: v for k, v in record.items() if k != "kind"}).to_doc()
    except BadArgumentError as exc:
        raise StoreError(f"line {number}: bad user record: {exc.message}") from None


def check_enrolment(record: dict[str, Any], number: int) -> tuple[str, str]:
    """A dump's enrolment record as (uuid, key)."""
    uuid, key = record.get("uuid"), record.get("key")
    try:
        check_uuid(uuid)
    except BadArgumentError:
        _check(False, number, "enrolment", "uuid")
    _check(is_public_key(key), number, "enrolment", "key")
    return uuid, key
