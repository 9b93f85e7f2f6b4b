"""What the server sends is bounded in bytes: one list reply (cut to `max_reply_bytes`, paged on
by `remaining`), and what one peer has not read (its replies dropped, the others served)."""
from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any, Callable

import msgpack
import pytest
import zmq

from boruta.core.types import Paginator, ReqState
from boruta.server.app import Stats
from boruta.server.replybytes import TRACKED_FROM, PeerBuffers, fit_list
from boruta.testing.processes import wait_until
from boruta.transport import codec
from boruta.transport.loopsocket import LoopSocket
from e2e_helpers import ServerProcess, server_factory, unique_caps  # noqa: F401

MB = 1 << 20


# ---------------------------------------------------------------------- one reply
def listing(count: int, size: int) -> dict[str, Any]:
    items = [{"uuid": f"w{i:03}", "caps": {"blob": "x" * size}} for i in range(count)]
    return {"items": items, "total": count + 5, "remaining": 5}


def test_a_forward_page_keeps_its_first_items_and_counts_the_rest_as_remaining() -> None:
    doc = listing(10, 1000)
    frame = fit_list(42, doc, backward=False, limit=4500)
    reply = msgpack.unpackb(frame)
    kept = [item["uuid"] for item in reply["ok"]["items"]]
    assert kept == ["w000", "w001", "w002", "w003"]
    assert len(frame) <= 4500 and reply["id"] == 42
    assert reply["ok"]["total"] == 15 and reply["ok"]["remaining"] == 5 + 6


def test_a_backward_page_keeps_the_items_next_to_its_border() -> None:
    reply = msgpack.unpackb(fit_list(1, listing(10, 1000), backward=True, limit=4500))
    assert [item["uuid"] for item in reply["ok"]["items"]] == ["w006", "w007", "w008", "w009"]
    assert reply["ok"]["remaining"] == 11


def test_one_item_larger_than_the_limit_still_goes_alone() -> None:
    reply = msgpack.unpackb(fit_list(1, listing(3, 5000), backward=False, limit=1024))
    assert [item["uuid"] for item in reply["ok"]["items"]] == ["w000"]
    assert reply["ok"]["remaining"] == 7


# ---------------------------------------------------------------------- one peer
def test_large_replies_to_a_peer_that_does_not_read_are_dropped_until_it_reads(
        ctx: zmq.Context) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind("inproc://limits")
    slow, quick = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for name, sock in ((b"slow", slow), (b"quick", quick)):
        sock.setsockopt(zmq.IDENTITY, name)
        sock.connect("inproc://limits")
        sock.send(b"hello")
        router.recv_multipart()
    stats = Stats()
    buffers = PeerBuffers(4 * TRACKED_FROM, stats, hwm=1000)
    payload = b"x" * TRACKED_FROM
    sent = 0
    for _ in range(10):
        frame = buffers.admit(b"slow", payload)
        if frame is not None:
            router.send_multipart([b"slow", frame])
            sent += 1
    assert sent == 4 and stats.replies_dropped == 6 and stats.peers_dropped == 1
    assert buffers.held(b"slow") == 4 * TRACKED_FROM
    # The other peer is not affected: it reads, and its replies keep coming (ZeroMQ
    # releases a read reply a moment later, on pyzmq's garbage-collector thread).
    for _ in range(10):
        wait_until(lambda: buffers.held(b"quick") < 4 * TRACKED_FROM, 5, what="a release")
        router.send_multipart([b"quick", buffers.admit(b"quick", payload)])
        assert quick.poll(1000) and quick.recv() == payload
    assert small_replies_are_never_held(buffers)
    for _ in range(sent):                  # the slow peer reads: its budget comes back
        assert slow.poll(1000) and slow.recv() == payload
    wait_until(lambda: buffers.held(b"slow") == 0, 5, what="the read replies released")
    assert buffers.admit(b"slow", payload) is not None
    assert stats.replies_dropped == 6
    router.close(0)


def test_small_replies_to_a_full_queue_or_a_gone_peer_are_refused_and_counted(
        ctx: zmq.Context) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.SNDHWM, 5)
    router.bind("inproc://small")
    reader = ctx.socket(zmq.DEALER)
    reader.setsockopt(zmq.RCVHWM, 5)
    reader.setsockopt(zmq.IDENTITY, b"reader")
    reader.connect("inproc://small")
    reader.send(b"hello")
    router.recv_multipart()
    stats = Stats()
    buffers = PeerBuffers(1 << 20, stats, hwm=5)
    sock = LoopSocket(router, lambda frames: None, on_refused=buffers.refused)
    results = [sock.send([b"reader", b"small"]) for _ in range(30)]
    assert results[0] and not results[-1]                 # a queue that fills refuses
    assert stats.replies_dropped == results.count(False) and stats.peers_dropped == 1
    assert not sock.send([b"nobody", b"small"])           # no such peer
    assert stats.replies_undeliverable == 1
    router.close(0)


def small_replies_are_never_held(buffers: PeerBuffers) -> bool:
    small = b"y" * (TRACKED_FROM - 1)
    return all(buffers.admit(b"slow", small) is small for _ in range(100))


# ---------------------------------------------------------------------- end to end
def register(ctx: zmq.Context, server: ServerProcess, **caps: str) -> zmq.Socket:
    """A raw dryad (enrolled) registering one worker with `caps`; returns its socket
    (kept open)."""
    uuid = str(uuidlib.uuid4())
    sock = server.secure(ctx.socket(zmq.DEALER), dryad=uuid)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.dryad)
    sock.send(codec.request_frame(1, "register", {
        "caps": {"UUID": uuid, **caps},
        "dryad_address": ":7175", "ssh_address": ":22"}))
    assert sock.poll(5000), "no reply to register"
    reply = codec.decode(sock.recv())
    assert reply.error is None, reply.error
    return sock


@pytest.mark.slow
def test_a_list_larger_than_max_reply_bytes_is_cut_and_paged_on(
        server_factory: Callable[..., ServerProcess], ctx: zmq.Context) -> None:  # noqa: F811
    server = server_factory(max_reply_bytes=8192, max_cap_value_length=4000)
    kind = unique_caps()
    dryads = [register(ctx, server, **kind, blob=f"{i}" * 3000) for i in range(5)]
    client = server.client()
    seen: list[str] = []
    paginator = None
    while True:
        items, info = client.list_workers(paginator=paginator)
        assert info.total_items == 5
        assert 1 <= len(items) < 5 and info.remaining_items == 5 - len(seen) - len(items)
        seen += [w.worker_uuid for w in items]
        if not info.remaining_items:
            break
        paginator = Paginator(id=seen[-1], limit=0)
    assert len(seen) == len(set(seen)) == 5
    backward, info = client.list_workers(paginator=Paginator(id=seen[-1], backward=True))
    assert [w.worker_uuid for w in backward] == seen[-1 - len(backward):-1]
    assert info.remaining_items == 4 - len(backward)
    for sock in dryads:
        sock.close(0)


@pytest.mark.slow
def test_a_peer_that_does_not_read_its_replies_is_dropped_and_others_are_served(
        server_factory: Callable[..., ServerProcess], ctx: zmq.Context) -> None:  # noqa: F811
    """4,000 list_workers of 900 KB each, never read: the server once grew by 2.4 GB.

    (The caps limits now keep a worker far smaller by default; a farm of many
    workers makes a list as large, so the scenario raises the value limit.)
    """
    server = server_factory(log_level="warning", max_cap_value_length=1_000_000)
    dryad = register(ctx, server, blob="x" * 900_000)
    client = server.client(timeout=5)
    marker = client.new_request(unique_caps(), 4, queue_unsatisfiable=True)
    assert len(client.list_workers()[0]) == 1            # one 900 KB reply read normally
    before = server.rss()
    attacker = server.secure(ctx.socket(zmq.DEALER))    # the admin's key: it closes `marker`
    attacker.setsockopt(zmq.LINGER, 0)
    attacker.setsockopt(zmq.RCVHWM, 1)                    # the attacker holds next to nothing
    attacker.setsockopt(zmq.RCVBUF, 1 << 16)
    attacker.connect(server.listen)
    started = time.monotonic()
    for msg_id in range(4000):
        attacker.send(codec.request_frame(msg_id, "list_workers", {}))
    attacker.send(codec.request_frame(4000, "close_request", {"id": marker}))   # the last one
    peak, pings = before, []

    def flood_handled() -> bool:
        nonlocal peak
        peak = max(peak, server.rss())
        t0 = time.monotonic()
        client.ping()                                     # another client, served meanwhile
        pings.append(time.monotonic() - t0)
        return client.get_request_info(marker).state is ReqState.CANCEL

    wait_until(flood_handled, 180, interval=0.05, what="the 4,000 calls handled")
    elapsed = time.monotonic() - started
    peak = max(peak, server.rss())
    print(f"\nserver RSS before {before / MB:.0f} MB, peak {peak / MB:.0f} MB "
          f"(+{(peak - before) / MB:.0f} MB); 4,001 calls handled in {elapsed:.1f} s; "
          f"{len(pings)} pings from another client meanwhile, slowest "
          f"{max(pings) * 1000:.0f} ms")
    assert peak - before < 200 * MB
    assert len(pings) >= 2 and max(pings) < 2.0
    assert "does not read its replies" in server.log()
    assert len(client.list_workers()[0]) == 1             # a reader still gets the list
    dryad.close(0)
    attacker.close(0)
