"""Talking to the server: where it is, the client every command opens, and how long it waits.

The client comes from `make_client` (module level, so that tests replace it
with a fake). Each call gives up after RPC_TIMEOUT seconds of silence
(--timeout says otherwise), so that a server that is down is reported
quickly (exit 3), even by a command that waits for an hour.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

from boruta.cli import output as out
from boruta.cli import parse
from boruta.cli.errors import CliError, is_unreachable
from boruta.cli.options import json_mode, settings
from boruta.core.errors import BorutaError
from boruta.transport.addresses import connectable_endpoint
from boruta.transport.client import Client

RPC_TIMEOUT = 5.0          # how long one call may go unanswered, unless --timeout says otherwise


def make_client(endpoint: str, timeout: float, events_endpoint: str | None = None) -> Any:
    """The client every command talks through; tests replace this function."""
    return Client(endpoint, timeout=timeout, events_endpoint=events_endpoint)


def server_endpoint() -> str:
    """--server, then $BORUTA_SERVER, then the client config file, then the default."""
    try:
        return parse.resolve_server(settings().server)
    except ValueError as exc:
        raise CliError(str(exc)) from None


@contextmanager
def client_session(waits: bool = False, events_endpoint: str | None = None) -> Iterator[Any]:
    """The client of the current command, closed when it is done.

    `waits`: the command waits for something (--timeout is that wait, given to
    the call); each call still gives up after RPC_TIMEOUT of silence, so that
    an unreachable server is reported quickly.
    """
    timeout = settings().timeout
    if timeout is None:
        rpc = RPC_TIMEOUT
    else:
        rpc = min(timeout, RPC_TIMEOUT) if waits else timeout
    client = make_client(server_endpoint(), rpc, events_endpoint=events_endpoint)
    try:
        yield client
    finally:
        client.close()


def ping() -> dict[str, Any]:
    """The server's answer to ping: version, protocol, matcher, endpoints."""
    with client_session() as client:
        return client.ping()


def events_endpoint() -> str | None:
    """Where the server's event stream is, as the server says (it need not be on the
    default port); None lets the client take the default place."""
    try:
        info = ping()
    except BorutaError as exc:
        if is_unreachable(exc):
            raise
        return None                 # an older server without ping: the default place
    endpoints = info.get("endpoints") if isinstance(info, dict) else None
    if not isinstance(endpoints, dict):
        return None
    return connectable_endpoint(endpoints.get("events"), server_endpoint())


def fetch_after(fetch: Callable[[], Any], fallback: Any) -> Any:
    """The object after a change succeeded; a failure to read it back is not a failure."""
    try:
        return fetch()
    except BorutaError:
        return fallback


def report_change(fetch: Callable[[], Any], fallback: Any, text: str) -> None:
    """After a change: with --json the object as it is now (`fallback` if it cannot be
    read back), else the sentence `text`."""
    if json_mode():
        out.print_json(fetch_after(fetch, fallback))
    else:
        click.echo(text)
