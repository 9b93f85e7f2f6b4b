"""Parked calls are bounded per peer and in time: a peer cannot hold every slot, and the
slots of a peer that parked and went away come back; the other peers are served meanwhile."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
import zmq

from boruta.core.types import ReqState
from boruta.transport import codec
from boruta.transport.client import Client
from e2e_helpers import ServerProcess, server_factory, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow


def peer(ctx: zmq.Context, server: ServerProcess, user: Client | None = None) -> zmq.Socket:
    """A raw client connection with the admin's key, or `user`'s; one ROUTER identity of
    its own. Parked calls count against the user."""
    sock = ctx.socket(zmq.DEALER)
    if user is not None:
        assert user.credentials is not None
        user.credentials.apply(sock)
    else:
        server.secure(sock)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.listen)
    return sock


def park(sock: zmq.Socket, msg_id: int, op: str, req_id: int,
         timeout: float | None = None) -> None:
    args: dict[str, Any] = {"id": req_id, "timeout": timeout}
    sock.send(codec.request_frame(msg_id, op, args))


def replies(sock: zmq.Socket, within: float) -> list[codec.Envelope]:
    """Every reply that arrives within `within` seconds."""
    got = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            got.append(codec.decode(sock.recv()))
    return got


def one_reply(sock: zmq.Socket, within: float = 5.0) -> codec.Envelope:
    assert sock.poll(int(within * 1000)), "no reply"
    return codec.decode(sock.recv())


def waiting_request(server: ServerProcess) -> int:
    """A request that stays WAITING: no worker has its caps."""
    return server.client().new_request(unique_caps(), 4, queue_unsatisfiable=True)


@pytest.mark.parametrize("op", ["wait_request", "acquire_worker"])
def test_one_peer_cannot_hold_every_parked_slot(
        server_factory: Callable[..., ServerProcess],  # noqa: F811
        ctx: zmq.Context, op: str) -> None:
    server = server_factory(max_parked=5, max_parked_per_peer=3)
    req = waiting_request(server)
    greedy = peer(ctx, server)
    for msg_id in range(1, 5):
        park(greedy, msg_id, op, req)
    refused = replies(greedy, 1.0)
    assert [r.id for r in refused] == [4], refused        # three parked, the fourth refused
    assert refused[0].error["code"] == "busy"
    assert "max_parked_per_peer 3" in refused[0].error["message"]
    # Another user parks in a slot the greedy one could not take, and is answered.
    other = peer(ctx, server, server.user("other", role="admin"))   # may wait on `req`
    park(other, 1, op, req)
    assert replies(other, 0.3) == []                      # parked, not busy
    server.client().close_request(req)
    answer = one_reply(other)
    assert answer.id == 1
    if op == "wait_request":
        assert answer.ok["state"] == str(ReqState.CANCEL)
    else:
        assert answer.error["code"] == "worker_not_assigned"
    assert sorted(r.id for r in replies(greedy, 1.0)) == [1, 2, 3]


def test_parked_calls_of_a_gone_peer_are_reaped(
        server_factory: Callable[..., ServerProcess], ctx: zmq.Context) -> None:  # noqa: F811
    server = server_factory(max_parked=4, max_parked_per_peer=4, max_park_seconds=1.0)
    req = waiting_request(server)
    gone = peer(ctx, server)
    for msg_id in range(1, 5):
        park(gone, msg_id, "wait_request", req)          # no limit asked
    gone.send(codec.request_frame(5, "ping"))            # the same pipe: after the four
    assert one_reply(gone).id == 5                         # so the four are parked now
    other = peer(ctx, server)
    park(other, 1, "wait_request", req, timeout=5.0)
    full = one_reply(other)
    assert full.error["code"] == "busy" and "max_parked 4" in full.error["message"]
    gone.close()                                           # parks, then disconnects
    started = time.monotonic()

    def other_parks() -> bool:
        park(other, 2, "wait_request", req, timeout=0.2)
        return one_reply(other).error["code"] == "wait_timeout"   # parked, then timed out

    wait_until(other_parks, 5.0, what="a free parked slot")
    assert time.monotonic() - started < 3.0
    assert server.alive() and "Traceback" not in server.log()


def test_no_call_stays_parked_longer_than_max_park_seconds_and_clients_do_not_notice(
        server_factory: Callable[..., ServerProcess], ctx: zmq.Context) -> None:  # noqa: F811
    server = server_factory(max_park_seconds=1.0)
    req = waiting_request(server)
    raw = peer(ctx, server)
    started = time.monotonic()
    park(raw, 7, "wait_request", req)                      # nil: "no limit"
    answer = one_reply(raw, 5.0)
    waited = time.monotonic() - started
    assert answer.id == 7 and answer.error["code"] == "wait_timeout"
    assert "max_park_seconds" in answer.error["message"]
    assert 0.8 <= waited < 3.0
    # boruta.Client asks in slices of 10 s: each slice ends early, it asks again,
    # and the caller sees only the answer.
    client = server.client(timeout=5)
    result: dict[str, Any] = {}

    def wait() -> None:
        try:
            result["info"] = client.wait_request(req, timeout=None)
        except Exception as exc:           # reported by the assertion below
            result["error"] = exc

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(2.5)                        # the point: two server-side expiries pass meanwhile
    assert waiter.is_alive(), result
    server.client().close_request(req)
    waiter.join(10)
    assert "error" not in result, result
    assert result["info"].state is ReqState.CANCEL
