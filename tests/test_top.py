"""`boruta top`: the model fed by hand-made events, the keys, the view, and the command
against a live farm (lists, the event stream, a terminal, SIGTERM)."""
from __future__ import annotations

import dataclasses
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from boruta.cli.top import (KEYS, RETRY_EVERY, Action, Controls, Frame, Keyboard, TopShell,
                            list_all, press, render)
from boruta.cli.top_model import FarmModel, percentile
from boruta.core.types import ListInfo, Paginator, ReqInfo, ReqState, WorkerState, iso
from cli_fake import T0, W1, W2, fake, req, run, wrk  # noqa: F401
from e2e_helpers import ServerProcess, wait_until

W3 = "4f1a2b3c-0000-4000-8000-000000000003"
NOW = T0.timestamp()


def rpi(id: int, priority: int = 4, state: ReqState = ReqState.WAIT, after: float = 0.0,
        device_type: str = "rpi4", **kw: Any) -> ReqInfo:
    """A request of `device_type`, valid `after` seconds past T0."""
    info = req(id, state, priority, caps={"device_type": device_type}, **kw)
    return dataclasses.replace(info, valid_after=T0 + timedelta(seconds=after))


def worker(uuid: str, state: WorkerState, device_type: str) -> Any:
    return dataclasses.replace(wrk(uuid, state), caps={"UUID": uuid, "device_type": device_type})


class Events:
    """Event documents as the server numbers them."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq

    def request(self, id: int, state: str, reason: str, at: float = NOW,
                worker: str | None = None) -> dict[str, Any]:
        self.seq += 1
        return {"kind": "request", "id": id, "state": state, "reason": reason,
                "worker_uuid": worker, "at": _iso(at), "seq": self.seq}

    def worker(self, uuid: str, state: str, reason: str, at: float = NOW) -> dict[str, Any]:
        self.seq += 1
        return {"kind": "worker", "uuid": uuid, "state": state, "reason": reason,
                "at": _iso(at), "seq": self.seq}


def _iso(at: float) -> str:
    return iso(T0 + timedelta(seconds=at - NOW)) or ""


def loaded() -> FarmModel:
    """Three workers (two rpi4, one odroid); requests 1-2 waiting, 3 running on W1."""
    model = FarmModel()
    model.load([worker(W1, WorkerState.RUN, "rpi4"), worker(W2, WorkerState.IDLE, "rpi4"),
                worker(W3, WorkerState.MAINTENANCE, "odroid")],
               [rpi(2, priority=8), rpi(1, priority=8, device_type="odroid"),
                rpi(3, state=ReqState.INPROGRESS, worker=W1)])
    return model


# ---------------------------------------------------------------------- the model
def test_load_counts_workers_and_requests_by_state_and_device_type() -> None:
    model = loaded()
    assert not model.needs_sync
    assert model.worker_counts() == {"IDLE": 1, "RUNNING": 1, "PREPARE": 0,
                                     "MAINTENANCE": 1, "FAILED": 0, "BUSY": 0}
    assert model.worker_counts("odroid")["MAINTENANCE"] == 1
    assert sum(model.worker_counts("odroid").values()) == 1
    assert model.request_counts() == {"WAITING": 2, "IN PROGRESS": 1}
    assert model.request_counts("rpi4") == {"WAITING": 1, "IN PROGRESS": 1}
    assert model.device_types() == ["odroid", "rpi4"]


def test_the_queue_is_in_the_schedulers_order_and_sorts_by_age_and_device_type() -> None:
    model = FarmModel()
    model.load([], [rpi(5, priority=2, after=30), rpi(3, priority=9, after=0),
                    rpi(4, priority=2, after=10, device_type="odroid"),
                    rpi(6, priority=1, after=20, device_type="odroid")])
    ids = lambda sort, dt=None: [r.id for r in model.queue(NOW + 60, sort, dt).rows]  # noqa: E731
    assert ids("priority") == [6, 4, 5, 3]           # priority, then ID
    assert ids("age") == [3, 4, 6, 5]                 # valid-after, oldest first
    assert ids("device type") == [6, 4, 5, 3]         # odroid before rpi4, then priority
    assert ids("priority", "rpi4") == [5, 3]
    view = model.queue(NOW + 60, "priority", None, limit=2)
    assert [r.id for r in view.rows] == [6, 4] and view.waiting == 4
    assert view.rows[0].waited == 40.0 and view.rows[0].owner == "alice"


def test_a_new_request_is_looked_up_before_it_joins_the_queue() -> None:
    model, ev = loaded(), Events()
    model.apply(ev.request(9, "WAITING", "created"))
    assert model.request_counts()["WAITING"] == 3
    assert model.lookups(10) == ([9], [])
    assert model.queue(NOW).unresolved == 1 and 9 not in [r.id for r in model.queue(NOW).rows]
    model.learn_request(9, rpi(9, priority=1, device_type="odroid"))
    assert model.lookups(10) == ([], [])
    assert [r.id for r in model.queue(NOW).rows] == [9, 1, 2]
    assert model.request_counts("odroid")["WAITING"] == 2


def test_a_start_measures_the_wait_from_valid_after_per_device_type() -> None:
    model, ev = loaded(), Events()
    model.apply(ev.request(2, "IN PROGRESS", "assigned", at=NOW + 12, worker=W2))
    model.apply(ev.request(1, "IN PROGRESS", "assigned", at=NOW + 30, worker=W3))
    assert model.request_counts() == {"WAITING": 0, "IN PROGRESS": 3}
    rows = {r.device_type: r for r in model.wait_rows(NOW + 40)}
    assert (rows["rpi4"].started, rows["rpi4"].p50) == (1, 12.0)
    assert (rows["odroid"].started, rows["odroid"].max) == (1, 30.0)
    assert (rows[None].started, rows[None].p50, rows[None].p90) == (2, 12.0, 30.0)
    model.apply(ev.request(2, "DONE", "closed by owner", worker=W2))
    assert model.request_counts() == {"WAITING": 0, "IN PROGRESS": 2}


def test_a_start_of_a_request_not_yet_looked_up_is_measured_when_it_is() -> None:
    model, ev = FarmModel(), Events()
    model.load([], [])
    model.apply(ev.request(9, "WAITING", "created", at=NOW))
    model.apply(ev.request(9, "IN PROGRESS", "assigned", at=NOW + 7, worker=W1))
    model.apply(ev.request(9, "DONE", "closed by owner", at=NOW + 8, worker=W1))
    assert model.lookups(10) == ([9], [])              # the start still needs its caps
    model.learn_request(9, rpi(9, state=ReqState.DONE, after=2))
    assert [(r.device_type, r.started, r.p50) for r in model.wait_rows(NOW)] == [
        (None, 1, 5.0), ("rpi4", 1, 5.0)]
    assert model.request_counts() == {"WAITING": 0, "IN PROGRESS": 0}


def test_a_start_seen_by_a_look_up_first_is_measured_once_by_its_event() -> None:
    model, ev = FarmModel(), Events()
    model.load([], [])
    model.apply(ev.request(9, "WAITING", "created", at=NOW))
    model.learn_request(9, rpi(9, state=ReqState.INPROGRESS, worker=W1))  # already started
    start = ev.request(9, "IN PROGRESS", "assigned", at=NOW + 4, worker=W1)
    model.apply(start)
    model.apply(dict(start, seq=ev.seq + 1))              # the same start again: not twice
    assert [(r.started, r.p50) for r in model.wait_rows(NOW)] == [(1, 4.0), (1, 4.0)]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0.5) == 5.0 and percentile(values, 0.9) == 9.0
    assert percentile([3.0], 0.9) == 3.0


def test_worker_events_move_counts_and_new_workers_are_looked_up() -> None:
    model, ev = loaded(), Events()
    model.apply(ev.worker(W2, "RUNNING", "request 1"))
    model.apply(ev.worker(W3, "REMOVED", "deregistered"))
    new = "4f1a2b3c-0000-4000-8000-000000000009"
    model.apply(ev.worker(new, "MAINTENANCE", "registered"))
    assert model.worker_counts()["RUNNING"] == 2 and W3 not in model.workers
    assert model.lookups(10) == ([], [new])
    odroid = lambda: [t.subject for t in model.recent_transitions("odroid")]  # noqa: E731
    assert odroid() == [W3]                               # the new one's type: not known yet
    model.learn_worker(new, worker(new, WorkerState.MAINTENANCE, "odroid"))
    assert model.worker_counts("odroid")["MAINTENANCE"] == 1
    assert odroid() == [new, W3]


def test_transitions_are_newest_first_with_reasons() -> None:
    model, ev = loaded(), Events()
    model.apply(ev.request(2, "IN PROGRESS", "assigned", worker=W2))
    model.apply(ev.worker(W2, "RUNNING", "request 2"))
    model.apply({"kind": "tick", "seq": 2})               # not an event: skipped
    model.apply({"kind": "request", "id": "x", "state": "?", "seq": 3})      # garbage
    shown = [(t.kind, t.subject, t.state, t.reason) for t in model.recent_transitions()]
    assert shown == [("worker", W2, "RUNNING", "request 2"),
                     ("request", "2", "IN PROGRESS", "assigned")]
    assert len(model.recent_transitions(limit=1)) == 1


def test_a_gap_in_the_event_numbers_or_a_restart_calls_for_a_sync() -> None:
    model, ev = loaded(), Events(seq=40)
    model.apply(ev.worker(W2, "PREPARE", "x"))
    model.apply(ev.worker(W2, "IDLE", "prepared"))
    assert not model.needs_sync
    ev.seq += 3                                           # three events lost
    model.apply(ev.worker(W2, "PREPARE", "x"))
    assert model.needs_sync
    model.load([], [])
    assert not model.needs_sync
    model.apply(Events(seq=0).worker(W2, "IDLE", "registered"))     # numbered anew
    assert model.needs_sync


def test_the_queue_past_the_loaded_head_is_followed_as_a_count() -> None:
    model, ev = FarmModel(), Events()
    model.load([], [rpi(1), rpi(2)], waiting_total=10)
    assert model.request_counts()["WAITING"] == 10 and model.queue(NOW).beyond == 8
    model.apply(ev.request(77, "WAITING", "created"))      # new: not one of them
    model.apply(ev.request(50, "CANCELLED", "closed by owner"))     # one of them left
    model.apply(ev.request(51, "IN PROGRESS", "assigned", worker=W1))
    assert model.queue(NOW).beyond == 6
    assert model.request_counts() == {"WAITING": 9, "IN PROGRESS": 1}
    model.apply(ev.request(52, "WAITING", "updated"))      # known now, no longer beyond
    assert model.queue(NOW).beyond == 5
    assert model.request_counts()["WAITING"] == 9


def test_a_look_up_corrects_an_event_that_crossed_the_list() -> None:
    model, ev = loaded(), Events()
    model.apply(ev.request(3, "WAITING", "created"))       # older than the list
    assert model.request_counts()["IN PROGRESS"] == 0
    model.learn_request(3, rpi(3, state=ReqState.INPROGRESS, worker=W1))
    assert model.request_counts() == {"WAITING": 2, "IN PROGRESS": 1}
    model.apply(ev.request(1, "WAITING", "updated"))
    model.learn_request(1, None)                            # gone meanwhile
    assert model.request_counts()["WAITING"] == 1


def test_the_snapshot_is_json() -> None:
    doc = json.loads(json.dumps(loaded().snapshot(NOW, device_type="rpi4")))
    assert doc["workers"]["RUNNING"] == 1 and doc["requests"]["WAITING"] == 1
    assert [q["id"] for q in doc["queue"]["items"]] == [2]
    assert doc["device_type"] == "rpi4" and doc["device_types"] == ["odroid", "rpi4"]


# ---------------------------------------------------------------------- keys
def test_keys_map_to_actions() -> None:
    assert KEYS["q"] is Action.QUIT and KEYS["s"] is Action.SORT
    assert KEYS["d"] is Action.DEVICE_TYPE and KEYS["p"] is Action.PAUSE
    start = Controls()
    assert press(start, "q", []).quit
    assert press(press(start, "p", []), "p", []) == start
    assert press(start, "p", []).paused
    assert press(start, "x", ["rpi4"]) == start and press(start, "\x1b", []) == start


def test_s_cycles_the_sort_and_d_the_device_types() -> None:
    controls = Controls()
    sorts = []
    for _ in range(4):
        sorts.append(controls.sort)
        controls = press(controls, "s", [])
    assert sorts == ["priority", "age", "device type", "priority"]
    types = ["odroid", "rpi4"]
    seen = []
    for _ in range(4):
        seen.append(controls.device_type)
        controls = press(controls, "d", types)
    assert seen == [None, "odroid", "rpi4", None]
    # a filter on a type no longer seen moves on to the next one after it
    assert press(Controls(device_type="pi"), "d", types).device_type == "rpi4"
    assert press(Controls(device_type="zz"), "d", types).device_type is None
    assert press(Controls(), "d", []).device_type is None


def test_no_terminal_no_keys() -> None:
    read, write = os.pipe()
    try:
        os.write(write, b"q")
        with os.fdopen(read, closefd=False) as stream, Keyboard(stream) as keyboard:
            assert not keyboard.active
            assert keyboard.read() == ""
    finally:
        os.close(read)
        os.close(write)


# ---------------------------------------------------------------------- the view
def shown(model: FarmModel, controls: Controls = Controls(), height: int | None = None,
          keys: bool = False, now: float = NOW + 60) -> str:
    console = Console(record=True, width=140, color_system=None)
    console.print(render(model, controls, Frame("tcp://farm:7175", now, height, keys=keys)))
    return console.export_text()


def shown_counts(text: str) -> dict[str, int]:
    states = "IDLE|RUNNING|PREPARE|MAINTENANCE|FAILED|BUSY|WAITING|IN PROGRESS"
    return {state: int(n) for state, n in re.findall(rf"({states}) (\d+)", text)[:8]}


def test_the_view_shows_counts_queue_waits_and_keys() -> None:
    text = shown(loaded(), keys=True)
    assert shown_counts(text) == {"IDLE": 1, "RUNNING": 1, "PREPARE": 0, "MAINTENANCE": 1,
                                  "FAILED": 0, "BUSY": 0, "WAITING": 2, "IN PROGRESS": 1}
    queue = [line.split() for line in text.splitlines() if re.match(r"\s*[12]\s+8\s", line)]
    assert [row[:3] for row in queue] == [["1", "8", "odroid"], ["2", "8", "rpi4"]]
    assert queue[0][-1] == "1m"                         # waited since valid-after
    assert "q quit" in text and "sort: priority" in text and "PAUSED" not in text


def test_the_view_follows_the_controls_and_the_screen() -> None:
    model = loaded()
    text = shown(model, Controls(device_type="odroid", paused=True), keys=True)
    assert "PAUSED" in text and "device type: odroid" in text
    assert shown_counts(text)["IDLE"] == 0 and shown_counts(text)["MAINTENANCE"] == 1
    assert "rpi4" not in text
    ev = Events()
    for n in range(30):
        model.apply(ev.worker(W2, "PREPARE" if n % 2 else "IDLE", f"step {n}"))
    text = shown(model, height=30)
    assert len(text.splitlines()) <= 30 and "step 29" in text
    assert not re.search(r"step 0\b", text)
    model.load([], [rpi(n, device_type=f"type{n:02}") for n in range(1, 21)])
    text = shown(model, height=30)
    assert len(text.splitlines()) <= 30 and "type01" in text and "type20" not in text


# ---------------------------------------------------------------------- the command (fake)
def _listing(items: list[Any]) -> Any:
    def list_requests(flt: Any = None, sorter: Any = None, paginator: Any = None) -> Any:
        found = [r for r in items if flt is None or flt.match(r)]
        return found, ListInfo(len(found), 0)
    return list_requests


def test_top_once_json(run, fake) -> None:  # noqa: F811
    fake.answers["list_requests"] = _listing([rpi(7), rpi(8, state=ReqState.INPROGRESS,
                                                      worker=W1)])
    r = run("top", "--once", "--json")
    assert r.code == 0, r
    doc = r.json()
    assert doc["workers"]["IDLE"] == 1 and doc["workers"]["FAILED"] == 1
    assert doc["requests"] == {"WAITING": 1, "IN PROGRESS": 1}
    assert [q["id"] for q in doc["queue"]["items"]] == [7]
    assert not fake.called("events")                   # one frame needs no stream


def test_top_usage_errors(run, fake) -> None:  # noqa: F811
    r = run("top", "--json")
    assert r.code == 2 and r.json()["error"]["message"].startswith("--json needs --once")
    r = run("top", "--interval", "0")
    assert r.code == 2 and "must be more than zero" in r.err
    r = run("top", "--once", "--device-type", " ")
    assert r.code == 2 and "device type cannot be empty" in r.err
    assert not fake.opened


def test_top_help_has_examples(run) -> None:  # noqa: F811
    r = run("top", "--help")
    assert r.code == 0 and "Example" in r.out and "boruta top --once" in r.out
    assert "top" in run("--help").out


def test_list_all_pages_until_nothing_remains() -> None:
    asked = []

    def fetch(paginator: Paginator) -> tuple[list[int], ListInfo]:
        asked.append(paginator.id)
        page = [n for n in range(1, 8) if n > paginator.id][:3]
        return page, ListInfo(7, 7 - (page[-1] if page else 0))
    assert list_all(fetch, lambda n: n, 0) == list(range(1, 8))
    assert asked == [0, 3, 6]


# ---------------------------------------------------------------------- a live farm
@pytest.fixture(scope="module")
def farm_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with four simulated boards (two rpi4, two odroid), three of them IDLE, and
    requests: two rpi4 jobs running, two rpi4 and one odroid (unsatisfiable) waiting."""
    server = ServerProcess(tmp_path_factory.mktemp("top") / "server.log").start()
    try:
        farm = server.farm(4, caps=lambda i: {"device_type": "rpi4" if i < 2 else "odroid"})
        client = server.client()
        for board in farm.dryads[:3]:
            client.set_state(board.uuid, "IDLE")
        wait_until(lambda: server_counts(client)[0]["IDLE"] == 3, 10, what="three boards IDLE")
        for priority in (4, 2, 8, 3):
            client.new_request({"device_type": "rpi4"}, priority, lease=None)
        client.new_request({"device_type": "odroid", "usb": "yes"}, 5, lease=None,
                           queue_unsatisfiable=True)
        wait_until(lambda: server_counts(client)[1]["IN PROGRESS"] == 2, 10,
                   what="two jobs started")
        yield server
    finally:
        server.close()


def server_counts(client: Any) -> tuple[dict[str, int], dict[str, int]]:
    """Workers and open requests by state, as the server lists them."""
    workers = {str(s): 0 for s in WorkerState}
    for w in client.list_workers(None, None, None)[0]:
        workers[str(w.state)] += 1
    requests = {"WAITING": 0, "IN PROGRESS": 0}
    for r in client.list_requests(None, None, None)[0]:
        if str(r.state) in requests:
            requests[str(r.state)] += 1
    return workers, requests


def flat(counts: tuple[dict[str, int], dict[str, int]]) -> dict[str, int]:
    return {**counts[0], **counts[1]}


@pytest.mark.slow
def test_top_shows_what_the_server_says_and_follows_it(farm_server: Any) -> None:
    client = farm_server.client()
    shell = TopShell(client, FarmModel())
    shell.sync()
    assert shown_counts(shown(shell.model, now=time.time())) == flat(server_counts(client))

    shell.open_stream()
    shell.step(0.1, frame_due=True)
    running = [r.id for r in client.list_requests(None, None, None)[0]
               if r.state is ReqState.INPROGRESS]
    for req_id in running:
        client.close_request(req_id)                  # the two rpi4 waiting get the boards
    new = client.new_request({"device_type": "odroid"}, 1, lease=None)
    wait_until(lambda: flat(server_counts(client))["IN PROGRESS"] == 3, 10,
               what="the boards taken again")

    def caught_up() -> bool:
        shell.step(0.2, frame_due=True)
        return (shell.model.lookups(1) == ([], [])      # nothing left to look up
                and shown_counts(shown(shell.model, now=time.time()))
                == flat(server_counts(client)))
    wait_until(caught_up, 10, what="top in step with the server")
    text = shown(shell.model, now=time.time())
    waits = {r.device_type: r for r in shell.model.wait_rows(time.time())}
    assert waits["rpi4"].started == 2 and waits["odroid"].started == 1
    assert f"request {new}" in text
    seen = {(t.subject, t.state, t.reason) for t in shell.model.recent_transitions(limit=100)}
    assert {(str(i), "DONE", "closed by owner") for i in running} <= seen
    assert (str(new), "IN PROGRESS", "assigned") in seen
    assert shell.synced_at > -1 and shell.status is None


@pytest.mark.slow
def test_a_lost_server_is_shown_and_a_restarted_one_listed_anew(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "first.log").start()
    second = None
    try:
        first.farm(2, caps={"device_type": "rpi4"})
        client = first.client(timeout=0.5, retries=1)
        skipped = [0.0]                                  # the retry's wait, skipped
        shell = TopShell(client, FarmModel(), clock=lambda: time.monotonic() + skipped[0])
        shell.step(0.1, frame_due=True)
        assert shell.model.worker_counts()["MAINTENANCE"] == 2 and shell.status is None

        first.stop(signal.SIGKILL)
        wait_until(lambda: shell.step(0.2, frame_due=True) or shell.status, 15,
                   what="the lost server noticed (the stream's silence, then a ping)")
        assert "trying again" in shell.status and shell.stream is None

        # The same endpoints and keys, a fresh farm: what top knew is stale.
        second = ServerProcess(tmp_path / "second.log", listen=first.listen,
                               dryad_listen=first.dryad, events=first.events,
                               identity_dir=first.settings["identity_dir"]).start()
        second.farm(1, caps={"device_type": "odroid"})
        skipped[0] += RETRY_EVERY

        def listed_anew() -> bool:
            shell.step(0.1, frame_due=True)
            return shell.status is None and shell.model.device_types() == ["odroid"]
        wait_until(listed_anew, 15, what="the restarted server listed")
        assert sum(shell.model.worker_counts().values()) == 1
    finally:
        first.close()
        if second is not None:
            second.close()


@pytest.mark.slow
def test_boruta_top_once_prints_the_farm(farm_server: Any) -> None:
    client = farm_server.client()
    env = farm_server.cli_env()
    r = subprocess.run([sys.executable, "-m", "boruta.cli", "top", "--once", "--json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    workers, requests = server_counts(client)
    assert doc["workers"] == {k: workers[k] for k in doc["workers"]}
    assert doc["requests"] == requests
    assert doc["device_types"] == ["odroid", "rpi4"]
    r = subprocess.run([sys.executable, "-m", "boruta.cli", "top", "--once",
                        "--device-type", "odroid"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r
    assert "usb=yes" in r.stdout and "rpi4" not in r.stdout
    assert shown_counts(r.stdout)["MAINTENANCE"] == 1


def _read_until(fd: int, needle: bytes, deadline: float) -> bytes:
    seen = b""
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {needle!r} on the terminal; it showed {seen[-400:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:                      # the child closed the terminal
                break
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["q", "SIGTERM"])
def test_on_a_terminal_keys_work_and_the_terminal_is_restored(farm_server: Any,
                                                              stop: str) -> None:
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([sys.executable, "-m", "boruta.cli", "top", "--interval", "0.2"],
                            stdin=slave, stdout=slave, stderr=slave, env=farm_server.cli_env(
                                TERM="xterm", COLUMNS="140", LINES="40"), start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        _read_until(master, b" quit ", deadline)
        wait_until(lambda: termios.tcgetattr(slave)[3] & termios.ICANON == 0, 5,
                   what="cbreak mode")
        os.write(master, b"s")
        _read_until(master, b"sort: age", deadline)
        os.write(master, b"p")
        _read_until(master, b"PAUSED", deadline)
        if stop == "q":
            os.write(master, b"q")
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
        os.close(slave)


@pytest.mark.slow
def test_without_a_terminal_frames_follow_each_other_until_sigterm(farm_server: Any) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "boruta.cli", "top", "--interval", "0.2"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=farm_server.cli_env(), text=True)
    try:
        assert proc.stdout is not None
        frames = 0
        deadline = time.monotonic() + 30
        while frames < 2:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "top stopped printing frames"
            frames += line.startswith("boruta top ")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "q quit" not in out      # no keys without a tty
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
