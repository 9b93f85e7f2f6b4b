"""Oversized caps against a real server: a hostile client and a hostile dryad send
thousands of keys and get bad_argument naming the limit; the server's memory stays
where it was (each such request used to cost it tens of megabytes for good), and a
polite client is served meanwhile."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import zmq

from boruta.core.types import ReqState, WorkerState
from boruta.transport import codec
from e2e_helpers import ServerProcess, server_factory, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow

KEYS = 5_000                  # about 60 KB a frame; 51 MB of matcher memory each, before
MiB = 1 << 20


def ask(sock: zmq.Socket, msg_id: int, op: str, args: dict[str, Any]) -> codec.Envelope:
    sock.send(codec.request_frame(msg_id, op, args))
    assert sock.poll(5000), f"no answer to {op}"
    reply = codec.decode(sock.recv())
    assert reply.id == msg_id
    return reply


def raw_peer(ctx: zmq.Context, server: ServerProcess, dryad: str | None = None) -> zmq.Socket:
    """A raw client of the server (as its admin), or with `dryad` a raw dryad enrolled for
    that UUID (a hostile board has a key of its own)."""
    sock = server.secure(ctx.socket(zmq.DEALER), dryad)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.dryad if dryad is not None else server.listen)
    return sock


def test_oversized_caps_are_refused_and_others_served(
        server_factory: Callable[..., ServerProcess]) -> None:  # noqa: F811
    ctx = zmq.Context()
    try:
        check_refused_and_others_served(server_factory(), ctx)
    finally:
        ctx.destroy(0)


def check_refused_and_others_served(server: ServerProcess, ctx: zmq.Context) -> None:
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    uuid = farm.dryads[0].uuid
    polite = server.client()
    polite.set_state(uuid, WorkerState.IDLE)
    wait_until(lambda: polite.get_worker_info(uuid).state is WorkerState.IDLE, 10,
               what="the worker IDLE")

    hostile = raw_peer(ctx, server)
    rogue_dryad = raw_peer(ctx, server, dryad="rogue")
    assert ask(hostile, 0, "new_request",       # a waiting request of its own
               {"caps": unique_caps(), "priority": 8, "queue_unsatisfiable": True}).ok
    rss_before = server.rss()

    served = None
    for n in range(1, 21):
        big = {f"h{n}_{i}": "v" for i in range(KEYS)}
        reply = ask(hostile, n, "new_request",
                    {"caps": big, "priority": 8, "queue_unsatisfiable": True})
        assert reply.error["code"] == "bad_argument", reply
        assert reply.error["message"] == (f"caps have {KEYS} entries; at most 64 are allowed "
                                          "(max_caps_entries)")
        if n % 5 == 0:
            reply = ask(hostile, 100 + n, "list_workers", {"filter": {"caps": big}})
            assert reply.error["code"] == "bad_argument", reply
            assert "filter caps have" in reply.error["message"]
            reply = ask(rogue_dryad, n, "register",
                        {"caps": {"UUID": "rogue", **big}, "dryad_address": ":7",
                         "ssh_address": ":22"})
            assert reply.error["code"] == "bad_argument", reply
            assert "max_caps_entries" in reply.error["message"]
        if n == 10:
            served = polite.new_request(caps, 4)        # the polite client, meanwhile
    assert served is not None
    wait_until(lambda: polite.get_request_info(served).state is ReqState.INPROGRESS, 10,
               what="the polite request served")
    assert polite.get_request_info(served).job.worker_uuid == uuid
    reply = ask(hostile, 999, "new_request",
                {"caps": {"k" * 65: "v"}, "priority": 8, "queue_unsatisfiable": True})
    assert "max_cap_key_length" in reply.error["message"]

    grown = server.rss() - rss_before
    assert grown < 32 * MiB, f"the server grew by {grown / MiB:.1f} MiB"
    assert [w.worker_uuid for w in polite.list_workers()[0]] == [uuid]
    assert server.alive() and "Traceback" not in server.log()
