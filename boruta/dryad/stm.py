"""`StmBoard`: the MuxPi STM microcontroller's text protocol.

The STM firmware reads one command per line and answers `OK` when it is
done, `Error processing command` or `Unknown command` when it is not; a
query (`current`) prints its value on a line before the `OK`. It echoes
what it reads unless told `echo off` (answer: `Echo is off now.`, `OK`).

Commands used: `power on`, `power off`, `power tick <ms>`, `dut`, `ts`,
`led N R G B`, `clr`, `text X Y on TEXT`, `current` (milliamperes).

Where the STM is reached (`path`):

* a serial device or pseudo-terminal (`/dev/ttyS2` on MuxPi): opened raw,
  115200 baud, 8N1;
* `unix:/some/path`, or a path that is a unix socket: a stream socket
  speaking the same text (e.g. socat in front of the serial port). Upstream's
  `/run/stm.socket` speaks Go RPC instead, which this class cannot use;
* `tcp://host:port`: the same over TCP.

One command at a time (a lock), each with a deadline. Whatever goes wrong,
the caller gets a BoardError naming the command and what came back. After a
timeout or an unexpected answer the link is out of step (a late `OK` may
still be on its way), so the next command first resynchronises: it sends
`echo off` and discards everything up to that command's unique answer.
"""
from __future__ import annotations

import errno
import math
import os
import selectors
import socket
import stat
import termios
import threading
import time
import tty

from boruta.core.addresses import AddressError, split_host_port
from boruta.dryad.board import (
    BoardError,
    check_led,
    check_position,
    check_tick,
    oled_safe_text,
)

__all__ = ["DEFAULT_STM_PATH", "DEFAULT_STM_TIMEOUT", "StmBoard", "tcp_address"]

DEFAULT_STM_PATH = "/dev/ttyS2"
DEFAULT_STM_TIMEOUT = 2.0

_OK = "OK"
_ERRORS = ("Error processing command", "Unknown command")
_ECHO_OFF_ANSWER = "Echo is off now."
_MAX_LINE = 256  # the STM's answers are short; longer is noise


def tcp_address(path: str) -> tuple[str, int] | None:
    """(host, port) of a `tcp://HOST:PORT` STM path, None for any other kind of path.

    Raises AddressError (naming the host or the port) for a tcp:// path that
    is no address.
    """
    if not path.startswith("tcp://"):
        return None
    return split_host_port(path[len("tcp://"):])


class StmBoard:
    """A Board backed by the MuxPi STM (see the module docstring).

    `timeout` bounds each command (a power tick gets its duration on top).
    The constructor connects and turns the STM's echo off; it raises
    BoardError when the STM does not answer.
    """

    def __init__(self, path: str = DEFAULT_STM_PATH, *,
                 timeout: float = DEFAULT_STM_TIMEOUT, baudrate: int = 115200) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._fd = -1
        try:
            self._open(path, baudrate)
        except (OSError, AddressError) as e:
            raise BoardError("open", f"cannot open STM at {path!r}: {e}") from e
        self._init_common()

    @classmethod
    def from_socket(cls, sock: socket.socket, *,
                    timeout: float = DEFAULT_STM_TIMEOUT) -> "StmBoard":
        """An StmBoard over an already connected stream socket (it takes it over)."""
        self = cls.__new__(cls)
        self.path = f"<socket fd {sock.fileno()}>"
        self.timeout = timeout
        self._sock = sock
        sock.setblocking(False)
        self._fd = sock.fileno()
        self._init_common()
        return self

    # --- Board operations ---------------------------------------------------

    def dut_power_on(self) -> None:
        self.command("power on", op="dut_power_on")

    def dut_power_off(self) -> None:
        self.command("power off", op="dut_power_off")

    def power_tick(self, seconds: float) -> None:
        seconds = check_tick(seconds)
        ms = max(1, round(seconds * 1000))
        self.command(f"power tick {ms}", op="power_tick",
                     timeout=self.timeout + seconds)

    def sdmux_to_dut(self) -> None:
        self.command("dut", op="sdmux_to_dut")

    def sdmux_to_ts(self) -> None:
        self.command("ts", op="sdmux_to_ts")

    def set_led(self, n: int, r: int, g: int, b: int) -> None:
        n, r, g, b = check_led(n, r, g, b)
        self.command(f"led {n} {r} {g} {b}", op="set_led")

    def oled_clear(self) -> None:
        self.command("clr", op="oled_clear")

    def oled_text(self, x: int, y: int, text: str) -> None:
        x, y = check_position(x, y)
        self.command(f"text {x} {y} on {oled_safe_text(text)}", op="oled_text")

    def read_current(self) -> float:
        cmd = "current"
        value = self.command(cmd, op="read_current", want_value=True)
        try:
            milliamps = float(value)
        except (TypeError, ValueError):
            milliamps = math.nan
        if not math.isfinite(milliamps):
            raise BoardError("read_current", "not a number", command=cmd, reply=[value])
        return milliamps / 1000.0

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._selector.close()
            if self._sock is not None:
                self._sock.close()
            else:
                os.close(self._fd)

    def __enter__(self) -> "StmBoard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the protocol ---------------------------------------------------------

    def command(self, cmd: str, *, op: str | None = None, want_value: bool = False,
                timeout: float | None = None) -> str | None:
        """Send one command line; return the value line when `want_value`.

        Raises BoardError (with `op`, default the command's first word) when
        the STM answers an error, anything unexpected, or nothing in time.
        """
        if "\n" in cmd or "\r" in cmd:
            raise ValueError("an STM command is one line")
        op = op or cmd.split(" ", 1)[0]
        with self._lock:
            if self._closed:
                raise BoardError(op, "STM link is closed", command=cmd)
            if self._out_of_step:
                self._resync(op, cmd)
            try:
                return self._exchange(op, cmd, want_value,
                                      self.timeout if timeout is None else timeout)
            except BoardError:
                self._out_of_step = True
                raise

    def _exchange(self, op: str, cmd: str, want_value: bool, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        self._drain()
        self._send(op, cmd, deadline)
        seen: list[str] = []
        value: str | None = None
        while True:
            line = self._read_line(op, cmd, deadline, seen, timeout)
            if line == "" or (line == cmd and not seen):
                continue  # blank line, or our own command echoed back
            seen.append(line)
            if line == _OK:
                if want_value and value is None:
                    raise BoardError(op, "no value before OK", command=cmd, reply=seen)
                return value
            if line in _ERRORS or line.startswith(("ERR", "Error")):
                raise BoardError(op, "STM refused the command", command=cmd, reply=seen)
            if want_value and value is None:
                value = line
                continue
            raise BoardError(op, "unexpected answer", command=cmd, reply=seen)

    def _resync(self, op: str, cmd: str) -> None:
        """Skip stale answers: send `echo off`, discard up to its answer."""
        deadline = time.monotonic() + self.timeout
        self._drain()
        self._send(op, "echo off", deadline)
        seen: list[str] = []
        while True:
            line = self._read_line(op, cmd, deadline, seen, self.timeout, resync=True)
            seen.append(line)
            if line == _ECHO_OFF_ANSWER:
                break
        ok = self._read_line(op, cmd, deadline, seen, self.timeout, resync=True)
        if ok != _OK:
            seen.append(ok)
            raise BoardError(op, "STM out of step and did not resynchronise",
                             command=cmd, reply=seen)
        self._out_of_step = False

    # --- bytes and lines ------------------------------------------------------

    def _init_common(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._buf = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        # Turning echo off is also how a new link gets in step.
        self._out_of_step = True
        try:
            with self._lock:
                self._resync("open", "echo off")
        except BoardError:
            self.close()
            raise

    def _open(self, path: str, baudrate: int) -> None:
        address = tcp_address(path)
        if address is not None:
            sock = socket.create_connection(address, timeout=self.timeout)
        elif path.startswith("unix:") or (os.path.exists(path)
                                          and stat.S_ISSOCK(os.stat(path).st_mode)):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(path[len("unix:"):] if path.startswith("unix:") else path)
            except OSError:
                sock.close()
                raise
        else:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                if os.isatty(fd):
                    _serial_raw(fd, baudrate)
            except (OSError, termios.error):
                os.close(fd)
                raise
            self._fd = fd
            return
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()

    def _send(self, op: str, cmd: str, deadline: float) -> None:
        data = (cmd + "\n").encode("ascii", "replace")
        while data:
            try:
                n = os.write(self._fd, data)
            except BlockingIOError:
                n = 0
                if not self._wait(deadline, selectors.EVENT_WRITE):
                    raise BoardError(op, "timed out sending", command=cmd) from None
            except OSError as e:
                raise BoardError(op, f"cannot send: {e}", command=cmd) from e
            data = data[n:]

    def _read_line(self, op: str, cmd: str, deadline: float, seen: list[str],
                   timeout: float, resync: bool = False) -> str:
        while True:
            nl = self._buf.find(b"\n")
            if 0 <= nl <= _MAX_LINE:
                raw = bytes(self._buf[:nl])
                del self._buf[:nl + 1]
                return raw.decode("ascii", "replace").strip()
            if len(self._buf) > _MAX_LINE and resync:
                # noise while looking for the marker: skip it, line by line
                del self._buf[:nl + 1 if nl >= 0 else len(self._buf)]
                continue
            if len(self._buf) > _MAX_LINE:
                junk = bytes(self._buf[:80]).decode("ascii", "replace")
                self._buf.clear()
                raise BoardError(op, "answer line too long", command=cmd,
                                 reply=seen + [junk + "..."])
            if not self._wait(deadline, selectors.EVENT_READ):
                partial = self._buf.decode("ascii", "replace").strip()
                what = "timed out resynchronising" if resync else "timed out waiting for OK"
                raise BoardError(op, f"{what} ({timeout:g}s)", command=cmd,
                                 reply=seen + ([partial] if partial else []))
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                continue
            except OSError as e:
                raise BoardError(op, f"cannot read: {e}", command=cmd, reply=seen) from e
            if not chunk:
                raise BoardError(op, "STM closed the link", command=cmd, reply=seen)
            self._buf += chunk

    def _drain(self) -> None:
        """Discard whatever arrived unasked (stale answers, noise)."""
        self._buf.clear()
        while self._selector.select(0):
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                return  # the read in the exchange will report it
            if not chunk:
                return

    def _wait(self, deadline: float, event: int) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if event == selectors.EVENT_READ:
            return bool(self._selector.select(remaining))
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, event)
            return bool(sel.select(remaining))


def _serial_raw(fd: int, baudrate: int) -> None:
    """Raw 8N1 at `baudrate` (a pseudo-terminal ignores the speed)."""
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, f"B{baudrate}", None)
    if speed is None:
        raise OSError(errno.EINVAL, f"unsupported baud rate {baudrate}")
    attrs[2] &= ~(termios.PARENB | termios.CSTOPB | termios.CSIZE)
    attrs[2] |= termios.CS8 | termios.CLOCAL | termios.CREAD
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
