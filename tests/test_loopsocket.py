"""LoopSocket: real ZeroMQ sockets on loopback, driven by a real asyncio loop."""
from __future__ import annotations

import asyncio
from typing import Any

import zmq

from boruta.transport.loopsocket import LoopSocket

DEADLINE = 20.0


def _pair(ctx: zmq.Context[Any], endpoint: str = "tcp://127.0.0.1:*", *,
          router_class: type = zmq.Socket, dealer_id: bytes | None = None
          ) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    """A ROUTER bound at `endpoint` and a DEALER connected to it (named `dealer_id`)."""
    router = ctx.socket(zmq.ROUTER, socket_class=router_class)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    if dealer_id is not None:
        dealer.setsockopt(zmq.ROUTING_ID, dealer_id)
    dealer.connect(router.getsockopt_string(zmq.LAST_ENDPOINT))
    return router, dealer


async def _until(predicate: Any) -> None:
    """Yield to the loop until predicate() holds (fails the test after DEADLINE)."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(poll(), DEADLINE)


def test_a_turn_handles_what_is_waiting_then_ends() -> None:
    """Messages already waiting are handled turn_max at a time, each turn followed by
    end_turn() (the server's commit); nothing is lost or reordered."""
    turn_max, total = 16, 3 * 16 + 5

    async def main() -> tuple[list[int], list[int]]:
        ctx = zmq.Context()
        router, dealer = _pair(ctx, "inproc://turns")   # inproc: a send is queued at once
        handled: list[int] = []
        turns: list[int] = []                 # messages handled when each turn ended
        for n in range(total):
            dealer.send(str(n).encode())
        reader = LoopSocket(router, lambda frames: handled.append(int(frames[1])),
                            turn_max=turn_max, end_turn=lambda: turns.append(len(handled)))
        reader.start(asyncio.get_running_loop())
        await _until(lambda: len(handled) == total)
        dealer.send(b"-1")                    # and one more, arriving on a quiet socket
        await _until(lambda: len(handled) == total + 1)
        reader.stop()
        ctx.destroy(0)
        return handled, turns

    handled, turns = asyncio.run(main())
    assert handled == list(range(3 * 16 + 5)) + [-1]
    assert turns == [16, 32, 48, 53, 54]


def test_a_full_turn_yields_to_the_rest_of_the_loop() -> None:
    """A socket that always has more waiting still lets other callbacks run between turns."""
    async def main() -> list[str]:
        ctx = zmq.Context()
        router, dealer = _pair(ctx, "inproc://yield")
        order: list[str] = []
        for n in range(40):
            dealer.send(b"x")
        loop = asyncio.get_running_loop()

        def handle(frames: list[bytes]) -> None:
            order.append("m")

        def end_turn() -> None:
            order.append("|")
            loop.call_soon(order.append, "other")   # someone else's work, queued now

        reader = LoopSocket(router, handle, turn_max=10, end_turn=end_turn)
        reader.start(loop)
        await _until(lambda: order.count("m") == 40 and order[-1] == "other")
        reader.stop()
        ctx.destroy(0)
        return order

    order = asyncio.run(main())
    turn = ["m"] * 10 + ["|"]
    assert order == (turn + ["other"]) * 4


def test_replies_never_swallow_the_next_request() -> None:
    """Every reply is a send on the same socket, and a send may consume the descriptor's
    edge that announces the requests arriving meanwhile: each must still be read. Two
    peers send streams of requests (in small bursts) while the loop answers them."""
    peers, per_peer = 2, 5000

    async def main() -> list[int]:
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind("tcp://127.0.0.1:*")
        endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        reader: LoopSocket

        def echo(frames: list[bytes]) -> None:
            assert reader.send(frames)

        reader = LoopSocket(router, echo, turn_max=8)
        reader.start(asyncio.get_running_loop())
        loop = asyncio.get_running_loop()

        def peer(seed: int) -> int:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(endpoint)
            sent = answered = 0
            while answered < per_peer:
                burst = min(1 + (sent * 7 + seed) % 5, per_peer - sent)
                for _ in range(burst):
                    dealer.send(str(sent).encode())
                    sent += 1
                # Wait for at least one answer, then take whatever else has come back.
                if not dealer.poll(DEADLINE * 1000):
                    break
                while dealer.poll(0):
                    assert dealer.recv() == str(answered).encode()
                    answered += 1
                if sent == per_peer and answered < per_peer and not dealer.poll(DEADLINE * 1000):
                    break
            dealer.close(0)
            return answered

        answered = await asyncio.gather(*(loop.run_in_executor(None, peer, k)
                                          for k in range(peers)))
        reader.stop()
        ctx.destroy(0)
        return list(answered)

    assert asyncio.run(main()) == [per_peer] * peers


class _EagerSocket(zmq.Socket):  # type: ignore[type-arg]
    """A socket that processes its pending commands after every message it sends, as
    libzmq may: that takes the descriptor's pending edge."""

    def send(self, data: Any, flags: int = 0, *args: Any, **kwargs: Any) -> Any:
        result = super().send(data, flags, *args, **kwargs)
        if not flags & zmq.SNDMORE:
            self.getsockopt(zmq.EVENTS)
        return result


def test_a_send_between_turns_does_not_hide_a_waiting_message() -> None:
    """A message arrives, then a send (a flush, a timer's event) consumes the edge before
    the loop looks: the socket must still find the message."""
    async def main() -> list[bytes]:
        ctx = zmq.Context()
        router, dealer = _pair(ctx, "inproc://edge", router_class=_EagerSocket,
                               dealer_id=b"peer")
        seen: list[bytes] = []
        reader = LoopSocket(router, lambda frames: seen.append(frames[1]))
        reader.start(asyncio.get_running_loop())
        dealer.send(b"hello")
        await _until(lambda: seen == [b"hello"])
        await asyncio.sleep(0)                # the turn that read it has ended
        dealer.send(b"waiting")               # queued at once (inproc) ...
        assert reader.send([b"peer", b"an event"])   # ... and its edge taken by this send
        await _until(lambda: seen == [b"hello", b"waiting"])
        assert dealer.recv() == b"an event"
        reader.stop()
        ctx.destroy(0)
        return seen

    assert asyncio.run(main()) == [b"hello", b"waiting"]


def test_a_send_at_the_end_of_a_turn_does_not_hide_a_message_that_came_meanwhile() -> None:
    """The turn is drained, then its end (the server's commit) sends a reply that takes
    the edge of a message arrived in between: the socket must still find it."""
    async def main() -> list[bytes]:
        ctx = zmq.Context()
        router, dealer = _pair(ctx, "inproc://turn-end", router_class=_EagerSocket,
                               dealer_id=b"peer")
        seen: list[bytes] = []
        reader: LoopSocket

        def end_turn() -> None:
            if seen[-1:] == [b"second"]:
                dealer.send(b"meanwhile")             # after the turn's last read ...
                reader.send([b"peer", b"reply"])      # ... its edge taken by the reply

        reader = LoopSocket(router, lambda frames: seen.append(frames[1]), end_turn=end_turn)
        reader.start(asyncio.get_running_loop())
        dealer.send(b"first")                         # the first turn, then a quiet socket
        await _until(lambda: seen == [b"first"])
        for _ in range(3):
            await asyncio.sleep(0)
        dealer.send(b"second")                        # a turn started by the descriptor
        await _until(lambda: seen == [b"first", b"second", b"meanwhile"])
        reader.stop()
        ctx.destroy(0)
        return seen

    assert asyncio.run(main()) == [b"first", b"second", b"meanwhile"]


def test_a_failing_handler_does_not_stop_the_reading() -> None:
    async def main() -> list[bytes]:
        ctx = zmq.Context()
        router, dealer = _pair(ctx)
        seen: list[bytes] = []

        def handle(frames: list[bytes]) -> None:
            seen.append(frames[1])
            if frames[1] == b"bad":
                raise RuntimeError("a bug in a handler")

        reader = LoopSocket(router, handle)
        reader.start(asyncio.get_running_loop())
        for payload in (b"bad", b"good"):
            dealer.send(payload)
        await _until(lambda: len(seen) == 2)
        reader.stop()
        ctx.destroy(0)
        return seen

    assert asyncio.run(main()) == [b"bad", b"good"]


def test_a_send_to_a_gone_peer_is_dropped_not_raised() -> None:
    async def main() -> bool:
        ctx = zmq.Context()
        router, dealer = _pair(ctx)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        reader = LoopSocket(router, lambda frames: None)
        reader.start(asyncio.get_running_loop())
        sent = reader.send([b"no-such-peer", b"hello"])
        reader.stop()
        ctx.destroy(0)
        return sent

    assert asyncio.run(main()) is False
