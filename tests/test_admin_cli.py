"""`boruta admin dump` and `boruta admin restore`: JSON lines of the whole state, from a
stopped, killed or running server; restored into an empty state directory only; every
failure a sentence (or a JSON error document), never a traceback."""
from __future__ import annotations

import io
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from boruta.cli import app as cli
from boruta.core.records import Changes
from boruta.core.scheduler import Scheduler
from boruta.server.store import DB_NAME, SCHEMA_VERSION, Store
from e2e_helpers import ROOT, ServerProcess, unique_caps



class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result({self.code}, out={self.out[:300]!r}, err={self.err[:300]!r})"


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    def go(*args: str, stdin: str = "") -> Result:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.run(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return go


def make_state(path: Path) -> list[int]:
    """A small state with every kind of record: requests in several states, workers,
    a job with its key and tunnel port."""
    sched = Scheduler(matcher="reference")
    sched.register({"UUID": "w1", "device_type": "rpi4"}, "10.0.0.1:7175", "10.0.0.1:22")
    sched.register({"UUID": "w2", "device_type": "rpi4", "usb": "yes"}, "10.0.0.2:7175",
                   "10.0.0.2:22")
    ids = [sched.new_request({"device_type": "rpi4"}, p) for p in (3, 7, 9)]
    sched.close_request(ids[1])
    store = Store(path, "OFF")
    store.commit(sched.drain_changes(), {ids[0]: 20007})
    store.close()
    return ids


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_dump_and_restore_round_trip(run, tmp_path: Path) -> None:
    ids = make_state(tmp_path / "a")
    r = run("admin", "dump", "--state-dir", str(tmp_path / "a"))
    assert r.code == 0, r
    records = lines(r.out)
    assert records[0] == {"kind": "meta", "schema_version": SCHEMA_VERSION, "last_id": 3,
                          "last_seq": 3}
    assert [x["id"] for x in records if x["kind"] == "request"] == ids
    assert [x["uuid"] for x in records if x["kind"] == "worker"] == ["w1", "w2"]
    assert {"kind": "tunnel", "req_id": ids[0], "port": 20007} in records
    assert "Dumped 2 workers and 3 requests" in r.err

    r2 = run("admin", "restore", "--state-dir", str(tmp_path / "b"), stdin=r.out)
    assert r2.code == 0, r2
    assert r2.out == f"Restored 2 workers and 3 requests into {tmp_path / 'b'}.\n"
    again = run("admin", "dump", "--state-dir", str(tmp_path / "b"))
    assert again.out == r.out

    # Files instead of pipes, and --json.
    r3 = run("admin", "dump", "--state-dir", str(tmp_path / "b"), "-o", str(tmp_path / "d.jsonl"))
    assert r3.code == 0 and r3.out == "" and (tmp_path / "d.jsonl").read_text() == r.out
    r4 = run("admin", "restore", "--state-dir", str(tmp_path / "c"), "-i",
             str(tmp_path / "d.jsonl"), "--json")
    assert r4.code == 0 and json.loads(r4.out) == {"state_dir": str(tmp_path / "c"),
                                                   "workers": 2, "requests": 3,
                                                   "users": 0, "enrolments": 0}


def test_dump_and_restore_carry_users_and_enrolments(run, tmp_path: Path) -> None:
    make_state(tmp_path / "a")
    store = Store(tmp_path / "a", "OFF")
    key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    store.save_user({"name": "alice", "keys": [key], "groups": ["lab"], "role": "user",
                     "priorities": [4, 16], "max_open": 5})
    store.save_enrolment("w1", key)
    store.close()
    r = run("admin", "dump", "--state-dir", str(tmp_path / "a"))
    assert "Dumped 2 workers and 3 requests, 1 users and 1 dryad enrolments" in r.err
    assert [x["name"] for x in lines(r.out) if x["kind"] == "user"] == ["alice"]
    r2 = run("admin", "restore", "--state-dir", str(tmp_path / "b"), stdin=r.out)
    assert r2.out == (f"Restored 2 workers and 3 requests, 1 users and 1 dryad enrolments "
                      f"into {tmp_path / 'b'}.\n")
    assert run("admin", "dump", "--state-dir", str(tmp_path / "b")).out == r.out


def test_restore_refusals_write_nothing(run, tmp_path: Path) -> None:
    make_state(tmp_path / "a")
    dump = run("admin", "dump", "--state-dir", str(tmp_path / "a")).out
    before = (tmp_path / "a" / DB_NAME).read_bytes()
    r = run("admin", "restore", "--state-dir", str(tmp_path / "a"), stdin=dump)
    assert r.code == 1 and "not empty" in r.err and "Traceback" not in r.err
    assert run("admin", "dump", "--state-dir", str(tmp_path / "a")).out == dump
    assert (tmp_path / "a" / DB_NAME).read_bytes() == before

    broken = dump.splitlines()
    broken.insert(3, "{not json")
    r = run("admin", "restore", "--state-dir", str(tmp_path / "b"), stdin="\n".join(broken))
    assert r.code == 1 and "nothing restored: line 4: not JSON" in r.err, r
    assert Store(tmp_path / "b", readonly=True).is_empty()

    r = run("admin", "restore", "--state-dir", str(tmp_path / "c"), stdin="", )
    assert r.code == 1 and "no meta record" in r.err
    r = run("--json", "admin", "restore", "--state-dir", str(tmp_path / "d"),
            stdin='{"kind": "ghost"}\n')
    assert r.code == 1
    assert json.loads(r.out)["error"]["code"] == "state_error"
    r = run("admin", "restore", "--state-dir", str(tmp_path / "e"), "-i",
            str(tmp_path / "missing.jsonl"))
    assert r.code == 1 and "cannot read" in r.err


def test_dump_refusals(run, tmp_path: Path) -> None:
    r = run("admin", "dump", "--state-dir", str(tmp_path / "nothing"))
    assert r.code == 1 and "no Boruta state" in r.err and r.out == ""
    assert not (tmp_path / "nothing").exists()             # a dump creates nothing
    make_state(tmp_path / "newer")
    db = sqlite3.connect(tmp_path / "newer" / DB_NAME)
    db.execute(f"UPDATE meta SET value='{SCHEMA_VERSION + 1}' WHERE key='schema_version'")
    db.commit()
    db.close()
    r = run("admin", "dump", "--state-dir", str(tmp_path / "newer"))
    assert r.code == 1 and "newer Boruta" in r.err and "Traceback" not in r.err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / DB_NAME).write_bytes(b"\x00" * 4096)
    r = run("admin", "dump", "--state-dir", str(tmp_path / "junk"))
    assert r.code == 1 and "not an SQLite database" in r.err


def test_default_state_dir_is_the_servers(run, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    make_state(tmp_path / "xdg" / "boruta")
    r = run("admin", "dump")
    assert r.code == 0 and lines(r.out)[0]["kind"] == "meta"


@pytest.mark.slow
def test_dump_of_a_running_then_killed_server_restores_into_a_working_server(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = ServerProcess(tmp_path / "server.log", state_dir=str(state))
    server.start()
    try:
        client = server.client()
        caps = unique_caps()
        ids = [client.new_request(caps, p, queue_unsatisfiable=True) for p in (2, 4, 6)]
        client.close_request(ids[0])

        def dump(where: Path) -> list[dict[str, Any]]:
            proc = subprocess.run([sys.executable, "-m", "boruta.cli", "admin", "dump",
                                   "--state-dir", str(where)], capture_output=True, text=True,
                                  cwd=ROOT, timeout=30)
            assert proc.returncode == 0, proc.stderr
            return lines(proc.stdout)

        running = dump(state)                                 # the server keeps running
        assert [r["id"] for r in running if r["kind"] == "request"] == ids
        assert client.new_request(caps, 8, queue_unsatisfiable=True) == ids[-1] + 1
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        assert (state / (DB_NAME + "-wal")).exists()           # as the crash left it
        killed = dump(state)
        assert [r["id"] for r in killed if r["kind"] == "request"] == ids + [ids[-1] + 1]
    finally:
        server.close()
    # The shell's pipes, as documented: dump > file, restore < file.
    dump_file = tmp_path / "state.jsonl"
    subprocess.run(f"{sys.executable} -m boruta.cli admin dump --state-dir {state} > {dump_file}",
                   shell=True, check=True, cwd=ROOT, timeout=30)
    subprocess.run(f"{sys.executable} -m boruta.cli admin restore --state-dir {tmp_path / 'new'}"
                   f" < {dump_file}", shell=True, check=True, cwd=ROOT, timeout=30,
                   capture_output=True)
    again = ServerProcess(tmp_path / "again.log", state_dir=str(tmp_path / "new"))
    again.start()
    try:
        client = again.client()
        infos = [client.get_request_info(i) for i in ids]
        assert [i.priority for i in infos] == [2, 4, 6]
        assert infos[0].state.terminal and not infos[1].state.terminal
        assert client.new_request(caps, 8, queue_unsatisfiable=True) == ids[-1] + 2
    finally:
        again.close()


def test_restored_counters_never_go_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "a", "OFF")
    store.commit(Changes(last_id=41, last_seq=50))            # everything purged long ago
    records = list(store.dump())
    store.close()
    other = Store(tmp_path / "b", "OFF")
    other.restore(records)
    assert (other.load().last_id, other.load().last_seq) == (41, 50)
    sched = Scheduler.restore(other.load(), matcher="reference")
    sched.register({"UUID": "w"}, "10.0.0.1:1", "10.0.0.1:22")
    assert sched.new_request({}, 5) == 42
    other.close()
