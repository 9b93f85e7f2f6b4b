"""`boruta top`: the farm live, as htop shows processes.

Three parts. The model (top_model.FarmModel) is what is known, with no I/O.
The view (`render`) turns the model into rich renderables. The shell
(`TopShell` and the `top` command) lists the farm, follows the event stream,
looks up what events leave out, reads keys and refreshes the screen.

When the shell lists the farm again (a *sync*), and why:
- at the start, and when a stream is opened again after the server was lost:
  events sent meanwhile are gone;
- when event numbers show a gap (a reader that falls behind loses events) or
  go back (the server restarted);
- every RESYNC_EVERY seconds otherwise: the queue beyond the loaded head is
  followed only as a count, and a list and the stream are not one snapshot,
  so an event that crossed a list can leave a worker's state stale until then.
A sync costs the server one scan of its requests for each of two lists (as a
`boruta request list` does) and the workers' list.
"""
from __future__ import annotations

import math
import os
import select
import sys
import termios
import time
import tty
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any, Callable, TextIO

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from boruta.cli import output as out
from boruta.cli.errors import is_unreachable, sigterm_interrupts
from boruta.cli.options import CONTEXT, ParsedType, global_options, json_mode
from boruta.cli.parse import parse_duration
from boruta.cli.session import client_session, events_endpoint, server_endpoint
from boruta.cli.top_model import SORTS, FarmModel, QueueView, Transition, WaitRow
from boruta.core.durations import format_duration
from boruta.core.errors import BorutaError, NotFoundError
from boruta.core.types import ListInfo, Paginator, ReqState, RequestFilter, SortInfo
from boruta.transport.errors import HandshakeError, WaitTimeoutError

QUEUE_LOADED = 5000        # WAITING requests a sync loads (the head); the rest is a count
RESYNC_EVERY = 60.0        # seconds between syncs when nothing calls for one sooner
RETRY_EVERY = 5.0          # seconds between attempts to reach a lost server
LOOKUPS_PER_FRAME = 100    # requests and workers looked up per refresh, at most
KEY_POLL = 0.1             # seconds between looks at the keyboard
DEFAULT_INTERVAL = 1.0
ONCE_QUEUE_ROWS = 20       # rows without a terminal to size them by
ONCE_TRANSITION_ROWS = 10

STATE_STYLES = {              # the dashboard's colours
    "IDLE": "green", "RUNNING": "blue", "PREPARE": "yellow", "MAINTENANCE": "grey50",
    "FAILED": "red", "BUSY": "dark_orange", "REMOVED": "dim",
    "WAITING": "yellow", "IN PROGRESS": "blue", "DONE": "green", "CANCELLED": "dim",
    "TIMEOUT": "red", "INVALID": "red",
}


# ---------------------------------------------------------------------- keys
class Action(Enum):
    QUIT = "quit"
    SORT = "sort"
    DEVICE_TYPE = "device type"
    PAUSE = "pause"


KEYS: dict[str, Action] = {"q": Action.QUIT, "Q": Action.QUIT, "s": Action.SORT,
                           "d": Action.DEVICE_TYPE, "p": Action.PAUSE}


@dataclass(frozen=True)
class Controls:
    """What the keys change: the queue's sort, the device-type filter, pause, quit."""
    sort: str = SORTS[0]
    device_type: str | None = None
    paused: bool = False
    quit: bool = False


def press(controls: Controls, key: str, device_types: list[str]) -> Controls:
    """The controls after one key; keys without an action change nothing."""
    action = KEYS.get(key)
    if action is Action.QUIT:
        return replace(controls, quit=True)
    if action is Action.SORT:
        return replace(controls, sort=SORTS[(SORTS.index(controls.sort) + 1) % len(SORTS)])
    if action is Action.DEVICE_TYPE:
        return replace(controls, device_type=_next_device_type(controls.device_type,
                                                               device_types))
    if action is Action.PAUSE:
        return replace(controls, paused=not controls.paused)
    return controls


def _next_device_type(current: str | None, device_types: list[str]) -> str | None:
    """all -> each device type seen, in order -> all. A filter on a type no longer seen
    moves on to the first type after it."""
    if current is None:
        return device_types[0] if device_types else None
    later = [t for t in device_types if t > current]
    return later[0] if later else None


class Keyboard:
    """Single keys from the terminal on stdin, without Enter (cbreak mode: Ctrl-C still
    interrupts); the terminal's settings come back on the way out, whatever the way.
    Without a terminal on stdin there are no keys."""

    def __init__(self, stream: TextIO | None = None) -> None:
        stream = stream if stream is not None else sys.stdin
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None
        self.active = self.fd is not None and os.isatty(self.fd)
        self._saved: list[Any] | None = None

    def __enter__(self) -> "Keyboard":
        if self.active:
            assert self.fd is not None
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            assert self.fd is not None
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def read(self, timeout: float = 0.0) -> str:
        """The keys typed so far, waiting up to `timeout` for one ("" when none)."""
        if not self.active:
            if timeout > 0:
                time.sleep(timeout)
            return ""
        assert self.fd is not None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        data = os.read(self.fd, 64)
        if not data:
            self.active = False              # the terminal went away
        return data.decode("utf-8", "ignore")


# ---------------------------------------------------------------------- the view
@dataclass(frozen=True)
class Frame:
    """What a frame shows besides the model."""
    server: str
    now: float                       # wall time (epoch seconds): ages are measured to it
    height: int | None = None        # the screen's lines; None: fixed numbers of rows
    status: str | None = None        # a problem to show (server lost, ...)
    keys: bool = False               # show the keys' line


def _styled(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _counts(label: str, counts: dict[str, int]) -> Text:
    text = Text.assemble((f"{label:<9}", "bold"), f"{sum(counts.values()):>4}")
    for state, count in counts.items():
        text.append("   ")
        text.append_text(_styled(state))
        text.append(f" {count}")
    return text


def _table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False,
                  padding=(0, 2, 0, 0), show_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="ellipsis",
                         justify="right" if column in right else "left")
    return table


def _duration(seconds: float | None) -> str:
    return out.NONE if seconds is None else format_duration(seconds)


def _waited(seconds: float) -> str:
    return format_duration(seconds) if seconds >= 0 else f"starts in {format_duration(-seconds)}"


def _clock(at: str) -> str:
    """An event's time as the local time of day."""
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return at or out.NONE


def _queue_table(view: QueueView, controls: Controls) -> RenderableType:
    what = f"device type {controls.device_type}" if controls.device_type else "all device types"
    notes = []
    if view.beyond and controls.device_type is None:
        notes.append(f"+{view.beyond} past the first {QUEUE_LOADED} loaded")
    if view.unresolved:
        notes.append(f"{view.unresolved} being looked up")
    title = Text.assemble(("Queue", "bold"), f": {view.waiting} waiting ({what}), "
                          f"by {controls.sort}" + (f"; {', '.join(notes)}" if notes else ""))
    if not view.rows:
        return Group(title, Text("  nothing waiting", style="dim"))
    table = _table("ID", "PRI", "DEVICE TYPE", "CAPS", "OWNER", "WAITED", right=("ID", "PRI"))
    for row in view.rows:
        others = {k: v for k, v in row.caps.items() if k != "device_type"}
        table.add_row(str(row.id), str(row.priority), row.device_type, out.fmt_caps(others),
                      row.owner or out.NONE, _waited(row.waited))
    return Group(title, table)


def _waits_table(rows: list[WaitRow]) -> RenderableType:
    title = Text.assemble(("Waits", "bold"), ": valid-after to IN PROGRESS, "
                          "over the starts seen since top began")
    table = _table("DEVICE TYPE", "WAITING", "OLDEST", "STARTS", "P50", "P90", "MAX",
                   right=("WAITING", "OLDEST", "STARTS", "P50", "P90", "MAX"))
    for row in rows:
        table.add_row(row.device_type or "all", str(row.waiting), _duration(row.oldest),
                      str(row.started), _duration(row.p50), _duration(row.p90),
                      _duration(row.max))
    return Group(title, table)


def _transitions_table(transitions: list[Transition]) -> RenderableType:
    title = Text("Recent transitions", style="bold")
    if not transitions:
        return Group(title, Text("  none yet", style="dim"))
    table = _table("TIME", "WHAT", "STATE", "REASON")
    for t in transitions:
        reason = t.reason or out.NONE
        if t.worker and t.state == str(ReqState.INPROGRESS):
            reason += f" ({t.worker})"
        table.add_row(_clock(t.at), f"{t.kind} {t.subject}", _styled(t.state), reason)
    return Group(title, table)


def _row_budget(height: int | None, wait_rows: int) -> tuple[int, int]:
    """Rows for the queue and for the transitions: what the screen leaves, 3 to 2."""
    if height is None:
        return ONCE_QUEUE_ROWS, ONCE_TRANSITION_ROWS
    fixed = 15 + wait_rows          # titles, headers, counts, blank lines, the keys' line
    left = max(2, height - fixed)
    queue = max(1, math.ceil(left * 0.6))
    return queue, max(1, left - queue)


def render(model: FarmModel, controls: Controls, frame: Frame) -> RenderableType:
    """One screen: counts, the queue's head, waits, recent transitions (and the keys)."""
    flt = controls.device_type
    waits = model.wait_rows(frame.now, flt)
    if frame.height is not None:                 # many device types: `d` shows each
        waits = waits[:max(2, frame.height // 4)]
    queue_rows, transition_rows = _row_budget(frame.height, len(waits))
    header = Text.assemble(("boruta top", "bold"), f"  {frame.server}  ",
                           time.strftime("%H:%M:%S", time.localtime(frame.now)))
    if controls.paused:
        header.append("  PAUSED", style="bold reverse")
    parts: list[RenderableType] = [header]
    if frame.status:
        parts.append(Text(frame.status, style="bold red"))
    parts += [
        _counts("Workers", model.worker_counts(flt)),
        _counts("Requests", model.request_counts(flt)),
        Text(""),
        _queue_table(model.queue(frame.now, controls.sort, flt, queue_rows), controls),
        Text(""),
        _waits_table(waits),
        Text(""),
        _transitions_table(model.recent_transitions(flt, transition_rows)),
    ]
    if frame.keys:
        parts += [Text(""), Text.assemble(
            ("q", "bold"), " quit  ", ("s", "bold"), f" sort: {controls.sort}  ",
            ("d", "bold"), f" device type: {flt or 'all'}  ",
            ("p", "bold"), " resume" if controls.paused else " pause", style="dim")]
    return Group(*parts)


# ---------------------------------------------------------------------- the shell
def list_all(fetch: Callable[[Paginator], tuple[list[Any], ListInfo]],
             border: Callable[[Any], Any], first: Any) -> list[Any]:
    """Every item of a list, page after page (a reply too large for the server's limit
    is cut, and `remaining` says how many follow)."""
    items: list[Any] = []
    after = first
    while True:
        page, info = fetch(Paginator(id=after))
        items += page
        if not page or not info.remaining_items:
            return items
        after = border(page[-1])


class TopShell:
    """Fills the model from the server: lists, the event stream and look-ups."""

    def __init__(self, client: Any, model: FarmModel,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.model = model
        self.clock = clock
        self.stream: Any = None
        self.synced_at = -math.inf
        self.heard_at = clock()
        self.status: str | None = None
        self.retry_at = -math.inf

    def sync(self) -> None:
        """List the workers, the jobs and the head of the queue; the model starts over
        from them (its transitions and waits stay)."""
        self.drain()                                  # what came before the lists
        client = self.client
        workers = list_all(lambda p: client.list_workers(None, None, p),
                           lambda w: w.worker_uuid, "")
        waiting, info = client.list_requests(RequestFilter(states=(ReqState.WAIT,)),
                                             SortInfo("priority"),
                                             Paginator(id=0, limit=QUEUE_LOADED))
        running = list_all(lambda p: client.list_requests(
            RequestFilter(states=(ReqState.INPROGRESS,)), None, p), lambda r: r.id, 0)
        self.model.load(workers, [*waiting, *running], waiting_total=info.total_items)
        self.synced_at = self.clock()

    def look_up(self, limit: int = LOOKUPS_PER_FRAME) -> None:
        """Details the events left out: a new request's caps, a new worker's."""
        req_ids, uuids = self.model.lookups(limit)
        for req_id in req_ids:
            try:
                self.model.learn_request(req_id, self.client.get_request_info(req_id))
            except NotFoundError:
                self.model.learn_request(req_id, None)
        for uuid in uuids:
            try:
                self.model.learn_worker(uuid, self.client.get_worker_info(uuid))
            except NotFoundError:
                self.model.learn_worker(uuid, None)

    def refresh(self) -> None:
        """Before a frame: sync when due, then the look-ups."""
        if self.model.needs_sync or self.clock() - self.synced_at >= RESYNC_EVERY:
            self.sync()
        self.look_up()

    def open_stream(self) -> None:
        self.close_stream()
        self.stream = self.client.events()
        self.heard_at = self.clock()
        self.model.needs_sync = True         # what happened before it is not on it

    def close_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def follow(self, seconds: float) -> None:
        """Apply the events that come within `seconds`. A stream quiet for longer than
        the server's ticks allow is checked with a ping (the stream's own silence check
        restarts with each short read)."""
        if self.stream is None:
            return
        deadline = self.clock() + seconds
        while True:
            left = deadline - self.clock()
            if left <= 0:
                break
            try:
                event = self.stream.next(timeout=left)
            except WaitTimeoutError:
                break
            self.model.apply(event)
            self.heard_at = self.clock()
        if self.clock() - self.heard_at > self.stream.idle_limit:
            self.client.ping()
            self.heard_at = self.clock()

    def drain(self) -> None:
        """Apply the events already waiting."""
        if self.stream is not None:
            self.follow(0.001)

    def step(self, seconds: float, frame_due: bool) -> None:
        """One turn of the live loop: reach the server if lost, refresh when a frame is
        due, follow the stream. Trouble is shown, not raised, except a refused key."""
        try:
            if self.stream is None:
                if self.clock() < self.retry_at:
                    return
                self.open_stream()
            if frame_due:
                self.refresh()
                self.status = None
            self.follow(seconds)
        except HandshakeError:
            raise
        except BorutaError as exc:
            if is_unreachable(exc):
                self.close_stream()
                self.retry_at = self.clock() + RETRY_EVERY
                self.status = (f"{exc.message or 'the server does not answer'}; trying again "
                               f"every {format_duration(RETRY_EVERY)}")
            else:
                self.status = f"{exc.code}: {exc.message}"


def run_once(shell: TopShell, controls: Controls, server: str, as_json: bool) -> None:
    shell.sync()
    now = time.time()
    if as_json:
        out.print_json(shell.model.snapshot(now, controls.sort, controls.device_type,
                                            ONCE_QUEUE_ROWS, ONCE_TRANSITION_ROWS))
    else:
        out.Printer().print(render(shell.model, controls, Frame(server, now)))


def run_live(shell: TopShell, controls: Controls, server: str, interval: float,
             keyboard: Keyboard, console: Console) -> None:
    """Frames every `interval` seconds (and at once after a key) until `q`. On a terminal
    the frame fills the screen; otherwise each frame is printed after the last. Paused,
    the stream is not read (a long pause loses events: the next frame syncs)."""
    on_screen = console.is_terminal
    live = Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                redirect_stderr=False) if on_screen else None
    printer = out.Printer(console.file)
    next_frame = shell.clock()
    shown_at = time.time()

    def show() -> None:
        nonlocal shown_at
        if not controls.paused:
            shown_at = time.time()           # paused, ages stay as they were
        frame = Frame(server, shown_at, console.size.height if on_screen else None,
                      shell.status, keys=keyboard.active)
        view = render(shell.model, controls, frame)
        if live is not None:
            live.update(view, refresh=True)
        else:
            printer.print(Group(view, Text("")))

    with live if live is not None else nullcontext():
        while True:
            idle = controls.paused or shell.stream is None
            typed = keyboard.read(KEY_POLL if idle else 0.0)
            if typed:
                for key in typed:
                    controls = press(controls, key, shell.model.device_types())
                    if controls.quit:
                        return
                show()
            if controls.paused:
                continue
            now = shell.clock()
            due = now >= next_frame
            shell.step(min(KEY_POLL, max(0.001, next_frame - now)), due)
            if due:
                show()
                next_frame = shell.clock() + interval


INTERVAL = ParsedType("duration", parse_duration)


@click.command("top", context_settings=CONTEXT)
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@click.option("--interval", type=INTERVAL, default=DEFAULT_INTERVAL, metavar="S",
              show_default=True, help="Seconds (or 1m) between refreshes.")
@click.option("--device-type", "device_type", metavar="TYPE",
              help="Show only this device type at first (d cycles through the others).")
@global_options()
def top(once: bool, interval: float, device_type: str | None) -> None:
    """Watch the farm live: workers by state, the queue, waits and recent transitions.

    The screen refreshes every --interval seconds from the server's event
    stream. Keys: q quit, s sort the queue (priority, age, device type),
    d show one device type (each one seen in turn, then all again), p pause.
    Ctrl-C or SIGTERM also quit. Without a terminal, each frame is printed
    after the last; --once prints one frame, --once --json the same as JSON.

    \b
    Examples:
      boruta top
      boruta top --device-type rpi4 --interval 5
      boruta top --once
      boruta top --once --json
    """
    as_json = json_mode()
    if as_json and not once:
        raise click.UsageError("--json needs --once: the live view is for people")
    if device_type is not None and not device_type.strip():
        raise click.BadParameter("a device type cannot be empty", param_hint="'--device-type'")
    controls = Controls(device_type=device_type)
    server = server_endpoint()
    if once:
        with client_session() as client:
            run_once(TopShell(client, FarmModel()), controls, server, as_json)
        return
    try:
        with sigterm_interrupts(), client_session(events_endpoint=events_endpoint()) as client:
            shell = TopShell(client, FarmModel())
            try:
                with Keyboard() as keyboard:
                    run_live(shell, controls, server, interval, keyboard, out.make_console())
            finally:
                shell.close_stream()
    except KeyboardInterrupt:
        return
