"""The SQLite store on its own: schema and migrations, refusals with clear messages,
commits, the live/history split of a restart, dump and restore, file modes, the key codec
and the server's merging of uncommitted changes."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from boruta.core.records import Changes
from boruta.core.scheduler import Scheduler
from boruta.server.store import DB_NAME, SCHEMA_VERSION, Store, StoreError, _SCHEMA_V1
from boruta.server.keys import JobKey, decode_key, encode_key, generate_key
from boruta.server.outbox import merge_changes as _merge_changes


def request(req_id: int, state: str = "WAITING", **extra) -> dict:
    rec = {"id": req_id, "priority": 4, "groups": ["lab"], "caps": {"device_type": "rpi4"},
           "valid_after": 1000.0, "deadline": 9000.0, "state": state, "job_worker": None,
           "job_timeout": None, "seq": req_id, "prolongs": 0,
           "ended_at": None if state in ("WAITING", "IN PROGRESS") else 2000.0}
    rec.update(extra)
    return rec


def worker(uuid: str, **extra) -> dict:
    rec = {"uuid": uuid, "caps": {"UUID": uuid, "device_type": "rpi4"}, "groups": ["lab"],
           "state": "MAINTENANCE", "dryad_address": "10.0.0.1:7175",
           "ssh_address": "10.0.0.1:22", "key": None, "username": None, "fail_reason": None,
           "job": None}
    rec.update(extra)
    return rec


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "state", "OFF")
    yield s
    s.close()


def dump_lines(store: Store) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in store.dump()]


# --------------------------------------------------------------------------- schema
def test_new_store_is_current_private_and_empty(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = Store(state)
    s.commit(Changes(requests=[request(1)], last_id=1, last_seq=1))
    assert s.version == SCHEMA_VERSION and not s.is_empty()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    assert s._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


@pytest.mark.parametrize("policy, level", [("FULL", 2), ("NORMAL", 1), ("OFF", 0)])
def test_fsync_policy_is_the_synchronous_pragma(tmp_path: Path, policy: str, level: int) -> None:
    s = Store(tmp_path, policy)
    assert s._conn().execute("PRAGMA synchronous").fetchone()[0] == level
    s.close()
    with pytest.raises(StoreError, match="unknown fsync policy"):
        Store(tmp_path, "sometimes")


def test_version_1_file_is_migrated(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(_SCHEMA_V1)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('last_id', '7'), "
               "('last_seq', '7')")
    db.execute("INSERT INTO requests VALUES (7, 3, '[]', '{\"a\":\"b\"}', 1.0, 2.0, "
               "'WAITING', NULL, NULL, 7, 0, NULL)")
    db.commit()
    db.close()
    s = Store(tmp_path)
    assert s.version == SCHEMA_VERSION
    snap = s.load()
    assert snap.last_id == 7 and [r["caps"] for r in snap.requests] == [{"a": "b"}]
    assert s.tunnel_ports() == {}
    indexes = {r[0] for r in s._conn().execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "requests_live" not in indexes           # made by version 2, dropped by 3
    assert "requests_ended_at" in indexes
    s.close()


def test_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s._conn().execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    s.close()
    for readonly in (False, True):
        with pytest.raises(StoreError) as exc:
            Store(tmp_path, readonly=readonly)
        message = str(exc.value)
        assert "newer Boruta" in message and "schema version 99" in message
        assert f"up to {SCHEMA_VERSION}" in message


def test_not_ours_garbage_and_truncation_are_clear_errors(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / DB_NAME)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a Boruta state database"):
        Store(other)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_NAME).write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store(garbage)
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store(garbage, readonly=True)

    big = tmp_path / "big"
    s = Store(big, "OFF")
    s.commit(Changes(requests=[request(i, "DONE", caps={"n": str(i)}) for i in range(1, 5001)],
                     last_id=5000, last_seq=5000))
    s.close()                                   # checkpointed into the main file
    data = (big / DB_NAME).read_bytes()
    (big / DB_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="is truncated"):
        Store(big)

    corrupt = tmp_path / "corrupt"
    s = Store(corrupt, "OFF")
    s.commit(Changes(requests=[request(i, "DONE", caps={"n": str(i)}) for i in range(1, 5001)],
                     last_id=5000, last_seq=5000))
    s.close()
    data = bytearray((corrupt / DB_NAME).read_bytes())
    for offset in range(8192, len(data), 4096):    # scribble over every page but the first two
        data[offset + 100: offset + 400] = b"\xff" * 300
    (corrupt / DB_NAME).write_bytes(bytes(data))
    with pytest.raises(StoreError, match="unreadable|truncated|corrupted"):
        s = Store(corrupt)
        try:
            s.load()
            s.check()
        finally:
            s.close()


def test_directory_that_cannot_be_used(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot be used"):
        Store(blocker / "state")
    with pytest.raises(StoreError, match="no Boruta state"):
        Store(tmp_path / "missing", readonly=True)


def test_lock_keeps_a_second_server_out(tmp_path: Path) -> None:
    first = Store(tmp_path, lock=True)
    with pytest.raises(StoreError, match="in use by another Boruta server"):
        Store(tmp_path, lock=True)
    reader = Store(tmp_path, readonly=True)      # dumps need no lock
    reader.close()
    first.close()
    Store(tmp_path, lock=True).close()


# --------------------------------------------------------------------------- commits
def test_commit_round_trip_and_deletions_first(store: Store) -> None:
    store.commit(Changes(requests=[request(1), request(2, "DONE")], workers=[worker("w1")],
                         last_id=2, last_seq=2), {1: 20001})
    # w1 deregistered and registered again in one turn: deletion then upsert keeps it.
    store.commit(Changes(workers=[worker("w1", state="IDLE")], removed_workers=["w1"],
                         purged_requests=[2]), {1: None, 3: 20003})
    snap = store.load()
    assert [w["state"] for w in snap.workers] == ["IDLE"]
    assert [r["id"] for r in snap.requests] == [1]
    assert store.tunnel_ports() == {3: 20003}
    assert (snap.last_id, snap.last_seq) == (2, 2)


def test_failed_commit_changes_nothing(store: Store) -> None:
    store.commit(Changes(requests=[request(1)], last_id=1, last_seq=1))
    bad = request(2)
    bad["caps"] = object()                       # cannot be encoded: the commit fails
    with pytest.raises(TypeError):
        store.commit(Changes(requests=[request(3), bad], last_id=3, last_seq=3))
    snap = store.load()
    assert [r["id"] for r in snap.requests] == [1] and snap.last_id == 1


def test_commits_encode_caps_and_groups_by_value(store: Store) -> None:
    # The encoder caches JSON texts across commits: by value, so an object changed
    # in place, or a new one at a freed object's address, is written as it now is.
    caps = {"device_type": "rpi4"}
    store.commit(Changes(requests=[request(1, caps=caps, groups=("a",))]))
    caps["device_type"] = "rpi5"
    store.commit(Changes(requests=[request(1, caps=caps, groups=("b",)),
                                   request(2, caps={"device_type": "rpi4"}, groups=("a",)),
                                   request(3, caps={}, groups=())]))
    many = range(10, 10 + 5000)                  # more distinct caps than the cache holds
    for start in range(0, len(many), 500):
        store.commit(Changes(requests=[request(i, caps={"n": str(i)}, groups=(str(i),))
                                       for i in many[start:start + 500]]))
    store.commit(Changes(requests=[request(4, caps=dict(caps), groups=["b"])]))
    stored = {r["id"]: (r["caps"], r["groups"]) for r in store.load().requests}
    assert stored[1] == ({"device_type": "rpi5"}, ["b"])
    assert stored[2] == ({"device_type": "rpi4"}, ["a"])
    assert stored[3] == ({}, [])
    assert stored[4] == ({"device_type": "rpi5"}, ["b"])
    assert all(stored[i] == ({"n": str(i)}, [str(i)]) for i in many)


def test_live_requests_first_then_history_in_chunks(store: Store) -> None:
    records = [request(i, "DONE" if i % 3 else "WAITING") for i in range(1, 31)]
    records[4] = request(5, "IN PROGRESS", job_worker="w1", job_timeout=5000.0)
    records[7] = request(8, "FAILED")
    store.commit(Changes(requests=records, workers=[worker("w2", state="RUNNING", job=8)],
                         last_id=40, last_seq=40))
    live = store.load(history=False)
    live_ids = [r["id"] for r in live.requests]
    assert live_ids == sorted({3, 5, 6, 8, 9, 12, 15, 18, 21, 24, 27, 30})  # 8: a worker's job
    assert live.last_id == 40
    seen, after = [], 0
    while chunk := store.history(after, limit=7):
        assert len(chunk) <= 7
        seen += [r["id"] for r in chunk]
        after = chunk[-1]["id"]
    assert seen == [r["id"] for r in records if r["state"] not in ("WAITING", "IN PROGRESS")]
    assert store.load_request(2)["state"] == "DONE" and store.load_request(99) is None


def test_restore_from_live_then_history_equals_full_restore(tmp_path: Path) -> None:
    sched = Scheduler(matcher="reference")
    sched.register({"UUID": "w1", "device_type": "a"}, "10.0.0.1:1", "10.0.0.1:22")
    ids = [sched.new_request({"device_type": "a"}, p) for p in (3, 5, 3, 9)]
    sched.close_request(ids[1])
    store = Store(tmp_path, "OFF")
    store.commit(sched.drain_changes())
    full = Scheduler.restore(store.load(), matcher="reference")
    part = Scheduler.restore(store.load(history=False), matcher="reference")
    assert not part.has_request(ids[1])
    assert part.add_history(store.history()) == 1
    assert part.add_history(store.history()) == 0            # known IDs are skipped
    assert [part.get_request_info(i) for i in ids] == [full.get_request_info(i) for i in ids]
    assert part.new_request({"device_type": "a"}, 3) == ids[-1] + 1
    store.close()


# --------------------------------------------------------------------------- dump and restore
def test_dump_restore_round_trip(tmp_path: Path, store: Store) -> None:
    key = encode_key(generate_key("ed25519"))
    store.commit(Changes(
        requests=[request(1), request(2, "IN PROGRESS", job_worker="w1", job_timeout=5.0),
                  request(3, "CANCELLED", caps={"device_type": "x", "usb": "yes"}, groups=[])],
        workers=[worker("w1", state="RUNNING", key=key, username="alice", job=2),
                 worker("w2", state="FAILED", fail_reason="gone")],
        last_id=5, last_seq=6), {2: 20002})
    lines = dump_lines(store)
    assert json.loads(lines[0]) == {"kind": "meta", "schema_version": SCHEMA_VERSION,
                                    "last_id": 5, "last_seq": 6}
    other = Store(tmp_path / "other", "OFF")
    assert other.restore(json.loads(line) for line in lines) == (2, 3)
    assert dump_lines(other) == lines
    assert other.tunnel_ports() == {2: 20002}
    with pytest.raises(StoreError, match="not empty"):
        other.restore(json.loads(line) for line in lines)
    other.close()


def test_restore_keeps_distinct_caps_apart(tmp_path: Path, store: Store) -> None:
    # Records streamed one at a time: no encoding cache may confuse one with the next.
    records = [{"kind": "meta", "schema_version": SCHEMA_VERSION, "last_id": 0, "last_seq": 0}]
    records += [{"kind": "request", **request(i, caps={"n": str(i)}, groups=[str(i)])}
                for i in range(1, 200)]
    store.restore(json.loads(json.dumps(r)) for r in records)
    assert [r["caps"] for r in store.load().requests] == [{"n": str(i)} for i in range(1, 200)]
    assert store.load().last_id == 199


@pytest.mark.parametrize("bad, message", [
    ({"kind": "request", **request(1, state="SLEEPING")}, "line 2: request record .*'state'"),
    ({"kind": "request", **request(1, priority="high")}, "line 2: .*'priority'"),
    ({"kind": "request", **request(1, caps=["a"])}, "line 2: .*'caps'"),
    ({"kind": "worker", **worker("w", job="x")}, "line 2: worker record .*'job'"),
    ({"kind": "tunnel", "req_id": 1, "port": 70000}, "line 2: bad tunnel record"),
    ({"kind": "ghost"}, "line 2: not a Boruta dump record"),
    ([1, 2], "line 2: not a Boruta dump record"),
])
def test_restore_refuses_bad_records_and_writes_nothing(store: Store, bad, message) -> None:
    records = [{"kind": "meta", "schema_version": SCHEMA_VERSION, "last_id": 1, "last_seq": 1},
               bad, {"kind": "request", **request(2)}]
    with pytest.raises(StoreError, match=message):
        store.restore(records)
    assert store.is_empty()


def test_restore_refuses_duplicates_missing_meta_and_newer_dumps(store: Store) -> None:
    meta = {"kind": "meta", "schema_version": SCHEMA_VERSION, "last_id": 1, "last_seq": 1}
    with pytest.raises(StoreError, match="line 3: request 1 appears twice"):
        store.restore([meta, {"kind": "request", **request(1)}, {"kind": "request", **request(1)}])
    with pytest.raises(StoreError, match="no meta record"):
        store.restore([{"kind": "request", **request(1)}])
    with pytest.raises(StoreError, match="schema version 9 cannot be restored"):
        store.restore([{**meta, "schema_version": 9}])
    assert store.is_empty()


def test_dump_reads_one_consistent_snapshot_while_another_connection_writes(
        tmp_path: Path, store: Store) -> None:
    store.commit(Changes(requests=[request(i) for i in range(1, 101)], last_id=100,
                         last_seq=100))
    reader = Store(tmp_path / "state", readonly=True)
    dump = reader.dump()
    first = [next(dump), next(dump)]               # the read transaction is open now
    store.commit(Changes(requests=[request(i) for i in range(101, 201)], last_id=200,
                         last_seq=200))
    rest = list(dump)
    assert first[0]["last_id"] == 100
    assert len([r for r in first + rest if r["kind"] == "request"]) == 100
    assert len([r for r in reader.dump() if r["kind"] == "request"]) == 200
    reader.close()


# --------------------------------------------------------------------------- keys and merging
def test_key_codec() -> None:
    key = generate_key("ed25519")
    text = encode_key(key)
    assert isinstance(text, str) and json.loads(text)["private"] == key.private_text
    assert decode_key(text) == key
    assert encode_key(text) == text and encode_key(None) is None
    assert decode_key(None) is None
    for junk in ("the-job-key", "{", json.dumps({"v": 99}), json.dumps([1])):
        assert decode_key(junk) is None
    with pytest.raises(TypeError):
        encode_key(42)
    assert isinstance(decode_key(encode_key(JobKey("ssh-rsa", "ssh-rsa AAA x", "PEM"))), JobKey)


def test_merge_of_uncommitted_changes() -> None:
    old = Changes(requests=[request(1), request(2)], workers=[worker("a"), worker("b")],
                  removed_workers=["c"], purged_requests=[9], last_id=2, last_seq=2)
    new = Changes(requests=[request(1, "CANCELLED")], workers=[worker("c")],
                  removed_workers=["b"], purged_requests=[2], last_id=None, last_seq=None)
    merged = _merge_changes(old, new)
    assert {r["id"]: r["state"] for r in merged.requests} == {1: "CANCELLED"}
    assert sorted(w["uuid"] for w in merged.workers) == ["a", "c"]
    assert sorted(merged.removed_workers) == ["b", "c"] and sorted(merged.purged_requests) == [2, 9]
    assert (merged.last_id, merged.last_seq) == (2, 2)


def test_merged_changes_commit_to_the_latest_state(tmp_path: Path) -> None:
    s = Store(tmp_path, "OFF")
    old = Changes(workers=[worker("b", state="IDLE")], removed_workers=["c"], last_id=3,
                  last_seq=3)
    new = Changes(workers=[worker("c")], removed_workers=["b"])
    s.commit(Changes(workers=[worker("c", state="IDLE")]))
    s.commit(_merge_changes(old, new))
    assert [(w["uuid"], w["state"]) for w in s.load().workers] == [("c", "MAINTENANCE")]
    s.close()
    assert os.path.exists(tmp_path / DB_NAME)


# --------------------------------------------------------------------------- configuration
def test_state_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from boruta.server.config import ConfigError, default_state_dir, load_server_config
    cfg = load_server_config(None, {})
    assert cfg.state_dir is None and not cfg.durable and cfg.state_sync == "full"
    cfg = load_server_config(None, {"state_dir": str(tmp_path), "state_sync": "NORMAL",
                                    "restart_grace": "5", "purge_interval": 60,
                                    "retention": "none"})
    assert cfg.durable and cfg.state_sync == "normal" and cfg.restart_grace == 5.0
    assert cfg.purge_interval == 60.0 and cfg.scheduler.retention is None
    assert not load_server_config(None, {"state_dir": ":memory:"}).durable
    for bad in ({"state_sync": "always"}, {"restart_grace": -1}, {"purge_interval": 0}):
        with pytest.raises(ConfigError):
            load_server_config(None, bad)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == str(tmp_path / "xdg" / "boruta")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == str(tmp_path / "home" / ".local" / "state" / "boruta")
