"""The store's identity part, on real files: schema 4 (request owners, users, dryad
enrolments), its migration from older files, durable admin writes, and users and
enrolments through dump and restore."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import zmq

from boruta.core.records import Changes
from boruta.core.users import User
from boruta.server.store import _MIGRATIONS, _SCHEMA_V1, DB_NAME, SCHEMA_VERSION, Store, StoreError

KEYS = [zmq.curve_keypair()[0].decode() for _ in range(3)]


def request(req_id: int, **extra) -> dict:
    rec = {"id": req_id, "priority": 4, "groups": ["lab"], "caps": {"device_type": "rpi4"},
           "valid_after": 1000.0, "deadline": 9000.0, "state": "WAITING", "job_worker": None,
           "job_timeout": None, "seq": req_id, "prolongs": 0, "ended_at": None}
    rec.update(extra)
    return rec


def alice(**changes) -> dict:
    return User.from_doc({"name": "alice", "keys": [KEYS[0]], "groups": ["lab"],
                          "priorities": [4, 16], "max_open": 5, **changes}).to_doc()


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "state", "OFF")
    yield s
    s.close()


def version_3_file(path: Path) -> None:
    """A state file as Boruta wrote it before users existed: one request, one tunnel."""
    path.mkdir(mode=0o700, exist_ok=True)
    db = sqlite3.connect(path / DB_NAME)
    db.executescript(_SCHEMA_V1)
    for statements in _MIGRATIONS[:2]:
        for statement in statements:
            db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('schema_version', '3'), ('last_id', '7'), "
               "('last_seq', '7')")
    db.execute("INSERT INTO requests VALUES (7, 3, '[\"lab\"]', '{\"a\":\"b\"}', 1.0, 2.0, "
               "'IN PROGRESS', 'w1', 5.0, 7, 0, NULL)")
    db.execute("INSERT INTO tunnels VALUES (7, 20007)")
    db.commit()
    db.close()


# --------------------------------------------------------------------------- schema 4
def test_version_3_file_is_read_as_it_is_then_migrated(tmp_path: Path) -> None:
    version_3_file(tmp_path)
    reader = Store(tmp_path, readonly=True)          # an older file, read without writing
    assert reader.version == 3
    assert [r["owner"] for r in reader.load().requests] == [""]
    assert reader.load_users() == [] and reader.load_enrolments() == []
    assert [r["kind"] for r in reader.dump()] == ["meta", "tunnel", "request"]
    reader.close()

    s = Store(tmp_path)
    assert s.version == SCHEMA_VERSION >= 5
    (record,) = s.load().requests
    assert (record["id"], record["owner"], record["caps"]) == (7, "", {"a": "b"})
    assert record["lease"] is None                   # filed before leases: none
    assert s.tunnel_ports() == {7: 20007}
    s.save_user(alice())
    s.commit(Changes(requests=[request(8, owner="alice")], last_id=8, last_seq=8))
    s.close()
    s = Store(tmp_path)
    assert {r["id"]: r["owner"] for r in s.load().requests} == {7: "", 8: "alice"}
    assert [u["name"] for u in s.load_users()] == ["alice"]
    s.close()


def test_owner_is_written_updated_in_place_and_read_back(tmp_path: Path) -> None:
    s = Store(tmp_path, "OFF")
    s.commit(Changes(requests=[request(1, owner="alice"), request(2)], last_id=2, last_seq=2))
    s.commit(Changes(requests=[request(1, owner="alice", state="CANCELLED", ended_at=3.0)]))
    s.close()
    s = Store(tmp_path, "OFF")
    assert {r["id"]: (r["owner"], r["state"]) for r in s.load().requests} == {
        1: ("alice", "CANCELLED"), 2: ("", "WAITING")}
    assert s.load_request(1)["owner"] == "alice"
    s.close()


# --------------------------------------------------------------------------- users, enrolments
def test_user_and_enrolment_writes_are_committed_when_the_call_returns(tmp_path: Path,
                                                                       store: Store) -> None:
    other = Store(tmp_path / "state", readonly=True)   # another connection sees the disk
    store.save_user(alice())
    store.save_user({"name": "bob", "keys": [KEYS[1]], "groups": [], "role": "admin",
                     "priorities": [1, 16], "max_open": 1000})
    store.save_enrolment("w2", KEYS[2])
    store.save_enrolment("w1", KEYS[2])
    assert [u["name"] for u in other.load_users()] == ["alice", "bob"]
    assert other.load_users()[0] == alice()
    assert other.load_enrolments() == [("w1", KEYS[2]), ("w2", KEYS[2])]

    store.save_user(alice(groups=["lab", "ci"]))       # replaces the document
    store.save_enrolment("w1", KEYS[0])
    store.delete_user("bob")
    store.delete_enrolment("w2")
    store.delete_enrolment("never-enrolled")          # nothing to delete: no error
    assert other.load_users() == [alice(groups=["lab", "ci"])]
    assert other.load_enrolments() == [("w1", KEYS[0])]
    assert not store.is_empty()                        # a restore would refuse this directory
    other.close()


def test_identity_writes_that_cannot_be_made_raise_store_errors(tmp_path: Path,
                                                                store: Store) -> None:
    store.save_user(alice())
    reader = Store(tmp_path / "state", readonly=True)
    with pytest.raises(StoreError, match="read-only"):
        reader.save_user(alice())
    reader.close()
    with pytest.raises(StoreError, match="without a name"):
        store.save_user({"keys": [KEYS[0]]})
    # A write may not join a transaction someone left open on the connection.
    store._conn().execute("BEGIN")
    with pytest.raises(StoreError, match="cannot save"):
        store.save_enrolment("w1", KEYS[1])
    store._conn().execute("ROLLBACK")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.delete_user("alice")


def test_a_damaged_user_document_is_a_clear_error(store: Store) -> None:
    store._conn().execute("INSERT INTO users(name, doc) VALUES ('x', '{broken')")
    with pytest.raises(StoreError, match="bad record"):
        store.load_users()


# --------------------------------------------------------------------------- dump and restore
def test_users_enrolments_and_owners_survive_dump_and_restore(tmp_path: Path,
                                                              store: Store) -> None:
    store.save_user(alice())
    store.save_enrolment("w1", KEYS[2])
    store.commit(Changes(requests=[request(1, owner="alice"), request(2)], last_id=2,
                         last_seq=2))
    records = list(store.dump())
    assert [r["kind"] for r in records] == ["meta", "user", "enrolment", "request", "request"]
    assert records[1] == {"kind": "user", **alice()}
    assert records[2] == {"kind": "enrolment", "uuid": "w1", "key": KEYS[2]}
    other = Store(tmp_path / "other", "OFF")
    assert other.restore(json.loads(json.dumps(r)) for r in records) == (0, 2)
    assert list(other.dump()) == records
    other.close()


def test_a_dump_from_before_owners_restores_with_no_owner(tmp_path: Path) -> None:
    version_3_file(tmp_path / "old")
    old = Store(tmp_path / "old", readonly=True)
    records = list(old.dump())
    old.close()
    del records[-1]["owner"]                          # as a version-3 Boruta wrote it
    new = Store(tmp_path / "new", "OFF")
    new.restore(records)
    assert [r["owner"] for r in new.load().requests] == [""]
    new.close()


META = {"kind": "meta", "schema_version": SCHEMA_VERSION, "last_id": 0, "last_seq": 0}


@pytest.mark.parametrize("bad, message", [
    ({"kind": "user", "name": "Bad Name!", "keys": [KEYS[0]]}, "line 3: bad user record: name"),
    ({"kind": "user", "name": "carol", "keys": ["not-a-key"]}, "line 3: bad user record: keys"),
    ({"kind": "user", "name": "carol", "keys": [KEYS[0]], "priorities": [5, 2]},
     "line 3: bad user record: priorities"),
    ({"kind": "user", "name": "carol", "keys": [KEYS[0]], "secret": "x"},
     "line 3: bad user record: unknown user field 'secret'"),
    ({"kind": "enrolment", "uuid": "", "key": KEYS[0]}, "line 3: enrolment record .*'uuid'"),
    ({"kind": "enrolment", "uuid": "w1", "key": "short"}, "line 3: enrolment record .*'key'"),
    ({"kind": "request", **request(1, owner=7)}, "line 3: request record .*'owner'"),
])
def test_restore_refuses_bad_identity_records_and_writes_nothing(store: Store, bad,
                                                                 message) -> None:
    with pytest.raises(StoreError, match=message):
        store.restore([META, {"kind": "user", **alice()}, bad])
    assert store.is_empty() and store.load_users() == []


def test_restore_refuses_a_user_or_enrolment_given_twice(store: Store) -> None:
    with pytest.raises(StoreError, match="line 3: user alice appears twice"):
        store.restore([META, {"kind": "user", **alice()}, {"kind": "user", **alice()}])
    enrolment = {"kind": "enrolment", "uuid": "w1", "key": KEYS[1]}
    with pytest.raises(StoreError, match="line 3: the enrolment of w1 appears twice"):
        store.restore([META, enrolment, enrolment])
    assert store.is_empty()
