"""Durations for people, wherever a message names one."""
from __future__ import annotations

import pytest

from boruta.core.durations import format_duration


@pytest.mark.parametrize("seconds, text", [
    (0.999999, "1s"), (1, "1s"), (2.5, "2.5s"), (0.25, "0.25s"), (0.5, "0.5s"),
    (9.96, "10s"), (12.4, "12s"), (59.4, "59s"), (59.6, "1m"), (600, "10m"), (90, "1m30s"),
    (5400, "1h30m"), (3600.4, "1h"), (86400, "1d"), (90061, "1d1h1m1s"), (0, "0s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_a_parked_calls_timeout_is_said_for_people() -> None:
    """The slice a client asks for comes from a clock (0.0099999 s): the server's
    wait_timeout names it through the one formatter, not as 0.0099999s."""
    import asyncio

    from boruta.server.app import Server
    from boruta.server.config import ServerConfig
    from boruta.transport import codec

    sent: list[list[bytes]] = []

    class Socket:
        def send(self, frames, *args, **kwargs):
            sent.append(frames)
            return True

    async def run() -> dict:
        server = Server(ServerConfig(insecure=True))
        server.loop = asyncio.get_running_loop()
        server.client_endpoint.sock = server.client_sock = Socket()  # type: ignore[assignment]
        server.client_endpoint.on_frames([b"peer", codec.request_frame(1, "new_request", {
            "caps": {"k": "v"}, "priority": 4, "queue_unsatisfiable": True})])
        server.client_endpoint.on_frames([b"peer", codec.request_frame(2, "wait_request", {
            "id": 1, "timeout": 0.0099999})])
        server.outbox.flush_now()
        await asyncio.sleep(0.05)          # the parked call's own timer, set for 0.01 s, runs
        server.outbox.flush_now()
        replies = [codec.decode(frames[-1]) for frames in sent]
        return next(r.error for r in replies if r.id == 2)

    error = asyncio.run(run())
    assert error["code"] == "wait_timeout"
    assert error["message"] == "request 1 still WAITING after 0.01s", error
