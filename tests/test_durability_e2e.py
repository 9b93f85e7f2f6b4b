"""Durable state end to end: a real server process with a state directory, killed with
SIGKILL and started again.

- Under load from several client processes, SIGKILL at random moments, eight times:
  whatever the server acknowledged is there after each restart, with its ID and fields;
  no ID is reused, no request appears twice, the books agree (the file too).
- A job in progress survives a restart: same request, same key, and its tunnel reopens
  (on the same port if free, else a new one, announced by an event) once the dryad is
  back; a TCP connection through it reaches the dryad's ssh address (an echo server).
- Timers that passed while the server was down fire at once; a dryad that stays away
  fails its job after the grace period; old history is purged in the background and IDs
  are never reused; a long history loads in the background while the server answers;
  a server without a store keeps no record of its changes.
- A damaged, truncated, newer or busy state directory: a clear refusal, no traceback.
- A failing disk: `storage_failed`, nothing acknowledged, and the server recovers.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from boruta.core.errors import BorutaError, NotFoundError
from boruta.core.records import Changes
from boruta.core.types import ReqState, WorkerState
from boruta.server.store import DB_NAME, Store
from boruta.transport.client import Client
from boruta.transport.credentials import Credentials
from boruta.server.config import load_server_config
from boruta.sim.dryads import SimFarm
from boruta.server.config import ServerConfig
from boruta.testing.processes import credentials_from
from e2e_helpers import FAST, ROOT, ServerProcess, child_env, unique_caps, wait_until

pytestmark = pytest.mark.slow

RS, WS = ReqState, WorkerState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Durable:
    """A server with a state directory and fixed endpoints, to be killed and restarted."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.state_dir = tmp / "state"
        self.endpoints = {name: f"tcp://127.0.0.1:{free_port()}"
                          for name in ("listen", "dryad_listen", "events")}
        self.settings = {"state_dir": str(self.state_dir), "restart_grace": 10.0,
                         **self.endpoints, **settings}
        self.server: ServerProcess | None = None
        self.starts = 0
        self.farm = SimFarm(self.endpoints["dryad_listen"], credentials_for=self.enrol)

    def start(self) -> ServerProcess:
        self.starts += 1
        self.server = ServerProcess(self.tmp / f"server{self.starts}.log", **self.settings)
        return self.server.start()

    def kill(self) -> None:
        assert self.server is not None
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(10)
        self.server.close()

    def restart(self) -> ServerProcess:
        self.kill()
        return self.start()

    def client(self, **kw: Any) -> Client:
        assert self.server is not None
        return self.server.client(**kw)

    def enrol(self, uuid: str) -> Credentials | None:
        """A farm dryad's key, enrolled by the running server's admin (the enrolment and
        the server's keys are in the state directory: they outlive restarts)."""
        assert self.server is not None
        return self.server.enrol(uuid)

    def close(self) -> None:
        self.farm.close()
        if self.server is not None:
            self.server.close()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Callable[..., Durable]]:
    made: list[Durable] = []

    def make(**settings: Any) -> Durable:
        d = Durable(tmp_path / f"d{len(made)}", **settings)
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()


def all_requests(client: Client) -> list[Any]:
    items, info = client.list_requests()
    assert info.remaining_items == 0
    return items


def books_problems(jobs_of: dict[int, str | None], states: dict[str, str]) -> list[str]:
    """What is wrong with the books: no worker RUNNING without its job, no job without
    its request and its worker. `jobs_of` maps each request IN PROGRESS to its job's
    worker (None: no job); `states` maps each worker to its state's name."""
    problems = [f"request {req_id} IN PROGRESS without a job"
                for req_id, uuid in jobs_of.items() if uuid is None]
    jobs: dict[str, list[int]] = {}
    for req_id, uuid in jobs_of.items():
        if uuid is not None:
            jobs.setdefault(uuid, []).append(req_id)
    for uuid, ids in jobs.items():
        if len(ids) != 1:
            problems.append(f"worker {uuid} has jobs {ids}")
        if states.get(uuid) != "RUNNING":
            problems.append(f"job of request {ids[0]} on {uuid} ({states.get(uuid)})")
    problems += [f"worker {uuid} RUNNING without a job"
                 for uuid, state in states.items() if state == "RUNNING" and uuid not in jobs]
    return problems


def stored_books_problems(snap: Any) -> list[str]:
    """The books as one read of the file has them."""
    return books_problems({r["id"]: r["job_worker"] for r in snap.requests
                           if r["state"] == "IN PROGRESS"},
                          {w["uuid"]: w["state"] for w in snap.workers})


def live_books_problems(client: Client, tries: int = 20) -> list[str]:
    """The books as the server lists them. Requests and workers are two calls while
    clients keep the server busy, so a job may start or end between them: only a pair
    of listings with the same workers before and after is judged."""
    for _ in range(tries):
        before = client.list_workers()[0]
        requests = all_requests(client)
        after = client.list_workers()[0]
        if before == after:
            return books_problems(
                {r.id: (r.job.worker_uuid if r.job else None)
                 for r in requests if r.state is RS.INPROGRESS},
                {w.worker_uuid: w.state.value for w in after})
    return [f"no steady pair of listings in {tries} tries"]


def ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


# =========================================================================== SIGKILL under load

CLIENT = r"""
import json, os, random, sys, time
from boruta.core.errors import BorutaError
from boruta.transport.client import Client, ServerUnreachableError
from boruta.transport.credentials import load_client_config
endpoint, out_path, stop_path, seed, kinds = sys.argv[1:6]
kinds = json.loads(kinds)
rng = random.Random(seed)
client = Client(endpoint, timeout=1.0, retries=1,
                credentials=load_client_config().credentials)  # $BORUTA_CLIENT_CONFIG
out = open(out_path, "a", buffering=1)
mine = []
while not os.path.exists(stop_path):
    try:
        if mine and rng.random() < 0.25:
            req_id = mine.pop(rng.randrange(len(mine)))
            client.close_request(req_id)
            out.write(json.dumps({"op": "close", "id": req_id}) + "\n")
            continue
        caps = {"device_type": rng.choice(kinds)}
        if rng.random() < 0.3:
            caps["usb"] = "yes"
        priority = rng.randint(1, 16)
        now = time.time()
        valid_after = now + rng.uniform(60, 600) if rng.random() < 0.2 else None
        deadline = now + rng.uniform(3600, 7200) if rng.random() < 0.5 else None
        req_id = client.new_request(caps, priority, valid_after, deadline,
                                    queue_unsatisfiable=True)
        mine.append(req_id)
        out.write(json.dumps({"op": "new", "id": req_id, "caps": caps, "priority": priority,
                              "valid_after": valid_after, "deadline": deadline}) + "\n")
    except ServerUnreachableError:
        time.sleep(0.05)
    except BorutaError as exc:
        out.write(json.dumps({"op": "error", "code": exc.code, "message": str(exc)}) + "\n")
"""


def read_acks(paths: list[Path]) -> tuple[dict[int, dict], set[int], list[dict]]:
    created: dict[int, dict] = {}
    closed: set[int] = set()
    errors: list[dict] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if not line.endswith("}"):
                continue                     # a line being written right now
            doc = json.loads(line)
            if doc["op"] == "new":
                assert doc["id"] not in created, f"ID {doc['id']} acknowledged twice"
                created[doc["id"]] = doc
            elif doc["op"] == "close":
                closed.add(doc["id"])
            else:
                errors.append(doc)
    return created, closed, errors


def test_sigkill_under_load_loses_nothing_acknowledged(durable: Callable[..., Durable],
                                                       tmp_path: Path) -> None:
    rng = random.Random(20261127)
    d = durable(restart_grace=5.0)
    d.start()
    kinds = [f"dur-{rng.randrange(10**6)}", f"dur-{rng.randrange(10**6)}"]
    dryads = [d.farm.add(caps={"device_type": kinds[i % 2], "usb": "yes"}) for i in range(4)]
    d.farm.wait_registered(10)
    admin = d.client()
    for dryad in dryads:
        admin.set_state(dryad.uuid, "IDLE")
    stop = tmp_path / "stop"
    outs = [tmp_path / f"client{i}.jsonl" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, d.endpoints["listen"], str(out),
                               str(stop), str(i), json.dumps(kinds)], cwd=ROOT,
                              env=d.server.cli_env(),
                              stderr=subprocess.PIPE, text=True) for i, out in enumerate(outs)]
    started = time.monotonic()
    seen: dict[int, tuple] = {}                 # every request listed so far: its fields
    try:
        for kill in range(8):
            before = len(read_acks(outs)[0])
            wait_until(lambda: len(read_acks(outs)[0]) > before + 5, 15,
                       what="clients to get requests through")
            time.sleep(rng.uniform(0.0, 0.8))   # a random moment under load
            d.kill()
            created, closed, errors = read_acks(outs)
            assert not errors, errors[:3]
            # The file as the crash left it: every acknowledged change is in it.
            store = Store(d.state_dir, "OFF")
            snap = store.load()
            store.close()
            stored = {r["id"]: r for r in snap.requests}
            assert set(created) <= set(stored), sorted(set(created) - set(stored))[:5]
            for req_id in closed:
                assert stored[req_id]["state"] not in ("WAITING", "IN PROGRESS"), stored[req_id]
            assert snap.last_id >= max(stored)
            assert not stored_books_problems(snap), stored_books_problems(snap)
            # The restarted server says the same.
            d.start()
            client = d.client(timeout=10)
            requests = all_requests(client)
            ids = [r.id for r in requests]
            assert len(ids) == len(set(ids)), "a request appears twice"
            by_id = {r.id: r for r in requests}
            for req_id, ack in created.items():
                req = by_id.get(req_id)
                assert req is not None, f"acknowledged request {req_id} lost"
                assert (req.priority, req.caps) == (ack["priority"], ack["caps"]), req
                if ack["valid_after"] is not None:
                    assert abs(ts(req.valid_after) - ack["valid_after"]) < 1e-3
                if ack["deadline"] is not None:
                    assert abs(ts(req.deadline) - ack["deadline"]) < 1e-3
            for req_id in closed:
                assert by_id[req_id].state.terminal, by_id[req_id]
            for req in requests:               # an ID never changes what it names
                fields = (req.priority, tuple(sorted(req.caps.items())), ts(req.deadline))
                assert seen.setdefault(req.id, fields) == fields, f"ID {req.id} reused"
            assert set(seen) <= set(by_id), "a request disappeared"
            assert not (problems := live_books_problems(client)), problems
            client.close()
        created, closed, errors = read_acks(outs)
        assert not errors, errors[:3]
        print(f"acknowledged: {len(created)} created, {len(closed)} closed")
        assert len(created) > 8 * 5 and closed
    finally:
        stop.write_text("stop")
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    for proc in procs:
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert time.monotonic() - started < 90


# =========================================================================== jobs across restarts

def echo_through(addr: tuple[str, int], payload: bytes = b"ping through the tunnel") -> bytes:
    with socket.create_connection(tuple(addr), timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data


def running_job(d: Durable) -> tuple[Any, int, Any, Client]:
    host, port = d.farm.echo_server()
    caps = unique_caps()
    dryad = d.farm.add(caps=caps, ssh_address=f"{host}:{port}")
    d.farm.wait_registered(10, [dryad])
    client = d.client()
    client.set_state(dryad.uuid, "IDLE")
    wait_until(lambda: client.get_worker_info(dryad.uuid).state is WS.IDLE, 10,
               what="worker IDLE")
    req_id = client.new_request(caps, 3)
    access = client.acquire_worker(req_id, timeout=10)
    assert echo_through(access.addr) == b"ping through the tunnel"
    return dryad, req_id, access, client


def test_job_survives_restart_and_its_tunnel_reopens_on_the_same_port(
        durable: Callable[..., Durable]) -> None:
    d = durable()
    d.start()
    dryad, req_id, access, _ = running_job(d)
    d.restart()
    client = d.client()
    info = client.get_request_info(req_id)
    assert info.state is RS.INPROGRESS and info.job.worker_uuid == dryad.uuid
    # The dryad notices the new server and registers again; acquire waits for the tunnel.
    again = client.acquire_worker(req_id, timeout=20)
    assert (again.key, again.username, tuple(again.addr)) == (access.key, access.username,
                                                              tuple(access.addr))
    assert echo_through(again.addr) == b"ping through the tunnel"
    assert client.get_worker_info(dryad.uuid).state is WS.RUN
    client.close_request(req_id)
    wait_until(lambda: client.get_worker_info(dryad.uuid).state is WS.IDLE, 10,
               what="worker prepared again")
    with pytest.raises(OSError):
        echo_through(access.addr)


def test_real_ssh_session_reopens_through_the_same_tunnel_after_a_restart(
        durable: Callable[..., Durable], tmp_path: Path) -> None:
    """The real dryad agent (embedded SSH server): log in, SIGKILL the server, start it
    again, log in again with the same key at the same address."""
    from test_dryad_e2e import DryadProcess, init_config, private_key, ssh_connect, ssh_run
    d = durable(heartbeat_interval=0.2, heartbeat_liveness=5, dryad_reply_timeout=5.0)
    server = d.start()
    caps = unique_caps()
    agent = DryadProcess(init_config(tmp_path / "dryad.toml", server, caps),
                         tmp_path / "dryad.log").start()
    try:
        client = d.client()
        client.set_state(agent.uuid, "IDLE")
        wait_until(lambda: client.get_worker_info(agent.uuid).state is WS.IDLE, 15,
                   what="worker IDLE")
        req_id = client.new_request(caps, 4)
        access = client.acquire_worker(req_id, timeout=15)
        ssh = ssh_connect(*access.addr, access.username, private_key(access))
        try:
            assert ssh_run(ssh, "echo before")[:2] == (0, "before\n")
        finally:
            ssh.close()
        d.restart()
        client = d.client()
        again = client.acquire_worker(req_id, timeout=20)       # once the dryad is back
        assert (tuple(again.addr), again.key) == (tuple(access.addr), access.key)
        ssh = ssh_connect(*again.addr, again.username, private_key(again))
        try:
            assert ssh_run(ssh, "echo after")[:2] == (0, "after\n")
        finally:
            ssh.close()
    finally:
        agent.close()


def test_tunnel_moves_when_its_port_is_taken_and_an_event_says_where(
        durable: Callable[..., Durable]) -> None:
    d = durable()
    d.start()
    dryad, req_id, access, _ = running_job(d)
    d.farm.remove(dryad)                       # its dryad comes back only when told
    d.kill()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", access.addr[1]))
    squatter.listen(1)
    try:
        d.start()
        client = d.client()
        with client.events(request_id=req_id) as events:
            d.farm.add(dryad.uuid, caps=dryad.caps, ssh_address=dryad.link.ssh_address)
            deadline = time.monotonic() + 20
            while True:
                event = events.next(timeout=max(0.1, deadline - time.monotonic()))
                if event.get("kind") == "tunnel":
                    break
        assert event["moved"] is True and event["old_port"] == access.addr[1]
        assert event["port"] != access.addr[1]
        assert event["address"] == f"127.0.0.1:{event['port']}"
        again = client.acquire_worker(req_id, timeout=10)
        assert tuple(again.addr) == ("127.0.0.1", event["port"]) and again.key == access.key
        assert echo_through(again.addr) == b"ping through the tunnel"
    finally:
        squatter.close()


def test_timers_that_passed_while_down_fire_at_once(durable: Callable[..., Durable]) -> None:
    d = durable(job_timeout=5.0)
    d.start()
    later = unique_caps()
    other = d.farm.add(caps=later)
    d.farm.wait_registered(10, [other])
    dryad, running, _, client = running_job(d)
    client.set_state(other.uuid, "IDLE")
    wait_until(lambda: client.get_worker_info(other.uuid).state is WS.IDLE, 10, what="IDLE")
    now = time.time()
    doomed = client.new_request(unique_caps(), 5, deadline=now + 1.0, queue_unsatisfiable=True)
    ready_later = client.new_request(later, 5, valid_after=now + 1.0)
    job_ends = ts(client.get_request_info(running).job.timeout)
    assert client.get_request_info(ready_later).state is RS.WAIT
    assert client.get_request_info(running).state is RS.INPROGRESS
    d.kill()
    wait_until(lambda: time.time() > job_ends + 0.2, 10, what="the timers to pass")
    d.start()
    client = d.client()
    assert client.get_request_info(running).state is RS.DONE           # job timeout
    assert client.get_request_info(doomed).state is RS.TIMEOUT         # deadline
    # ValidAfter passed: assigned as soon as its worker's dryad is back.
    wait_until(lambda: client.get_request_info(ready_later).state is RS.INPROGRESS, 15,
               what="the ready request to be assigned")
    # The timed-out job's worker is prepared afresh once its dryad is back (not FAILED).
    wait_until(lambda: client.get_worker_info(dryad.uuid).state is WS.IDLE, 15,
               what="the worker prepared again")


def test_a_dryad_that_stays_away_fails_its_job(durable: Callable[..., Durable]) -> None:
    d = durable(restart_grace=3.0)
    d.start()
    dryad, req_id, _, _ = running_job(d)
    d.farm.remove(dryad)
    d.restart()
    client = d.client()
    assert client.get_worker_info(dryad.uuid).state is WS.RUN           # waits for its dryad
    wait_until(lambda: client.get_request_info(req_id).state is RS.FAILED, 10,
               what="the job to fail")
    info = client.get_worker_info(dryad.uuid)
    assert info.state is WS.FAIL
    assert info.fail_reason == "dryad did not come back after restart"


# =========================================================================== history

def test_history_is_purged_in_the_background_and_ids_never_reused(
        durable: Callable[..., Durable]) -> None:
    d = durable(retention=1.0, purge_interval=0.2)
    d.start()
    client = d.client()
    caps = unique_caps()
    first = client.new_request(caps, 5, queue_unsatisfiable=True)
    kept = client.new_request(caps, 5, queue_unsatisfiable=True)
    client.close_request(first)

    def purged() -> bool:
        try:
            client.get_request_info(first)
        except NotFoundError:
            return True
        return False
    wait_until(purged, 10, what="the purge")
    d.restart()
    client = d.client()
    assert purged()
    assert client.get_request_info(kept).state is RS.WAIT
    assert client.new_request(caps, 5, queue_unsatisfiable=True) == kept + 1


def test_a_server_in_memory_keeps_no_record_of_changes(tmp_path: Path) -> None:
    # Nobody drains the changes without a store: housekeeping drops them, or the IDs
    # of every purged request would pile up for the life of the process.
    proc = InProcess(load_server_config(None, {**FAST, "retention": 0.5, "purge_interval": 0.2,
                                               "identity_dir": str(tmp_path / "identity")}))
    try:
        client = Client(proc.endpoints["listen"], timeout=5, retries=1,
                        credentials=proc.credentials)
        caps = unique_caps()
        ids = [client.new_request(caps, 5, queue_unsatisfiable=True) for _ in range(20)]
        for req_id in ids:
            client.close_request(req_id)

        def purged() -> bool:
            try:
                client.get_request_info(ids[-1])
            except NotFoundError:
                return True
            return False
        wait_until(purged, 10, what="the purge")
        wait_until(lambda: proc.call(proc.server.sched.changes_pending) == 0, 10,
                   what="housekeeping to drop the changes")
        client.close()
    finally:
        proc.close()


def test_a_long_history_loads_in_the_background(durable: Callable[..., Durable]) -> None:
    d = durable()
    store = Store(d.state_dir, "OFF")
    now = time.time()
    n = 30_000
    records = [{"id": i, "priority": 1 + i % 16, "groups": [], "caps": {"n": str(i % 97)},
                "valid_after": now - 7200, "deadline": now + 86400,
                "state": "DONE" if i <= n - 10 else "WAITING", "job_worker": None,
                "job_timeout": None, "seq": i, "prolongs": 0,
                "ended_at": now - 3600 if i <= n - 10 else None} for i in range(1, n + 1)]
    store.commit(Changes(requests=records, last_id=n + 5, last_seq=n))
    store.close()
    d.start()
    client = d.client(timeout=10)
    assert client.get_request_info(1).state is RS.DONE       # from the store, on demand
    assert client.new_request({"n": "x"}, 5, queue_unsatisfiable=True) == n + 6
    items, info = client.list_requests()                     # waits for the whole history
    assert info.total_items == n + 1                         # (a page: max_reply_bytes)
    assert len(items) + info.remaining_items == n + 1 and items[0].id == 1
    wait_until(lambda: "history loaded" in d.server.log(), 10, what="the history log line")


# =========================================================================== refusals

def start_refused(state_dir: Path, tmp: Path) -> str:
    """Start a server on `state_dir`: it must exit at once with a clear message."""
    cmd = [sys.executable, "-m", "boruta.cli", "server", "--state-dir", ":memory:"]
    for key, value in {**FAST, "state_dir": str(state_dir)}.items():
        cmd += ["--set", f"{key}={value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child_env(), timeout=30)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "boruta server ready" not in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "cannot start" in proc.stderr
    return proc.stderr


def test_damaged_newer_or_busy_state_is_refused_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_NAME).write_bytes(os.urandom(64 * 1024))
    assert "not an SQLite database" in start_refused(garbage, tmp_path)

    def filled(name: str) -> Path:
        path = tmp_path / name
        store = Store(path, "OFF")
        store.commit(Changes(requests=[
            {"id": i, "priority": 4, "groups": [], "caps": {"k": str(i)}, "valid_after": 1.0,
             "deadline": 2.0, "state": "WAITING", "job_worker": None, "job_timeout": None,
             "seq": i, "prolongs": 0, "ended_at": None} for i in range(1, 3001)],
            last_id=3000, last_seq=3000))
        store.close()
        return path

    truncated = filled("truncated")
    data = (truncated / DB_NAME).read_bytes()
    (truncated / DB_NAME).write_bytes(data[: len(data) // 3])
    assert "truncated" in start_refused(truncated, tmp_path)

    corrupted = filled("corrupted")
    data = bytearray((corrupted / DB_NAME).read_bytes())
    for offset in range(8192, len(data), 4096):
        data[offset: offset + 4096] = os.urandom(4096)
    (corrupted / DB_NAME).write_bytes(bytes(data))
    message = start_refused(corrupted, tmp_path)
    assert "unreadable" in message or "corrupted" in message

    newer = filled("newer")
    db = sqlite3.connect(newer / DB_NAME)
    db.execute("UPDATE meta SET value='42' WHERE key='schema_version'")
    db.commit()
    db.close()
    message = start_refused(newer, tmp_path)
    assert "newer Boruta (schema version 42" in message

    busy = filled("busy")
    holder = Store(busy, lock=True)
    try:
        assert "in use by another Boruta server" in start_refused(busy, tmp_path)
    finally:
        holder.close()


def test_boruta_server_keeps_its_state_in_the_default_place(tmp_path: Path) -> None:
    """`boruta server` without --state-dir: $XDG_STATE_HOME/boruta (documented)."""
    cmd = [sys.executable, "-m", "boruta.cli", "server", "--listen", "tcp://127.0.0.1:*",
           "--dryad-listen", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**child_env(), "XDG_STATE_HOME": str(tmp_path / "xdg")})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("boruta server ready"), line
        assert (tmp_path / "xdg" / "boruta" / DB_NAME).exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0


# =========================================================================== a failing disk

class InProcess:
    """A Server on a background thread's loop, so that a test can reach into its store."""

    def __init__(self, config: ServerConfig) -> None:
        from boruta.server.app import Server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(config)
        self.endpoints = self.run(self.server.start())
        keyring = self.server.keyring                 # the bootstrap admin's credentials
        self.credentials = credentials_from(keyring.admin_config if keyring else None)

    def run(self, coro: Any, timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return fn()
        return self.run(wrapper())

    def close(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_failing_disk_acknowledges_nothing_and_the_server_recovers(tmp_path: Path) -> None:
    proc = InProcess(load_server_config(None, {**FAST, "state_dir": str(tmp_path / "state")}))
    try:
        client = Client(proc.endpoints["listen"], timeout=5, retries=1,
                        credentials=proc.credentials)
        caps = unique_caps()
        first = client.new_request(caps, 5, queue_unsatisfiable=True)
        db = proc.server.store._conn()
        pages = proc.call(lambda: db.execute("PRAGMA page_count").fetchone()[0])
        proc.call(lambda: db.execute(f"PRAGMA max_page_count={pages}"))   # the disk is full
        big = {f"k{i}": "v" * 200 for i in range(40)}
        with pytest.raises(BorutaError) as exc:
            client.new_request(big, 5, queue_unsatisfiable=True)
        assert exc.value.code == "storage_failed"
        assert "not acknowledged" in str(exc.value)
        assert proc.server.stats.storage_failures >= 1
        # While changes wait to be saved, no answer claims anything: reads fail alike.
        with pytest.raises(BorutaError) as exc:
            client.get_request_info(first)
        assert exc.value.code == "storage_failed"
        proc.call(lambda: db.execute("PRAGMA max_page_count=1073741823"))  # space again
        wait_until(lambda: proc.server.outbox.unsaved is None, 10, what="the retried commit")
        third = client.new_request(caps, 5, queue_unsatisfiable=True)
        assert third == first + 2
        client.close()
    finally:
        proc.close()
    # Everything the server knew is durable now, the unacknowledged request included.
    store = Store(tmp_path / "state", readonly=True)
    ids = [r["id"] for r in store.load().requests]
    store.close()
    assert ids == [first, first + 1, first + 2]
