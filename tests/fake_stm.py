"""A fake MuxPi STM: the firmware's text protocol on a pty or a socket.

It behaves like the firmware's command table (sw/control/src/commands.c in
the MuxPi project): one command per line, `OK` after success, `Error
processing command` for bad arguments, `Unknown command` otherwise, echo on
until `echo off`. Tests can script answers: `answer_next(prefix, lines,
delay=...)` replaces the answer to the next command starting with `prefix`
(lines=None: stay silent), `answer_always` to every such command.
"""
from __future__ import annotations

import os
import selectors
import socket
import tempfile
import threading
import tty
from dataclasses import dataclass

from boruta.dryad.stm import StmBoard

OK = "OK"
ERROR = "Error processing command"
UNKNOWN = "Unknown command"


@dataclass
class _Script:
    prefix: str
    lines: list[str] | bytes | None
    delay: float
    times: int | None  # None: forever


class FakeStm:
    """Serve the STM protocol on `transport`: "pty", "socketpair", "unix", "tcp".

    Where the board connects: `path` (pty, unix, tcp) or `client_socket`
    (socketpair); `board()` builds an StmBoard either way.
    """

    def __init__(self, transport: str = "pty", *, current_ma: int = 250,
                 newline: str = "\n") -> None:
        self.transport = transport
        self.newline = newline
        # firmware state
        self.echo = True
        self.power = False
        self.mux = "ts"
        self.leds = {1: (0, 0, 0), 2: (0, 0, 0)}
        self.oled: list[tuple[int, int, str]] = []
        self.current_ma = current_ma
        self.ticks: list[int] = []
        self.received: list[str] = []  # every command line, in order
        self._scripts: list[_Script] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conn_fd: int | None = None
        self._conn_sock: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.path: str | None = None
        self.client_socket: socket.socket | None = None
        self._pty_slave: int | None = None

        if transport == "pty":
            master, slave = os.openpty()
            tty.setraw(slave)  # no line discipline echo before the board opens it
            self._pty_slave = slave
            self.path = os.ttyname(slave)
            self._serve_fd(master)
        elif transport == "socketpair":
            ours, theirs = socket.socketpair()
            self.client_socket = theirs
            self._conn_sock = ours
            self._serve_fd(ours.fileno())
        elif transport in ("unix", "tcp"):
            if transport == "unix":
                self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-stm-")
                where = os.path.join(self._tmpdir.name, "stm.sock")
                lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                lst.bind(where)
                self.path = where  # a plain path that is a socket
            else:
                lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                lst.bind(("127.0.0.1", 0))
                self.path = f"tcp://127.0.0.1:{lst.getsockname()[1]}"
            lst.listen(4)
            lst.setblocking(False)
            self._listener = lst
            self._sel.register(lst, selectors.EVENT_READ, "listen")
        else:
            raise ValueError(f"unknown transport {transport!r}")
        self._buf = bytearray()
        self._thread = threading.Thread(target=self._run, name="fake-stm", daemon=True)
        self._thread.start()

    # --- test controls ----------------------------------------------------------

    def board(self, timeout: float = 1.0) -> StmBoard:
        if self.client_socket is not None:
            return StmBoard.from_socket(self.client_socket, timeout=timeout)
        assert self.path is not None
        return StmBoard(self.path, timeout=timeout)

    def answer_next(self, prefix: str, lines: list[str] | bytes | None, *,
                    delay: float = 0.0, times: int = 1) -> None:
        """Answer the next `times` commands starting with `prefix` with `lines`
        (bytes: written as they are; None: no answer at all), after `delay`."""
        with self._lock:
            self._scripts.append(_Script(prefix, lines, delay, times))

    def answer_always(self, prefix: str, lines: list[str] | bytes | None, *,
                      delay: float = 0.0) -> None:
        with self._lock:
            self._scripts.append(_Script(prefix, lines, delay, None))

    def hang_up(self) -> None:
        """Close the connection as a crashed STM service would."""
        with self._lock:
            if self._conn_sock is not None:
                self._conn_sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w, self._pty_slave):
            if fd is not None:
                os.close(fd)
        if self._conn_sock is not None:
            self._conn_sock.close()
        elif self._conn_fd is not None:
            os.close(self._conn_fd)
        if self._listener is not None:
            self._listener.close()
        if self.client_socket is not None:
            self.client_socket.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
        self._sel.close()

    def __enter__(self) -> "FakeStm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- serving ----------------------------------------------------------------

    def _serve_fd(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._conn_fd = fd
        self._sel.register(fd, selectors.EVENT_READ, "conn")

    def _drop_conn(self) -> None:
        if self._conn_fd is None:
            return
        self._sel.unregister(self._conn_fd)
        if self._conn_sock is not None:
            self._conn_sock.close()
            self._conn_sock = None
        else:
            os.close(self._conn_fd)
        self._conn_fd = None

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select():
                if key.data == "wake":
                    return
                if key.data == "listen":
                    try:
                        conn, _addr = self._listener.accept()
                    except BlockingIOError:
                        continue
                    self._drop_conn()
                    self._conn_sock = conn
                    self._buf.clear()
                    self._serve_fd(conn.fileno())
                    continue
                try:
                    chunk = os.read(self._conn_fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: pty peer gone
                    chunk = b""
                if not chunk:
                    if self.transport == "pty":
                        continue  # our own slave fd keeps the pty; just wait
                    self._drop_conn()
                    continue
                self._buf += chunk
                while b"\n" in self._buf:
                    raw, _, rest = bytes(self._buf).partition(b"\n")
                    self._buf[:] = rest
                    self._line(raw.decode("ascii", "replace").strip("\r"))

    def _write(self, lines: list[str]) -> None:
        self._write_raw("".join(line + self.newline for line in lines).encode())

    def _write_raw(self, data: bytes) -> None:
        if self._conn_fd is None:
            return
        fd = self._conn_fd
        os.set_blocking(fd, True)
        try:
            os.write(fd, data)
        except OSError:
            pass
        finally:
            os.set_blocking(fd, False)

    def _line(self, line: str) -> None:
        with self._lock:
            self.received.append(line)
            script = next((s for s in self._scripts if line.startswith(s.prefix)), None)
            if script is not None and script.times is not None:
                script.times -= 1
                if script.times <= 0:
                    self._scripts.remove(script)
        if self.echo:
            self._write([line])
        if script is not None:
            if script.delay and self._stop.wait(script.delay):
                return
            if isinstance(script.lines, bytes):
                self._write_raw(script.lines)
            elif script.lines is not None:
                self._write(script.lines)
            return
        self._write(self._execute(line.split()))

    def _execute(self, args: list[str]) -> list[str]:
        if not args:
            return []
        cmd, rest = args[0], args[1:]
        handler = getattr(self, f"_cmd_{cmd}", None)
        if handler is None:
            return [UNKNOWN]
        try:
            out = handler(rest)
        except (ValueError, IndexError):
            return [ERROR]
        return [*out, OK]

    def _cmd_echo(self, args: list[str]) -> list[str]:
        if args:
            if args[0] not in ("on", "off"):
                raise ValueError
            self.echo = args[0] == "on"
        else:
            self.echo = not self.echo
        return [f"Echo is {'on' if self.echo else 'off'} now."]

    def _cmd_power(self, args: list[str]) -> list[str]:
        if not args:
            return ["on" if self.power else "off"]
        if args[0] == "on":
            self.power = True
        elif args[0] == "off":
            self.power = False
        elif args[0] == "tick":
            self.ticks.append(int(args[1]) if len(args) > 1 else 0)
            self.power = True
        else:
            raise ValueError
        return []

    def _cmd_dut(self, args: list[str]) -> list[str]:
        self.mux, self.power = "dut", True
        return []

    def _cmd_ts(self, args: list[str]) -> list[str]:
        self.mux, self.power = "ts", False
        return []

    def _cmd_led(self, args: list[str]) -> list[str]:
        n = int(args[0])
        if n not in (1, 2) or len(args) != 4:
            raise ValueError
        self.leds[n] = (int(args[1]), int(args[2]), int(args[3]))
        return []

    def _cmd_clr(self, args: list[str]) -> list[str]:
        self.oled.clear()
        return []

    def _cmd_text(self, args: list[str]) -> list[str]:
        if len(args) < 4 or args[2] not in ("on", "off", "inv"):
            raise ValueError
        self.oled.append((int(args[0]), int(args[1]), " ".join(args[3:])[:16]))
        return []

    def _cmd_current(self, args: list[str]) -> list[str]:
        return [str(self.current_ma if self.power else 0)]
