"""Tunnels in-process: forwarding, port ranges, closing, unreachable destinations."""
from __future__ import annotations

import asyncio
import socket

import pytest

from boruta.sim.dryads import echo_server
from boruta.server.tunnels import TunnelError, TunnelManager


def run(coro, timeout: float = 10.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _talk(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    received = await reader.read()
    writer.close()
    return received


def test_forwards_both_ways_and_counts_bytes() -> None:
    async def scenario() -> None:
        sshd = await echo_server()
        dest = sshd.sockets[0].getsockname()[:2]
        tunnels = TunnelManager("127.0.0.1", (0, 0))
        tunnel = tunnels.open(1, dest)
        payload = b"x" * 300_000
        results = await asyncio.gather(*(_talk(tunnel.port, payload) for _ in range(3)))
        assert all(r == payload for r in results)
        assert tunnel.bytes_in == tunnel.bytes_out == 3 * len(payload)
        assert tunnel.connections == 3
        tunnels.close_all()
        sshd.close()
    run(scenario())


def test_close_ends_live_sessions_and_frees_the_port() -> None:
    async def scenario() -> None:
        sshd = await echo_server()
        tunnels = TunnelManager("127.0.0.1", (0, 0))
        tunnel = tunnels.open("job", sshd.sockets[0].getsockname()[:2])
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
        writer.write(b"hi")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"hi"
        assert tunnels.close("job") and not tunnels.close("job")
        assert await asyncio.wait_for(reader.read(), 5) == b""          # the session ends
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", tunnel.port)
        writer.close()
        sshd.close()
    run(scenario())


def _two_ports_in_a_row() -> int:
    """A port p such that p and p + 1 were both free a moment ago."""
    while True:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        neighbour = socket.socket()
        try:
            neighbour.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
        finally:
            probe.close()
            neighbour.close()


def test_port_range_is_used_in_turn_and_exhaustion_is_an_error() -> None:
    async def scenario(base: int) -> bool:
        tunnels = TunnelManager("127.0.0.1", (base, base + 1))
        try:
            first = tunnels.open(1, ("127.0.0.1", 9))
            second = tunnels.open(2, ("127.0.0.1", 9))
        except TunnelError:
            tunnels.close_all()
            return False          # another process took one of the two ports meanwhile
        assert {first.port, second.port} == {base, base + 1}
        with pytest.raises(TunnelError, match="no free tunnel port"):
            tunnels.open(3, ("127.0.0.1", 9))
        tunnels.close(1)
        await asyncio.sleep(0)
        assert tunnels.open(3, ("127.0.0.1", 9)).port == first.port
        tunnels.close_all()
        return True

    assert any(run(scenario(_two_ports_in_a_row())) for _ in range(20))


def test_unreachable_destination_closes_the_incoming_connection() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()

    async def scenario() -> None:
        tunnels = TunnelManager("127.0.0.1", (0, 0), connect_timeout=2)
        tunnel = tunnels.open(1, ("127.0.0.1", dead_port))
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        tunnels.close_all()
    run(scenario())
