"""The pytest plugin: a test that asks for `boruta_device` gets a board from a Boruta farm.

    @pytest.mark.boruta(device_type="rpi4", usb="yes", priority=4)
    def test_boots(boruta_device):
        assert boruta_device.run("uname -m").stdout == "aarch64\\n"

The fixture files a request held by a lease, waits for a worker (saying so
on the terminal: the request's ID, its state and place in the queue), logs
in over SSH and yields a `boruta.device.Device`. While the test runs, the
client renews the lease and a thread prolongs the job before its timeout;
at teardown (a pass, a failure, Ctrl-C) the request is closed. A test
process that dies without a teardown stops renewing, and the server closes
the request when the lease's grace has passed.

Registered through the `pytest11` entry point, so it is loaded wherever
boruta is installed: until a collected test uses the fixture it only adds
its options and its marker (no client is imported, nothing connects,
nothing is printed).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import pytest

if TYPE_CHECKING:
    from boruta.device import Device
    from boruta.transport.client import Client

log = logging.getLogger("boruta.pytest")

FIXTURE = "boruta_device"
MARKER = "boruta"
ON_TIMEOUT = ("fail", "skip")
DEFAULT_PRIORITY = 8            # as `boruta request new`: halfway between 1 and 16
DEFAULT_WAIT = 3600.0           # as `boruta request new --wait`
FIRST_LOOK = 2.0                # seconds of waiting before the first progress line
PROGRESS_MAX = 60.0             # then the pauses between lines double, up to this
MIN_PROLONG_GAP = 1.0           # seconds between two prolongations, at the least

#: Option suffix -> (metavar, help); each is `--boruta-<suffix>` and ini `boruta_<suffix>`.
OPTIONS: dict[str, tuple[str, str]] = {
    "server": ("ENDPOINT", "the server's client endpoint, e.g. tcp://farm:7175 "
                           "(default: the client config's)"),
    "client-config": ("PATH", "the client config file (default: $BORUTA_CLIENT_CONFIG, "
                              "else ~/.config/boruta/client.toml)"),
    "caps": ("KEY=VALUE", "a capability of the board, for tests without a boruta marker; "
                          "repeat for more"),
    "priority": ("N", f"the requests' priority, 1 (most important) to 16 "
                      f"(default {DEFAULT_PRIORITY}; a marker's priority= wins)"),
    "timeout": ("DURATION", "how long to wait for a board: seconds or 90s, 10m, 2h "
                            "(default 1h)"),
    "on-timeout": ("fail|skip", "what a test becomes when no board comes in time "
                                "(default fail)"),
    "lease": ("DURATION", "the lease's grace: a test process that dies frees its board "
                          "this long after (default: the client's, 4m)"),
}


class NoBoard(Exception):
    """No board for the test: none came in time, or the farm has none with the caps.
    The test fails or is skipped, as --boruta-on-timeout says."""


class BoardError(Exception):
    """The board could not be had or reached for another reason (the test fails)."""


@dataclass(frozen=True)
class Settings:
    """The plugin's options, from the command line, else the ini file, else defaults."""

    server: str | None = None
    client_config: str | None = None
    caps: Mapping[str, str] | None = None
    priority: int = DEFAULT_PRIORITY
    timeout: float = DEFAULT_WAIT
    on_timeout: str = "fail"
    lease: float | None = None          # None: the client's default grace


@dataclass(frozen=True)
class Wish:
    """What one test asks the farm for."""

    caps: Mapping[str, str]
    priority: int
    expr: tuple[str, ...] = ()           # capability expressions, canonical

    def caps_text(self) -> str:
        return " ".join([*(f"{key}={value}" for key, value in self.caps.items()),
                         *(repr(e) for e in self.expr)])

    def describe(self) -> str:
        return f"{self.caps_text()}, priority {self.priority}"


# ---------------------------------------------------------------------- pytest hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("boruta", "boards from a Boruta farm (the boruta_device fixture)")
    for suffix, (metavar, text) in OPTIONS.items():
        group.addoption(f"--boruta-{suffix}", dest=_dest(suffix), metavar=metavar, help=text,
                        action="append" if suffix == "caps" else "store", default=None)
        parser.addini(_dest(suffix), f"{text} (as --boruta-{suffix})",
                      type="args" if suffix == "caps" else None, default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(KEY=VALUE..., caps={{...}}, expr=[...], priority=N): the capabilities "
                   f"(and priority) of the board the {FIXTURE} fixture requests")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once a collected test uses a board: the settings are read, and every such test
    must know which board it wants; else a usage error, before any test runs. (Not
    earlier: a run without such tests does not even read the settings.)"""
    users = [item for item in session.items if FIXTURE in getattr(item, "fixturenames", ())]
    if not users:
        return
    settings = settings_of(session.config)
    problems = []
    for item in users:
        try:
            wish_for(item, settings)
        except ValueError as exc:
            problems.append(f"{item.nodeid}: {exc}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise pytest.UsageError("boruta: " + "\n  ".join(problems[:5]) + more)


@pytest.fixture
def boruta_device(request: pytest.FixtureRequest) -> Iterator[Device]:
    """A board from the Boruta farm for this test, with the caps of its `boruta` marker
    (else --boruta-caps); the request is closed when the test ends."""
    settings = settings_of(request.config)
    try:
        wish = wish_for(request.node, settings)     # a test that asked for it by name
    except ValueError as exc:
        raise pytest.fail.Exception(f"boruta: {exc}", pytrace=False) from None
    verbose = (request.config.getoption("verbose") or 0) > 0
    try:
        with held_board(settings, wish, terminal_line(request.config), verbose) as device:
            yield device
    except NoBoard as exc:
        if settings.on_timeout == "skip":
            raise pytest.skip.Exception(f"boruta: {exc}") from None
        raise pytest.fail.Exception(f"boruta: {exc}", pytrace=False) from None
    except BoardError as exc:
        raise pytest.fail.Exception(f"boruta: {exc}", pytrace=False) from None


# ---------------------------------------------------------------------- settings
_SETTINGS = pytest.StashKey[Settings]()


def _dest(suffix: str) -> str:
    return "boruta_" + suffix.replace("-", "_")


def _raw(config: pytest.Config, suffix: str) -> tuple[str, Any] | None:
    """(where it was given, the value) of one setting; None when it was not given."""
    value = config.getoption(_dest(suffix))
    if value is not None:
        return f"--boruta-{suffix}", value
    value = config.getini(_dest(suffix))
    if value is not None and value != []:
        return f"{_dest(suffix)} in {config.inipath or 'the ini file'}", value
    return None


def settings_of(config: pytest.Config) -> Settings:
    """The plugin's settings, read once; a bad value is a pytest usage error naming it."""
    if _SETTINGS not in config.stash:
        try:
            config.stash[_SETTINGS] = _read_settings(config)
        except ValueError as exc:
            raise pytest.UsageError(f"boruta: {exc}") from None
    return config.stash[_SETTINGS]


def _read_settings(config: pytest.Config) -> Settings:
    found: dict[str, Any] = {}
    for suffix in OPTIONS:
        given = _raw(config, suffix)
        if given is None:
            continue
        where, value = given
        if suffix == "client-config" and config.getoption(_dest(suffix)) is None:
            # In the ini file, a relative path is relative to the file's directory.
            value = os.path.join(config.inipath.parent if config.inipath else "",
                                 os.path.expanduser(str(value)))
        try:
            found[_dest(suffix)[len("boruta_"):]] = _parse_setting(suffix, value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return Settings(**found)


def _parse_setting(suffix: str, value: Any) -> Any:
    from boruta.cli import parse
    if suffix == "caps":
        return caps_from_pairs(value)
    text = str(value).strip()
    if suffix == "priority":
        return parse.parse_integer(text, 1, 16, "priorities run from 1 (most important) to 16")
    if suffix in ("timeout", "lease"):
        return parse.parse_duration(text)
    if suffix == "on-timeout":
        if text.lower() not in ON_TIMEOUT:
            raise ValueError(f"{text!r} is neither of {' and '.join(ON_TIMEOUT)}")
        return text.lower()
    if suffix == "client-config":
        path = os.path.expanduser(text)
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {text!r}")
        return path
    from boruta.transport.addresses import parse_endpoint
    return parse_endpoint(text)                 # an AddressError is a ValueError


def caps_from_pairs(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE words as caps; one key given twice with different values is an error."""
    from boruta.cli.parse import parse_cap
    caps: dict[str, str] = {}
    for pair in pairs:
        key, value = parse_cap(pair)
        if caps.get(key, value) != value:
            raise ValueError(f"capability {key!r} given twice ({caps[key]!r} and {value!r})")
        caps[key] = value
    return caps


def wish_for(item: pytest.Item, settings: Settings) -> Wish:
    """The caps and priority of a test: its closest `boruta` marker, else the settings."""
    marker = item.get_closest_marker(MARKER)
    caps: dict[str, str] = {}
    priority = settings.priority
    if marker is not None:
        if marker.args:
            raise ValueError(f"@pytest.mark.{MARKER} takes keyword arguments only "
                             f"(device_type='rpi4', caps={{...}}, priority=4), "
                             f"not {marker.args!r}")
        kwargs = dict(marker.kwargs)
        if "priority" in kwargs:
            priority = kwargs.pop("priority")
            if isinstance(priority, bool) or not isinstance(priority, int) \
                    or not 1 <= priority <= 16:
                raise ValueError(f"the marker's priority must be a whole number from 1 "
                                 f"(most important) to 16, not {priority!r}")
        expr = marker_expressions(kwargs.pop("expr", None))
        extra = kwargs.pop("caps", None) or {}
        if not isinstance(extra, Mapping):
            raise ValueError(f"the marker's caps= must be a dict, not {extra!r}")
        for key, value in [*kwargs.items(), *extra.items()]:
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"capability {key!r}={value!r}: keys and values are "
                                 f"strings (write {key}={str(value)!r})")
            if caps.get(key, value) != value:
                raise ValueError(f"capability {key!r} given twice "
                                 f"({caps[key]!r} and {value!r})")
            caps[key] = value
    else:
        expr = ()
    if not caps and not expr:
        caps = dict(settings.caps or {})
    if not caps and not expr:
        raise ValueError(f"which board? give the test @pytest.mark.{MARKER}(KEY=VALUE...), "
                         "or run with --boruta-caps KEY=VALUE (or boruta_caps in the ini file)")
    return Wish(caps, priority, expr)


def marker_expressions(given: Any) -> tuple[str, ...]:
    """The marker's expr=[...]: capability expressions ('serial in 57600,115200',
    'voltage 2.9..3.6', 'hdmi != yes', 'sdmux?', '!sdmux'), checked here, canonical."""
    if given is None:
        return ()
    if isinstance(given, str) or not isinstance(given, (list, tuple)):
        raise ValueError(f"the marker's expr= must be a list of expressions, not {given!r}")
    from boruta.core.capexpr import parse_terms
    from boruta.core.errors import BadArgumentError
    try:
        return tuple(term.text for term in parse_terms(list(given)))
    except BadArgumentError as exc:
        raise ValueError(f"the marker's expr=: {exc.message}") from None


# ---------------------------------------------------------------------- the board's life
def terminal_line(config: pytest.Config) -> Callable[[str], None]:
    """Writes a line to the terminal, past pytest's output capture (and logs it)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def say(text: str) -> None:
        log.info("%s", text)
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture is not None \
                else contextlib.nullcontext():
            reporter.ensure_newline()           # after `file.py ` (the default, -v)
            writer = getattr(reporter, "_tw", None)
            if writer is not None and writer.width_of_current_line:
                reporter.write("\n")           # after -q's dots, which ensure_newline misses
            reporter.write_line(text)
    return say


def open_client(settings: Settings) -> Client:
    """A client of the farm: the client config (given, or found as `boruta` finds it),
    with --boruta-server over its endpoint."""
    from boruta.core.errors import ConfigError
    from boruta.transport.addresses import CLIENT_ENDPOINT
    from boruta.transport.client import Client
    from boruta.transport.credentials import load_client_config
    try:
        config = load_client_config(settings.client_config, server=settings.server)
    except ConfigError as exc:
        raise BoardError(f"bad client config: {exc}") from None
    return Client(config.server or CLIENT_ENDPOINT, events_endpoint=config.events,
                  credentials=config.credentials)


@contextlib.contextmanager
def held_board(settings: Settings, wish: Wish, say: Callable[[str], None],
               verbose: bool = False) -> Iterator[Device]:
    """File the request, wait for the board, log in; close the request whatever happens.

    NoBoard when none comes within `settings.timeout` (or the farm has none
    with the caps), BoardError when the server or the board cannot be reached.
    """
    from boruta.core.errors import BorutaError, NoMatchingWorkerError
    from boruta.device import Device
    from boruta.transport.leases import DEFAULT_LEASE
    client = open_client(settings)
    req_id: int | None = None
    try:
        try:
            req_id = client.new_request(dict(wish.caps), wish.priority,
                                        lease=settings.lease or DEFAULT_LEASE,
                                        expr=list(wish.expr) or None)
        except NoMatchingWorkerError:
            raise NoBoard(f"no worker of the farm at {client.endpoint} has "
                          f"{wish.caps_text()}, in any state") from None
        except BorutaError as exc:
            raise BoardError(f"cannot file a request ({wish.describe()}): {exc}") from None
        access = wait_for_board(client, req_id, wish, settings.timeout, say, verbose)
        try:
            device = Device.connect(access, request_id=req_id)
        except (OSError, EOFError, ValueError, _ssh_error()) as exc:
            raise BoardError(f"request {req_id}: cannot log in to worker {access.worker_uuid} "
                             f"as {access.username}: {type(exc).__name__}: {exc}") from None
        with device, JobKeeper(lambda: open_client(settings), req_id):
            yield device
    finally:
        if req_id is not None:
            close_quietly(client, req_id, say)
        client.close()


def _ssh_error() -> type[Exception]:
    import paramiko
    return paramiko.SSHException


def wait_for_board(client: Client, req_id: int, wish: Wish, timeout: float,
                   say: Callable[[str], None], verbose: bool = False) -> Any:
    """The access once the request is IN PROGRESS.

    A board that comes at once is said only when `verbose`; a wait is said
    at once, then now and then, and so is its end.
    """
    from boruta.core.durations import format_duration
    from boruta.core.errors import BorutaError, WorkerNotAssignedError
    from boruta.transport.errors import WaitTimeoutError
    started = time.monotonic()
    pause = FIRST_LOOK
    said = False
    while True:
        left = timeout - (time.monotonic() - started)
        try:
            if left <= 0:
                state, ahead = queue_place(client, req_id)
                raise NoBoard(f"no board within {format_duration(timeout)}: request {req_id} "
                              f"({wish.describe()}) was still {state}{_ahead(ahead)}; "
                              "it is cancelled")
            access = client.acquire_worker(req_id, timeout=min(pause, left))
        except WaitTimeoutError:
            if time.monotonic() - started >= timeout:
                continue                        # said by NoBoard, above
            state, ahead = queue_place(client, req_id)
            waited = format_duration(time.monotonic() - started)
            say(f"boruta: request {req_id} ({wish.describe()}) still {state} after "
                f"{waited}{_ahead(ahead)}{expected_start_note(client, req_id)}")
            said = True
            pause = min(pause * 2, PROGRESS_MAX)
            continue
        except WorkerNotAssignedError:
            state, _ = queue_place(client, req_id)
            raise BoardError(f"request {req_id} ({wish.describe()}) ended {state} before "
                             "a board came") from None
        except BorutaError as exc:
            raise BoardError(f"waiting for request {req_id} ({wish.describe()}) at "
                             f"{client.endpoint}: {exc}") from None
        waited = format_duration(time.monotonic() - started)
        line = (f"boruta: request {req_id} ({wish.describe()}) IN PROGRESS on worker "
                f"{access.worker_uuid} after {waited}")
        if said or verbose:
            say(line)
        else:
            log.info("%s", line)
        return access


def queue_place(client: Client, req_id: int) -> tuple[str, int | None]:
    """The request's state, and how many requests are ahead of it (None: the server
    does not say). Asks `queue_position` where the server has it, else the state only."""
    from boruta.core.errors import BorutaError
    from boruta.transport.errors import UnknownOperationError
    if hasattr(client, "queue_position"):
        try:
            place = client.queue_position(req_id)
        except UnknownOperationError:
            pass                                # an older server
        except BorutaError:
            return "in an unknown state", None
        else:
            ahead = place.get("ahead") if isinstance(place, dict) else None
            return str(place.get("state", "WAITING")), ahead if isinstance(ahead, int) else None
    try:
        return str(client.get_request_info(req_id).state), None
    except BorutaError:
        return "in an unknown state", None


def expected_start_note(client: Client, req_id: int) -> str:
    """`; expected to start in about 5m (...)`, with a warning when its deadline is
    unlikely to be met; "" when the server has no estimate (or no `explain_request`)."""
    from boruta.cli.explain_output import start_phrase
    from boruta.core.errors import BorutaError
    if not hasattr(client, "explain_request"):
        return ""
    try:
        phrase = start_phrase(client.explain_request(req_id))
    except BorutaError:
        return ""
    return f"; {phrase}" if phrase else ""


def _ahead(ahead: int | None) -> str:
    """The place in the queue; the server counts every ready request before this one,
    whatever its caps, so more than none is an upper bound."""
    if ahead is None:
        return ""
    return ", first in the queue" if ahead == 0 else f", at most {ahead} ahead in the queue"


def close_quietly(client: Client, req_id: int, say: Callable[[str], None]) -> None:
    """Close the request. One that ended before the test did is said (it explains a
    failure), and so is a close that fails (the lease still frees the board)."""
    from boruta.core.errors import BorutaError, ModificationForbiddenError
    try:
        client.close_request(req_id)
    except ModificationForbiddenError as exc:
        lost = client.leases.lost().get(req_id)
        say(f"boruta: request {req_id} had ended before the test did ({lost or exc})")
    except BorutaError as exc:
        say(f"boruta: could not close request {req_id} ({exc}); the server closes it when "
            "its lease runs out")


class JobKeeper:
    """Prolongs the job before its timeout while the test runs.

    A thread with a client of its own (a client is not thread-safe). The job
    ends `job_timeout` after it started or was last prolonged; the keeper
    prolongs it when half of what was left is gone, so two misses are still
    in time. It compares the job's timeout with this machine's clock.
    """

    def __init__(self, open_client: Callable[[], Client], req_id: int) -> None:
        self._open_client = open_client
        self.req_id = req_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"boruta-job-{req_id}",
                                        daemon=True)

    def __enter__(self) -> "JobKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        try:
            client = self._open_client()
        except BoardError:
            return
        try:
            self._keep(client)
        finally:
            client.close()

    def _keep(self, client: Client) -> None:
        from boruta.core.errors import (BorutaError, NotFoundError, ProlongLimitError,
                                        WorkerNotAssignedError)
        while not self._stop.is_set():
            try:
                job = client.get_request_info(self.req_id).job
            except BorutaError as exc:
                log.warning("request %d: cannot read its job's timeout: %s", self.req_id, exc)
                if self._stop.wait(MIN_PROLONG_GAP * 5):
                    return
                continue
            if job is None:
                return                          # the request ended
            left = (job.timeout - datetime.now(timezone.utc)).total_seconds()
            if self._stop.wait(max(left / 2, MIN_PROLONG_GAP)):
                return
            try:
                client.prolong_access(self.req_id)
            except (WorkerNotAssignedError, NotFoundError):
                return                          # the request ended meanwhile
            except ProlongLimitError as exc:
                log.warning("request %d: %s; its job ends at %s", self.req_id, exc, job.timeout)
                return
            except BorutaError as exc:
                log.warning("request %d: prolonging its job failed: %s", self.req_id, exc)
