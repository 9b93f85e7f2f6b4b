"""The MuxPi operations the dryad needs, and a simulated board.

A `Board` is synchronous and blocking: a real one talks to the MuxPi's STM
microcontroller over a serial line (see `boruta.dryad.stm.StmBoard`), and a
command can take as long as a power tick. The asyncio side
(`boruta.dryad.operations`) runs board calls in one worker thread, which also
keeps them in order.

Units and conventions, shared by every backend:

* LEDs are numbered 1 and 2; colour components are integers 0..255.
* OLED coordinates are non-negative integers; one call prints at most
  `OLED_TEXT_MAX` characters of printable ASCII (the STM firmware copies the
  text into a 17-byte buffer), so every backend passes text through
  `oled_safe_text` first and a simulated board shows what the hardware would.
* `read_current()` is the DUT's current draw in amperes (the STM reports
  milliamperes; 0 while the DUT is unpowered).
* `sdmux_to_dut()` / `sdmux_to_ts()` are the STM's `dut` / `ts` commands: on
  MuxPi `dut` connects the microSD card *and power* to the DUT and `ts`
  connects the card to the test server and cuts the DUT's power. The
  simulated board mirrors that.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

from boruta.core.errors import BorutaError

__all__ = [
    "BOARD_OPERATIONS",
    "Board",
    "BoardCall",
    "BoardError",
    "OLED_TEXT_MAX",
    "SimulatedBoard",
    "check_led",
    "oled_safe_text",
]

#: Characters one `text` command can show (the firmware's buffer is 16 + NUL).
OLED_TEXT_MAX = 16

#: The names of the operations every board has; fault injection takes these.
BOARD_OPERATIONS = (
    "dut_power_on",
    "dut_power_off",
    "power_tick",
    "sdmux_to_dut",
    "sdmux_to_ts",
    "set_led",
    "oled_clear",
    "oled_text",
    "read_current",
)


class BoardError(BorutaError):
    """A board operation failed.

    `op` is the operation ("set_led", ...), `command` the text sent to the
    STM (None for a simulated board) and `reply` what came back (lines, or
    None when nothing did). A BorutaError, so the server link can report it.
    """

    code = "board_failed"

    def __init__(
        self,
        op: str,
        problem: str,
        *,
        command: str | None = None,
        reply: list[str] | None = None,
    ) -> None:
        self.op = op
        self.problem = problem
        self.command = command
        self.reply = list(reply) if reply else None
        text = f"{op}: {problem}"
        if command is not None:
            text += f" (command {command!r}"
            if self.reply:
                shown = [r if len(r) <= 80 else r[:77] + "..." for r in self.reply[-5:]]
                text += f", reply {shown!r})"
            else:
                text += ", no reply)"
        super().__init__(text)


@runtime_checkable
class Board(Protocol):
    """What the dryad does with the MuxPi. Every method may raise BoardError."""

    def dut_power_on(self) -> None: ...

    def dut_power_off(self) -> None: ...

    def power_tick(self, seconds: float) -> None:
        """Cut the DUT's power for `seconds`, then restore it."""

    def sdmux_to_dut(self) -> None: ...

    def sdmux_to_ts(self) -> None: ...

    def set_led(self, n: int, r: int, g: int, b: int) -> None: ...

    def oled_clear(self) -> None: ...

    def oled_text(self, x: int, y: int, text: str) -> None: ...

    def read_current(self) -> float:
        """The DUT's current draw, in amperes."""

    def close(self) -> None: ...


# --- argument checks shared by the backends (bad arguments are caller bugs) --


def _check_int(name: str, value: Any, lo: int, hi: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}, not {value}")
    return value


def check_led(n: int, r: int, g: int, b: int) -> tuple[int, int, int, int]:
    _check_int("LED number", n, 1, 2)
    return (n, _check_int("red", r, 0, 255), _check_int("green", g, 0, 255),
            _check_int("blue", b, 0, 255))


def check_position(x: int, y: int) -> tuple[int, int]:
    return _check_int("x", x, 0, None), _check_int("y", y, 0, None)


def check_tick(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"power tick must be a number of seconds, not {seconds!r}")
    if not 0 < seconds <= 60:
        raise ValueError(f"power tick must be in (0, 60] seconds, not {seconds}")
    return float(seconds)


def oled_safe_text(text: str) -> str:
    """What the OLED can show of `text`: one line of printable ASCII.

    Anything else becomes '?', runs of whitespace become one space (the STM
    splits its command line on whitespace and joins the words with single
    spaces), and the result is cut to OLED_TEXT_MAX characters. Raises
    ValueError when nothing printable is left: the STM refuses an empty text.
    """
    if not isinstance(text, str):
        raise ValueError(f"OLED text must be a string, not {type(text).__name__}")
    cleaned = "".join(ch if " " <= ch <= "~" else ("?" if not ch.isspace() else " ")
                      for ch in text)
    cleaned = " ".join(cleaned.split())[:OLED_TEXT_MAX].rstrip()
    if not cleaned:
        raise ValueError("OLED text is empty")
    return cleaned


# --- simulated board ---------------------------------------------------------


class BoardCall(NamedTuple):
    """One call made on a SimulatedBoard."""

    time: float  # time.monotonic() when the call was made
    op: str
    args: tuple
    error: BaseException | None  # the fault it raised, if any


@dataclass
class _Faults:
    next: deque  # one-shot errors, oldest first
    always: BaseException | None = None


class SimulatedBoard:
    """A MuxPi that keeps state in memory and records every call.

    State: `power` (DUT powered), `sdmux` ("dut" or "ts"), `leds`
    ({1: (r, g, b), 2: ...}), `oled` (the (x, y, text) printed since the last
    clear). `current` is the draw (amperes) reported while the DUT is powered.
    Every call, failed or not, is appended to `calls` with a timestamp;
    `wait_for` lets a test wait for calls without sleeping.

    Fault injection: `fail_next(op, error)` makes the next call of `op` raise
    (repeatable: the errors queue up), `fail_always(op, error)` every call
    until `clear_faults`. A failed call leaves the state unchanged.
    Thread-safe.
    """

    def __init__(self, *, current: float = 0.25, power: bool = False,
                 sdmux: str = "ts") -> None:
        self.current = current
        self.power = power
        self.sdmux = sdmux
        self.leds: dict[int, tuple[int, int, int]] = {1: (0, 0, 0), 2: (0, 0, 0)}
        self.oled: list[tuple[int, int, str]] = []
        self.calls: list[BoardCall] = []
        self.closed = False
        self._faults: dict[str, _Faults] = {}
        self._cond = threading.Condition()

    # fault injection

    def fail_next(self, op: str, error: BaseException | None = None) -> None:
        self._faults_of(op).next.append(error or BoardError(op, "injected fault"))

    def fail_always(self, op: str, error: BaseException | None = None) -> None:
        self._faults_of(op).always = error or BoardError(op, "injected fault")

    def clear_faults(self, op: str | None = None) -> None:
        with self._cond:
            if op is None:
                self._faults.clear()
            else:
                self._faults.pop(self._known(op), None)

    # inspection

    def calls_of(self, op: str) -> list[BoardCall]:
        with self._cond:
            return [c for c in self.calls if c.op == op]

    def wait_for(self, predicate: Callable[["SimulatedBoard"], bool],
                 timeout: float) -> bool:
        """Wait until predicate(board) is true after some call; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    # the Board operations

    def dut_power_on(self) -> None:
        with self._call("dut_power_on"):
            self.power = True

    def dut_power_off(self) -> None:
        with self._call("dut_power_off"):
            self.power = False

    def power_tick(self, seconds: float) -> None:
        seconds = check_tick(seconds)
        with self._call("power_tick", seconds):
            self.power = True  # off for `seconds` (not simulated), then on

    def sdmux_to_dut(self) -> None:
        with self._call("sdmux_to_dut"):
            self.sdmux = "dut"
            self.power = True

    def sdmux_to_ts(self) -> None:
        with self._call("sdmux_to_ts"):
            self.sdmux = "ts"
            self.power = False

    def set_led(self, n: int, r: int, g: int, b: int) -> None:
        n, r, g, b = check_led(n, r, g, b)
        with self._call("set_led", n, r, g, b):
            self.leds[n] = (r, g, b)

    def oled_clear(self) -> None:
        with self._call("oled_clear"):
            self.oled.clear()

    def oled_text(self, x: int, y: int, text: str) -> None:
        x, y = check_position(x, y)
        text = oled_safe_text(text)
        with self._call("oled_text", x, y, text):
            self.oled.append((x, y, text))

    def read_current(self) -> float:
        with self._call("read_current"):
            return float(self.current) if self.power else 0.0

    def close(self) -> None:
        self.closed = True

    # internals

    @staticmethod
    def _known(op: str) -> str:
        if op not in BOARD_OPERATIONS:
            raise ValueError(f"unknown board operation {op!r}; one of {BOARD_OPERATIONS}")
        return op

    def _faults_of(self, op: str) -> _Faults:
        with self._cond:
            return self._faults.setdefault(self._known(op), _Faults(deque()))

    def _call(self, op: str, *args: Any) -> "_CallContext":
        return _CallContext(self, op, args)


class _CallContext:
    """Holds the board's lock for one call: checks faults, records, notifies."""

    def __init__(self, board: SimulatedBoard, op: str, args: tuple) -> None:
        self.board, self.op, self.args = board, op, args

    def __enter__(self) -> None:
        board = self.board
        board._cond.acquire()
        faults = board._faults.get(self.op)
        error = None
        if faults is not None:
            error = faults.next.popleft() if faults.next else faults.always
        if error is None and board.closed:
            error = BoardError(self.op, "board is closed")
        if error is not None:
            self._record(error)
            board._cond.release()
            raise error

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._record(exc)
        finally:
            self.board._cond.release()

    def _record(self, error: BaseException | None) -> None:
        self.board.calls.append(BoardCall(time.monotonic(), self.op, self.args, error))
        self.board._cond.notify_all()
