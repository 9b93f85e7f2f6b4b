"""Talking to the server: where it is, the client every command opens, and how long it waits.

The client comes from `make_client` (module level, so that tests replace it
with a fake). Each call gives up after RPC_TIMEOUT seconds of silence
(--timeout says otherwise), so that a server that is down is reported
quickly (exit 3), even by a command that waits for an hour.

Where the server is and with which keys comes from one reader
(boruta.transport.credentials.load_client_config): the client config file,
then the environment, then --server, --server-key and --key-file. A key the
server refuses, or a server key that does not match, exits 4 (EXIT_AUTH).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

from boruta.cli import output as out
from boruta.cli.errors import EXIT_AUTH, CliError, is_unreachable
from boruta.cli.options import json_mode, settings
from boruta.core.errors import BorutaError, ConfigError
from boruta.transport.addresses import CLIENT_ENDPOINT, connectable_endpoint
from boruta.transport.client import Client
from boruta.transport.credentials import ClientConfig, Credentials, load_client_config
from boruta.transport.errors import HandshakeError

RPC_TIMEOUT = 5.0          # how long one call may go unanswered, unless --timeout says otherwise


def make_client(endpoint: str, timeout: float, events_endpoint: str | None = None,
                credentials: Credentials | None = None) -> Any:
    """The client every command talks through; tests replace this function."""
    return Client(endpoint, timeout=timeout, events_endpoint=events_endpoint,
                  credentials=credentials)


def client_config() -> ClientConfig:
    """The client config file, then the environment, then the global options
    (a bad value is a usage error naming where it came from)."""
    s = settings()
    try:
        return load_client_config(server=s.server, server_key=s.server_key,
                                  key_file=s.key_file)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def server_endpoint() -> str:
    """--server, then $BORUTA_SERVER, then the client config file, then the default."""
    return client_config().server or CLIENT_ENDPOINT


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
    config = client_config()
    client = make_client(config.server or CLIENT_ENDPOINT, rpc,
                         events_endpoint=events_endpoint, credentials=config.credentials)
    try:
        yield client
    except HandshakeError as exc:
        raise CliError(exc.message, code=exc.code, exit_code=EXIT_AUTH) from None
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
