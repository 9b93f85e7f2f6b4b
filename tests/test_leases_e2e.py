"""Leases end to end: a real server, real client processes killed with real signals.

- A client process holds a board by lease; while it lives its renewals keep the job;
  SIGKILL it and the server closes the request (reason: the lease expired) and the
  worker is prepared and IDLE again.
- A lease renewed across a server restart is kept (the grace restarts with the server).
- `boruta request new --wait` holds its board until Ctrl-C, which closes the request;
  killed outright, the server closes it after the grace.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from boruta.core.types import ReqState, WorkerState
from boruta.testing.holder import start_holder
from boruta.testing.processes import Child
from e2e_helpers import server_factory, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow

GRACE = 2.0
#: The server accepts graces this short only in tests: renewals every GRACE/2 s.
SHORT_LEASES = {"lease_min": 1.0}

def holder(server: Any, tmp_path: Path, device_type: str, grace: float = GRACE) -> tuple[Child, int]:
    return start_holder(server, tmp_path / f"holder-{device_type}.log", device_type, grace)


def idle_board(server: Any, caps: dict[str, str]) -> str:
    farm = server.farm(1, caps=caps)
    uuid = farm.dryads[0].uuid
    admin = server.client()
    admin.set_state(uuid, "IDLE")
    wait_until(lambda: admin.get_worker_info(uuid).state is WorkerState.IDLE, 10,
               what="the board IDLE")
    return uuid


def ended_reason(events: Any, req_id: int, timeout: float) -> tuple[str, str]:
    """The state and reason of the event that ends the request."""
    deadline = time.monotonic() + timeout
    for event in events:
        if event.get("kind") == "request" and event.get("id") == req_id \
                and event.get("state") not in ("WAITING", "IN PROGRESS"):
            return event["state"], event.get("reason", "")
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"request {req_id} did not end within {timeout} s")


def test_a_killed_holder_frees_its_board_after_the_grace(server_factory, tmp_path: Path
                                                          ) -> None:  # noqa: F811
    server = server_factory(**SHORT_LEASES)
    caps = unique_caps()
    uuid = idle_board(server, caps)
    admin = server.client()
    child, req_id = holder(server, tmp_path, caps["device_type"])
    wait_until(lambda: admin.get_request_info(req_id).state is ReqState.INPROGRESS, 10,
               what="the holder's job started")
    events = admin.events(request_id=req_id)
    # Three graces pass: only the holder's renewals keep the job.
    end = time.monotonic() + 3 * GRACE
    while time.monotonic() < end:
        assert admin.get_request_info(req_id).state is ReqState.INPROGRESS
        time.sleep(0.2)
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait(5)
    state, reason = ended_reason(events, req_id, 15)
    assert (state, reason) == ("DONE", f"lease expired (no renewal for {GRACE:g} s)")
    wait_until(lambda: admin.get_worker_info(uuid).state is WorkerState.IDLE, 15,
               what="the board prepared and IDLE again")
    child.close()


def test_a_lease_renewed_across_a_server_restart_is_kept(server_factory, tmp_path: Path,
                                                         free_endpoints) -> None:  # noqa: F811
    settings = {"state_dir": str(tmp_path / "state"), **free_endpoints, **SHORT_LEASES}
    server = server_factory(**settings)
    caps = unique_caps()
    server.farm(1, caps=caps)                         # the caps exist; the board stays away
    child, req_id = holder(server, tmp_path, caps["device_type"], grace=3.0)
    server.stop()
    server = server_factory(**settings)               # same state, same endpoints and keys
    admin = server.client()
    end = time.monotonic() + 3 * 3.0
    while time.monotonic() < end:                     # the holder renews the restored lease
        assert admin.get_request_info(req_id).state is ReqState.WAIT
        time.sleep(0.25)
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait(5)
    wait_until(lambda: admin.get_request_info(req_id).state is ReqState.CANCEL, 15,
               what="the dead holder's request cancelled")
    child.close()


@pytest.fixture
def free_endpoints() -> dict[str, str]:
    import socket

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    return {name: f"tcp://127.0.0.1:{port()}" for name in ("listen", "dryad_listen", "events")}


def cli_holder(server: Any, tmp_path: Path, caps: dict[str, str], *extra: str) -> Child:
    return Child([sys.executable, "-m", "boruta.cli", "request", "new", "--caps",
                  f"device_type={caps['device_type']}", "--wait", "--key-out",
                  str(tmp_path / "board.key"), *extra], tmp_path / "cli.log",
                 env=server.cli_env(), cwd=tmp_path)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_request_new_wait_holds_the_board_until_interrupted(server_factory, tmp_path: Path,
                                                            stop: int) -> None:  # noqa: F811
    server = server_factory(**SHORT_LEASES)
    caps = unique_caps()
    uuid = idle_board(server, caps)
    admin = server.client()
    child = cli_holder(server, tmp_path, caps, "--lease", str(GRACE))
    req_id = int(child.expect(""))                    # the ID, first
    child.expect("ssh ")                              # then how to log in
    wait_until(lambda: "Holding request" in child.log(), 10, what="the hold announced")
    end = time.monotonic() + 2 * GRACE
    while time.monotonic() < end:                     # held past its grace
        assert admin.get_request_info(req_id).state is ReqState.INPROGRESS
        time.sleep(0.2)
    assert child.stop(stop) == 130
    assert admin.get_request_info(req_id).state is ReqState.DONE    # closed before it exited
    assert f"Request {req_id} closed." in child.log() and "Traceback" not in child.log()
    wait_until(lambda: admin.get_worker_info(uuid).state is WorkerState.IDLE, 15,
               what="the board IDLE again")
    child.close()


def test_request_new_wait_killed_outright_is_closed_after_the_grace(
        server_factory, tmp_path: Path) -> None:  # noqa: F811
    server = server_factory(**SHORT_LEASES)
    caps = unique_caps()
    idle_board(server, caps)
    admin = server.client()
    child = cli_holder(server, tmp_path, caps, "--lease", str(GRACE))
    req_id = int(child.expect(""))
    child.expect("ssh ")
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait(5)
    wait_until(lambda: admin.get_request_info(req_id).state is ReqState.DONE, 15,
               what="the request closed by its lapsed lease")
    child.close()


def test_renewing_someone_elses_lease_is_lost_not_told(server_factory) -> None:  # noqa: F811
    server = server_factory(**SHORT_LEASES)
    caps = unique_caps()
    server.farm(1, caps=caps)
    alice, bob = server.user("alice"), server.user("bob")
    req_id = alice.new_request(caps, 8, queue_unsatisfiable=True)
    assert alice.leases.held() == {req_id}
    assert bob.renew_leases([req_id]) == {"held": [], "lost": [req_id]}
    assert alice.renew_leases([req_id]) == {"held": [req_id], "lost": []}
    alice.close_request(req_id)
    assert alice.leases.held() == set()


def test_both_clients_renew_in_the_background_until_closed(server_factory) -> None:  # noqa: F811
    import asyncio

    from boruta.transport.async_client import AsyncClient
    server = server_factory(**SHORT_LEASES)
    caps = unique_caps()
    server.farm(1, caps=caps)
    admin = server.client()
    blocking = server.client()
    by_thread = blocking.new_request(caps, 8, lease=GRACE, queue_unsatisfiable=True)

    async def hold_a_while() -> int:
        client = AsyncClient(server.listen, credentials=server.credentials)
        req_id = await client.new_request(caps, 8, lease=GRACE, queue_unsatisfiable=True)
        assert client.leases.held() == {req_id}
        await asyncio.sleep(3 * GRACE)                # only the task's renewals keep it
        assert (await client.get_request_info(req_id)).state is ReqState.WAIT
        await client.close()
        return req_id

    by_task = asyncio.run(hold_a_while())
    assert admin.get_request_info(by_thread).state is ReqState.WAIT     # 3 graces later too
    blocking.close()                                  # no more renewals from either
    for req_id in (by_task, by_thread):
        wait_until(lambda: admin.get_request_info(req_id).state is ReqState.CANCEL, 10,
                   what=f"request {req_id} cancelled once its client closed")
