"""A rogue dryad against a real server: what it reports never reaches a client unchecked.

The dryad answers `prepare` with a user name that would run a command in
the shell of whoever evals the printed ssh line, or registers with a host
that is not a host: the server refuses both, and honest dryads and clients
are served meanwhile.
"""
from __future__ import annotations

import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable

import pytest
import zmq

from boruta.core.types import ReqState, WorkerState
from boruta.transport import codec
from boruta.transport.errors import WaitTimeoutError
from e2e_helpers import ServerProcess, server_factory, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow


def state_of(client: Any, uuid: str) -> WorkerState:
    return client.get_worker_info(uuid).state


def test_a_user_name_with_a_newline_fails_the_prepare(
        server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:  # noqa: F811
    server = server_factory()
    marker = tmp_path / "x"
    rogue_caps, honest_caps = unique_caps(), unique_caps()
    rogue = server.farm(1, caps=rogue_caps, username=f"root\n touch {marker}").dryads[0]
    honest = server.farm(1, caps=honest_caps).dryads[0]
    client = server.client()

    client.set_state(rogue.uuid, "IDLE")
    wait_until(lambda: state_of(client, rogue.uuid) is WorkerState.FAIL, 10, what="rogue FAILED")
    reason = client.get_worker_info(rogue.uuid).fail_reason
    assert reason.startswith("prepare failed: the dryad reported an invalid user name "
                             "'root\\n touch /"), reason         # quoted, cut short
    assert "\n" not in reason
    assert "lower case letters" in reason                 # the rule, so an admin can fix it

    # No request ever gets the rogue worker, and so its name; the honest one is served.
    rogue_req = client.new_request(rogue_caps, 4)
    with pytest.raises(WaitTimeoutError):
        client.acquire_worker(rogue_req, timeout=1.0)
    assert client.get_request_info(rogue_req).state is ReqState.WAIT
    client.set_state(honest.uuid, "IDLE")
    wait_until(lambda: state_of(client, honest.uuid) is WorkerState.IDLE, 10, what="honest IDLE")
    honest_req = client.new_request(honest_caps, 4)
    assert client.acquire_worker(honest_req, timeout=5).username == "boruta-user"

    # Asked again, the rogue fails again: the check is not a one-off.
    client.set_state(rogue.uuid, "MAINTENANCE")
    wait_until(lambda: state_of(client, rogue.uuid) is WorkerState.MAINTENANCE, 10,
               what="rogue in MAINTENANCE")
    client.set_state(rogue.uuid, "IDLE")
    wait_until(lambda: rogue.commands.count("prepare") == 2
               and state_of(client, rogue.uuid) is WorkerState.FAIL, 10,
               what="second prepare refused")
    assert "invalid user name" in client.get_worker_info(rogue.uuid).fail_reason
    assert client.get_request_info(rogue_req).state is ReqState.WAIT
    assert not marker.exists()
    assert "Traceback" not in server.log()


def register(sock: zmq.Socket, msg_id: int, uuid: str, ssh_address: str) -> codec.Envelope:
    caps = {"UUID": uuid, **unique_caps()}
    sock.send(codec.request_frame(msg_id, "register", {
        "caps": caps, "dryad_address": ":7175", "ssh_address": ssh_address}))
    assert sock.poll(5000), "no reply to register"
    return codec.decode(sock.recv())


@pytest.mark.parametrize("ssh_address, code", [
    ("$(touch x):22", "invalid_address"), ("a b:22", "invalid_address"),
    ("*:22", "invalid_address"), ("h\n:22", "invalid_address"), ("h:", "missing_port")])
def test_a_hostile_address_is_refused_at_register(
        server_factory: Callable[..., ServerProcess],  # noqa: F811
        ssh_address: str, code: str) -> None:
    server = server_factory()
    uuid = str(uuidlib.uuid4())
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        server.secure(sock, dryad=uuid)                          # an enrolled dryad
        sock.connect(server.dryad)
        reply = register(sock, 1, uuid, ssh_address)
        assert reply.error is not None and reply.error["code"] == code, reply
        assert server.client().list_workers()[0] == []           # nothing registered
        ok = register(sock, 2, uuid, ":22")                      # the same peer, a real address
        assert ok.error is None and ok.ok["uuid"]
    assert "Traceback" not in server.log()
