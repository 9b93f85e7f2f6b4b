"""How the `boruta` command fails: its exit statuses and its own errors.

Scripts branch on the exit status, so it says who failed: 1 the server
refused the call, 2 the command line (or the client's configuration) is
wrong, 3 the server did not answer, so the call may or may not have been
carried out, 4 the secure handshake failed, so the call was not carried
out: the server refused our key (`key_refused`: an admin adds it with
`boruta admin user add`) or the server's key does not match the one we
hold, or one side does not use CURVE (`server_key_mismatch`).
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Iterator

import click

from boruta.core.durations import format_duration
from boruta.core.errors import BorutaError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_INTERRUPTED = 130      # as a shell reports a command stopped by SIGINT

# The codes of "no answer in the time given": the server's silence
# (ServerUnreachableError) and a parked call whose timeout passed (WaitTimeoutError).
UNREACHABLE_CODES = frozenset({"unreachable", "wait_timeout"})

_CREATED_KEY = "boruta.created_id"


class CliError(Exception):
    """A failure the CLI finds itself (not the server), with its exit status and error code."""

    def __init__(self, message: str, code: str = "usage", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code


def is_unreachable(exc: BaseException) -> bool:
    """True for an error that means the server gave no answer in time."""
    return isinstance(exc, BorutaError) and exc.code in UNREACHABLE_CODES


def exc_text(exc: BaseException) -> str:
    """An exception as a phrase: an OSError's file and reason, else its message or class name."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror}"
    text = str(exc).strip()
    return text or type(exc).__name__


def refused(message: str, code: str) -> CliError:
    """A failure that is not the command line's fault (exit 1)."""
    return CliError(message, code=code, exit_code=EXIT_REFUSED)


@contextmanager
def wait_reported(unmet: str, timeout: float | None) -> Iterator[None]:
    """A wait whose timeout passed is reported as `<unmet> after <the caller's timeout>`.

    The server's own message names the last slice the client asked it to wait
    (e.g. 0.999999s); people gave --timeout, so that is the time they are told.
    """
    try:
        yield
    except BorutaError as exc:
        if exc.code != "wait_timeout" or timeout is None:
            raise
        raise CliError(f"{unmet} after {format_duration(timeout)}", code=exc.code,
                       exit_code=EXIT_UNREACHABLE) from None


def remember_created(req_id: int) -> None:
    """A request was filed: a later failure of the same command names it, so it is not lost."""
    click.get_current_context().meta[_CREATED_KEY] = req_id


def error_extra(meta: dict[str, Any]) -> dict[str, Any]:
    """What an error report adds from the command's context: the request it created."""
    return {"request_id": meta.get(_CREATED_KEY)}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a long-running command as Ctrl-C does: through every `finally`
    (a terminal restored, a held request closed)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
