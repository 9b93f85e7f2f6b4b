"""What the server asks of a dryad: PutInMaintenance, Prepare, Healthcheck.

`DryadOperations` is upstream's Rusalka without its defects: a second
PutInMaintenance replaces the first blinker instead of leaking it, Prepare
checks the key before touching the session (and the user name it reports
after), and Healthcheck reports problems instead of only power-cycling the
DUT (and can be told never to power-cycle it).

The operations are coroutines; board and session calls are blocking, so
they run in worker threads. Board calls share one thread, which keeps them
in order and one at a time, as the STM needs. The three operations are
serialised by a lock; Healthcheck is not (it only reads the board).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from boruta.core.errors import BorutaError
from boruta.dryad.accounts import check_username, parse_public_key
from boruta.dryad.board import Board
from boruta.dryad.session import SessionBackend, SessionError

__all__ = ["DryadOperations", "HealthcheckFailed", "YELLOW", "OFF"]

log = logging.getLogger(__name__)

# Upstream's colours for the maintenance blinker: yellow, then off.
YELLOW = (96, 144, 0)
OFF = (0, 0, 0)


class HealthcheckFailed(BorutaError):
    """Healthcheck found problems (`problems`; the message joins them)."""

    code = "healthcheck_failed"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class DryadOperations:
    """The dryad's three operations over a board and a session backend.

    `user`: the session user created for each job. `blink_period`: how long
    each LED stays lit while in maintenance (upstream: 1 s).
    `healthcheck_power_tick`: whether Healthcheck cuts the DUT's power for
    `power_tick_seconds`; never, when False. `current_range`: the DUT current
    (amperes) that counts as sane. `maintenance_revokes_session`: entering
    maintenance also revokes the job key (nobody keeps access to a worker an
    administrator has taken over).
    """

    def __init__(self, board: Board, session_backend: SessionBackend,
                 user: str = "boruta-user", *, blink_period: float = 1.0,
                 healthcheck_power_tick: bool = True, power_tick_seconds: float = 1.0,
                 current_range: tuple[float, float] = (0.0, 5.0),
                 maintenance_revokes_session: bool = True) -> None:
        if not blink_period > 0:
            raise ValueError("blink_period must be positive")
        if not power_tick_seconds > 0:
            raise ValueError("power_tick_seconds must be positive")
        lo, hi = current_range
        if not lo < hi:
            raise ValueError("current_range must be (low, high) with low < high")
        self.board = board
        self.session = session_backend
        self.user = check_username(user)
        self.blink_period = blink_period
        self.healthcheck_power_tick = healthcheck_power_tick
        self.power_tick_seconds = power_tick_seconds
        self.current_range = (float(lo), float(hi))
        self.maintenance_revokes_session = maintenance_revokes_session
        self._board_thread = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="dryad-board")
        self._blinker: asyncio.Task | None = None
        self._blinker_started: dict[asyncio.Task, bool] = {}
        self._lock: asyncio.Lock | None = None
        self._closed = False

    # --- the operations ---------------------------------------------------------

    async def put_in_maintenance(self, msg: str = "maintenance") -> None:
        """Show `msg` on the OLED and blink the LEDs until Prepare.

        A display error is raised (and no blinker is started); LED errors
        while blinking are ignored, as upstream does.
        """
        async with self._op_lock():
            await self._stop_blinker()
            if self.maintenance_revokes_session:
                await asyncio.to_thread(self.session.revoke)
            await self._board(self.board.oled_clear)
            if msg and msg.strip():
                await self._board(self.board.oled_text, 0, 0, msg)
            self._blinker = asyncio.get_running_loop().create_task(
                self._blink(), name="dryad-maintenance-blinker")

    async def prepare(self, public_key_openssh: str) -> str:
        """Give the job user access with this key only; return the username.

        The key is checked first: a bad key changes nothing. Then the blinker
        stops and the session backend replaces any previous key. The name the
        backend reports goes to the server and on to the job's owner as the
        user to log in as, so it is checked too: if it is no POSIX user name,
        the session is revoked and SessionError raised.
        """
        parse_public_key(public_key_openssh)  # raises SessionError
        async with self._op_lock():
            await self._stop_blinker()
            username = await asyncio.to_thread(self.session.set_job_key, self.user,
                                               public_key_openssh)
            try:
                return check_username(username)
            except SessionError:
                await asyncio.to_thread(self.session.revoke)
                raise

    async def healthcheck(self) -> list[str]:
        """Check the board; return the problems found ([] when healthy)."""
        problems: list[str] = []
        lo, hi = self.current_range
        try:
            current = await self._board(self.board.read_current)
        except Exception as e:
            problems.append(f"cannot read the DUT current: {e}")
        else:
            if not isinstance(current, (int, float)) or not math.isfinite(current):
                problems.append(f"DUT current reading is not a number: {current!r}")
            elif not lo <= current <= hi:
                problems.append(f"DUT current {current:.3f} A is outside "
                                f"[{lo:g}, {hi:g}] A")
        if self.healthcheck_power_tick:
            try:
                await self._board(self.board.power_tick, self.power_tick_seconds)
            except Exception as e:
                problems.append(f"power tick failed: {e}")
        return problems

    async def require_healthy(self) -> None:
        """Healthcheck for the server link: raise HealthcheckFailed on any problem."""
        problems = await self.healthcheck()
        if problems:
            raise HealthcheckFailed(problems)

    # --- lifecycle and inspection ---------------------------------------------------

    @property
    def blinking(self) -> bool:
        return self._blinker is not None and not self._blinker.done()

    async def stop_blinking(self) -> None:
        """Stop the maintenance blinker, if any (it clears the OLED)."""
        async with self._op_lock():
            await self._stop_blinker()

    async def close(self) -> None:
        """Stop the blinker and the board thread. The board and session stay open."""
        if self._closed:
            return
        await self._stop_blinker()
        self._closed = True
        self._board_thread.shutdown(wait=True)

    # --- internals --------------------------------------------------------------

    def _op_lock(self) -> asyncio.Lock:
        if self._lock is None:  # made on first use, inside the running loop
            self._lock = asyncio.Lock()
        return self._lock

    async def _board(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a board call in the board thread.

        If the caller is cancelled, the call already running still finishes
        before the cancellation goes on, so no board command of a cancelled
        task lands after its cancellation has been awaited.
        """
        if self._closed:
            raise RuntimeError("DryadOperations is closed")
        fut = asyncio.get_running_loop().run_in_executor(
            self._board_thread, functools.partial(fn, *args))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await fut
            raise

    async def _stop_blinker(self) -> None:
        task, self._blinker = self._blinker, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not self._blinker_started.pop(task, False):
            # Cancelled before its first step: its clean-up never ran.
            await self._blink_cleanup()

    async def _blink(self) -> None:
        """LED1 yellow, wait, LED1 off, LED2 yellow, wait, LED2 off; again."""
        self._blinker_started[asyncio.current_task()] = True
        try:
            while True:
                for led in (1, 2):
                    await self._led(led, YELLOW)
                    await asyncio.sleep(self.blink_period)
                    await self._led(led, OFF)
        finally:
            await self._blink_cleanup()

    async def _blink_cleanup(self) -> None:
        """When the blinker stops: dark LEDs, empty display."""
        for led in (1, 2):
            await self._led(led, OFF)
        try:
            await self._board(self.board.oled_clear)
        except Exception as e:
            log.warning("clearing the OLED after maintenance failed: %s", e)

    async def _led(self, n: int, colour: tuple[int, int, int]) -> None:
        try:
            await self._board(self.board.set_led, n, *colour)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # upstream ignores LED errors too
            log.debug("LED %d: %s", n, e)
