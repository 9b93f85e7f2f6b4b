"""Tunnels: a TCP listener per job that forwards both ways to the worker's sshd.

The listening socket is bound synchronously (so the port is known, and a
failure is reported, before the job's access is handed out); connections
that arrive before the accept loop runs wait in the kernel's backlog.
Ports come from a configured range (`(0, 0)`: any free port). Closing a
tunnel closes its listener and every connection it carried.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import Any

log = logging.getLogger("boruta.tunnel")

BUFFER = 64 * 1024


class TunnelError(Exception):
    pass


class Traffic:
    """Bytes carried by every tunnel a manager ever opened (metrics reads them): kept
    apart from each tunnel's own count so that closing a tunnel loses nothing."""

    __slots__ = ("to_worker", "to_client")

    def __init__(self) -> None:
        self.to_worker = 0         # client -> worker (up)
        self.to_client = 0         # worker -> client (down)


class Tunnel:
    def __init__(self, name: Any, sock: socket.socket, dest: tuple[str, int],
                 connect_timeout: float, traffic: Traffic | None = None) -> None:
        self.name = name
        self.traffic = traffic if traffic is not None else Traffic()
        self.dest = dest
        self.port: int = sock.getsockname()[1]
        self.connect_timeout = connect_timeout
        self._sock = sock
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.connections = 0
        self.bytes_in = 0          # client -> worker
        self.bytes_out = 0         # worker -> client
        self._start = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, sock=self._sock)
        except Exception as exc:  # pragma: no cover - bound sockets rarely fail here
            log.error("tunnel %s: cannot serve: %s", self.name, exc)
            self._sock.close()
            return
        if self._closed:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        peer = writer.get_extra_info("peername")
        up_writer = None
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.dest), self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                log.warning("tunnel %s: cannot reach %s:%s for %s: %s", self.name,
                            self.dest[0], self.dest[1], peer, exc or "timeout")
                return
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer, True),
                                 self._pipe(up_reader, writer, False))
        except asyncio.CancelledError:
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    with contextlib.suppress(Exception):
                        w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    inbound: bool) -> None:
        try:
            while True:
                data = await reader.read(BUFFER)
                if not data:
                    break
                if inbound:
                    self.bytes_in += len(data)
                    self.traffic.to_worker += len(data)
                else:
                    self.bytes_out += len(data)
                    self.traffic.to_client += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, ConnectionError, RuntimeError):
            # RuntimeError: uvloop's answer to write/write_eof on a transport the
            # other side already closed ("the handler is closed").
            with contextlib.suppress(Exception):
                writer.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        else:
            self._start.cancel()
            self._sock.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.close()
        for task in list(self._tasks):
            task.cancel()

    @property
    def closed(self) -> bool:
        return self._closed


class TunnelManager:
    """Opens tunnels on `host` with ports from `ports` (inclusive range)."""

    def __init__(self, host: str = "0.0.0.0", ports: tuple[int, int] = (0, 0),
                 connect_timeout: float = 10.0) -> None:
        self.host = host
        self.lo, self.hi = ports
        self.connect_timeout = connect_timeout
        self._next = self.lo
        self.tunnels: dict[Any, Tunnel] = {}
        self.traffic = Traffic()                # bytes of every tunnel, closed ones too

    def _bind(self, prefer: int | None = None) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        host = "" if self.host in ("", "*") else self.host
        candidates = [0] if self.lo == 0 else self._ports()
        # A preferred port (a job's port before a server restart) is tried first
        # when it is still a port this manager may use.
        preferred = (prefer is not None and 0 < prefer <= 65535
                     and (self.lo == 0 or self.lo <= prefer <= self.hi))
        if preferred:
            candidates = [prefer] + [p for p in candidates if p != prefer]
        last: OSError | None = None
        for port in candidates:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(64)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                last = exc
                if exc.errno in (errno.EADDRINUSE, errno.EACCES) or (preferred and port == prefer):
                    continue
                raise TunnelError(f"cannot listen on {self.host}:{port}: {exc}") from None
            if self.lo and not (preferred and port == prefer):
                self._next = port + 1 if port < self.hi else self.lo
            return sock
        raise TunnelError(f"no free tunnel port in {self.lo}-{self.hi} on {self.host}"
                          + (f" ({last})" if last else ""))

    def _ports(self) -> list[int]:
        """Every port of the range, starting after the last one handed out."""
        span = list(range(self.lo, self.hi + 1))
        start = self._next - self.lo if self.lo <= self._next <= self.hi else 0
        return span[start:] + span[:start]

    def open(self, name: Any, dest: tuple[str, int], prefer: int | None = None) -> Tunnel:
        """Bind now (raises TunnelError), serve from the next loop iteration.

        `prefer`: use this port if it is free and allowed, else any other.
        """
        if name in self.tunnels:
            self.close(name)
        tunnel = Tunnel(name, self._bind(prefer), dest, self.connect_timeout, self.traffic)
        self.tunnels[name] = tunnel
        return tunnel

    def close(self, name: Any) -> bool:
        tunnel = self.tunnels.pop(name, None)
        if tunnel is None:
            return False
        tunnel.close()
        return True

    def close_all(self) -> None:
        for name in list(self.tunnels):
            self.close(name)
