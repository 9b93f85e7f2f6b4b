"""Secrets never leak: no private key handed out appears in any log, event or error message,
and no CURVE secret key either (the server's, its admin's, the users' and the dryads').

A real durable server (log level debug), simulated dryads running real SSH
servers, several clients doing full job cycles, a dryad that fails mid-job
and one whose prepare fails, an event subscriber keeping every event. Then
every text anyone could read is searched for each private key handed out:
the server's log, the events, every error a client got, and everything
logged in this process (the simulated dryads, the clients, paramiko).
"""
from __future__ import annotations

import io
import json
import logging
import re
import stat
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from boruta.core.errors import BorutaError
from boruta.core.types import WorkerState
from boruta.transport.client import Client
from boruta.transport.credentials import read_key_file
from boruta.transport.errors import WaitTimeoutError
from e2e_helpers import ServerProcess, server_factory, ssh_exec, unique_caps, wait_until  # noqa: F401

WINDOW = 64          # a leak of WINDOW + STEP - 1 base64 characters or more is always found
STEP = 8
_BODY = re.compile(r"-----BEGIN [A-Z ]+-----(.*?)-----END [A-Z ]+-----", re.S)


def key_windows(key_text: str) -> list[str]:
    """The whole key, and every WINDOW-character run (at STEP) of its base64 body."""
    match = _BODY.search(key_text)
    assert match, "not a PEM key"
    body = "".join(match.group(1).split())
    assert len(body) > WINDOW
    return [key_text.strip(), *(body[i:i + WINDOW] for i in range(0, len(body) - WINDOW + 1,
                                                                   STEP))]


def leaks(text: str, keys: list[str]) -> list[str]:
    """What of `keys` shows in `text` (line breaks, raw or JSON-escaped, ignored)."""
    flat = text.replace("\\n", "").replace("\n", "").replace("\\r", "").replace("\r", "")
    found = ["PRIVATE KEY"] if "PRIVATE KEY" in text else []
    for key in keys:
        windows = key_windows(key)
        if windows[0] in text or any(w in flat for w in windows[1:]):
            found.append(f"key {windows[1][:12]}...")
    return found


def test_leak_finder_finds_what_it_should() -> None:
    """The search below is only worth something if it finds a key when one is there."""
    from boruta.server.keys import generate_key
    key = generate_key("ed25519").private_text
    body = "".join(_BODY.search(key).group(1).split())       # type: ignore[union-attr]
    assert leaks("nothing here", [key]) == []
    assert leaks(json.dumps({"msg": key}), [key])               # escaped line breaks
    assert leaks("x" + body[5:5 + WINDOW + STEP - 1] + "y", [key])   # a bare run of the body
    assert leaks("-----BEGIN OPENSSH PRIVATE KEY-----", []) == ["PRIVATE KEY"]


class EventRecorder(threading.Thread):
    """Subscribes to every event of the server and keeps them, until stopped."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(name="event-recorder", daemon=True)
        self.client = Client(server.listen, timeout=5, events_endpoint=server.events,
                             credentials=server.credentials)
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.done = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            stream = self.client.events()
            self.ready.set()
            while not self.done.is_set():
                try:
                    self.events.append(stream.next(timeout=0.2))
                except WaitTimeoutError:
                    pass
        except BaseException as exc:         # reported by stop()
            self.failure = exc
            self.ready.set()
        finally:
            self.client.close()

    def stop(self) -> list[dict[str, Any]]:
        self.done.set()
        self.join(10)
        assert self.failure is None, self.failure
        return self.events


@pytest.fixture
def process_log() -> Iterator[io.StringIO]:
    """Everything logged in this process (simulated dryads, clients, paramiko) at debug."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("boruta")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield text
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.mark.slow
@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_no_private_key_in_logs_events_or_errors(server_factory, process_log: io.StringIO,  # noqa: F811
                                                 tmp_path: Path, key_type: str) -> None:
    state = tmp_path / "state"
    server = server_factory(state_dir=str(state), log_level="debug", key_type=key_type)
    recorder = EventRecorder(server)
    recorder.start()
    assert recorder.ready.wait(10)
    caps = unique_caps()
    farm = server.farm(3, caps=caps, ssh=True)
    admin = server.client(timeout=20)
    users = [server.user(f"user{n}", timeout=30) for n in range(3)]
    for dryad in farm.dryads:
        admin.set_state(dryad.uuid, "IDLE")
    wait_until(lambda: all(admin.get_worker_info(d.uuid).state is WorkerState.IDLE
                           for d in farm.dryads), 30, what="workers IDLE")

    keys: list[str] = []
    errors: list[str] = []

    def refused(fn: Any, *args: Any) -> None:
        with pytest.raises(BorutaError) as info:
            fn(*args)
        errors.append(f"{info.value.code}: {info.value}")

    # Full job cycles, the three users at once: request, acquire (the key), log in, close.
    for cycle in range(2):
        ids = [user.new_request(caps, priority=4) for user in users]
        accesses = [user.acquire_worker(req_id, timeout=30) for user, req_id in zip(users, ids)]
        for n, access in enumerate(accesses):
            keys.append(access.key)
            if n == cycle:
                key_file = tmp_path / f"job-{cycle}.key"
                key_file.write_text(access.key)
                key_file.chmod(0o600)
                host, port = access.addr
                assert ssh_exec(host, port, access.username, key_file, "echo in") == "in\n"
        for user, req_id in zip(users, ids):
            user.close_request(req_id)
        refused(users[0].close_request, ids[0])          # already DONE
        refused(users[1].acquire_worker, ids[1], 1)      # its job has ended
    assert len(set(keys)) == len(keys) == 6             # a fresh key per job

    # A dryad fails mid-job; another's prepare fails (both reasons reach logs and events).
    wait_until(lambda: all(admin.get_worker_info(d.uuid).state is WorkerState.IDLE
                           for d in farm.dryads), 30, what="workers prepared again")
    req_id = users[0].new_request(caps, priority=4)
    access = users[0].acquire_worker(req_id, timeout=30)
    keys.append(access.key)
    failing = next(d for d in farm.dryads if d.uuid == access.worker_uuid)
    farm.run(failing.set_fail("board on fire"))
    wait_until(lambda: admin.get_worker_info(failing.uuid).state is WorkerState.FAIL, 10,
               what="worker FAILED")
    refused(users[0].acquire_worker, req_id, 1)
    other = next(d for d in farm.dryads if d is not failing)
    other.fail_prepare = "flash write failed"
    admin.set_state(other.uuid, "MAINTENANCE")
    wait_until(lambda: admin.get_worker_info(other.uuid).state is WorkerState.MAINTENANCE, 10)
    admin.set_state(other.uuid, "IDLE")
    wait_until(lambda: admin.get_worker_info(other.uuid).state is WorkerState.FAIL, 10,
               what="prepare failure")
    refused(admin.set_state, "no-such-worker", "IDLE")
    refused(users[2].new_request, {"device_type": "nothing-has-this"}, 4)

    # The state directory is the owner's alone (it holds job keys, so it must be).
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = sorted(state.iterdir())
    assert any(f.name.endswith("-wal") for f in files), files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f

    events = recorder.stop()
    assert any(e.get("reason") == "board on fire" for e in events), events[-5:]
    assert any("flash write failed" in str(e.get("reason")) for e in events), events[-5:]
    farm.close()
    server.stop()

    server_log = server.log()
    assert "board on fire" in server_log and "flash write failed" in server_log
    texts = {"server log": server_log, "events": json.dumps(events),
             "errors": "\n".join(errors), "this process's log": process_log.getvalue()}
    assert len(errors) == 7
    found = {name: leaks(text, keys) for name, text in texts.items()}
    assert found == {name: [] for name in texts}
    curve = [read_key_file(state / "server.key").secret, read_key_file(state / "admin.key").secret,
             *(c.credentials.client.secret for c in users),
             *(d.link.credentials.client.secret for d in farm.dryads)]
    assert len(set(curve)) == 2 + 3 + 3
    assert {name: [s[:4] for s in curve if s in text] for name, text in texts.items()} == \
        {name: [] for name in texts}
