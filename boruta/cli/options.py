"""What every `boruta` command accepts: the global options and the parameter types.

--server, --server-key, --key-file, --json and --timeout may stand at any
level of a command
(`boruta --json request list` and `boruta request list --json` are the
same); the innermost wins. The parameter types wrap the pure parsers of
boruta/cli/parse.py, so a bad value is a usage error (exit 2) naming the
option. Integers are bounded by what the wire and the server's store can
carry: a value past that is refused here, not turned into an internal error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import click

from boruta.cli import output as out
from boruta.cli import parse
from boruta.core.errors import ConfigError
from boruta.core.types import HI_PRIO, LO_PRIO, MAX_PAGE_LIMIT, Paginator
from boruta.transport.addresses import (
    CLIENT_ENDPOINT,
    CLIENT_PORT,
    DRYAD_ENDPOINT,
    DRYAD_PORT,
    LISTEN_CLIENTS,
    LISTEN_DRYADS,
    LISTEN_EVENTS,
    parse_endpoint,
)
from boruta.transport.credentials import (
    CLIENT_CONFIG_ENV,
    KEY_FILE_ENV,
    SERVER_ENV,
    SERVER_KEY_ENV,
    check_public_key,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_REQUEST_ID = INT64_MAX          # the server stores IDs as signed 64-bit integers

_SETTINGS_KEY = "boruta.settings"

# Placeholders a help text may use, so that no port number is written twice.
_HELP_NAMES = {
    "CLIENT_PORT": CLIENT_PORT, "DRYAD_PORT": DRYAD_PORT, "DRYAD_ENDPOINT": DRYAD_ENDPOINT,
    "LISTEN_CLIENTS": LISTEN_CLIENTS, "LISTEN_DRYADS": LISTEN_DRYADS,
    "LISTEN_EVENTS": LISTEN_EVENTS,
}


def help_text(text: str) -> str:
    """`text` with `{CLIENT_PORT}`, `{DRYAD_ENDPOINT}`, ... replaced by their values."""
    for name, value in _HELP_NAMES.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def with_ports(f: Callable) -> Callable:
    """Fill the port placeholders of a command's docstring (put it below @command)."""
    f.__doc__ = help_text(f.__doc__ or "")
    return f


# --------------------------------------------------------------------------- global options

@dataclass
class Settings:
    server: str | None = None
    server_key: str | None = None
    key_file: str | None = None
    json: bool = False
    timeout: float | None = None


def settings(ctx: click.Context | None = None) -> Settings:
    """The global options of this invocation (shared by every level of the command)."""
    ctx = ctx or click.get_current_context()
    found = ctx.meta.get(_SETTINGS_KEY)
    if found is None:
        found = ctx.meta[_SETTINGS_KEY] = Settings()
    return found


def json_setting(meta: dict[str, Any]) -> bool:
    """--json as far as the command line was read (for reporting a failure)."""
    found = meta.get(_SETTINGS_KEY)
    return bool(found and found.json)


def json_mode() -> bool:
    return settings().json


def show(value: Any, for_people: Callable[[Any], None]) -> None:
    """A command's result: one JSON document with --json, else `for_people(value)`."""
    if json_mode():
        out.print_json(value)
    else:
        for_people(value)


def say(text: str) -> Callable[[Any], None]:
    """A `for_people` that prints one fixed line."""
    return lambda _: click.echo(text)


def wait_timeout(default: float | None) -> float | None:
    """How long a waiting command waits: --timeout, else `default`."""
    s = settings()
    return s.timeout if s.timeout is not None else default


def _set_server(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        try:
            settings(ctx).server = parse_endpoint(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _set_server_key(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        try:
            settings(ctx).server_key = check_public_key(value, "--server-key")
        except ConfigError as exc:
            raise click.BadParameter(exc.problem, ctx=ctx, param=param) from None


def _set_key_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        if not value.strip():
            raise click.BadParameter("empty file name", ctx=ctx, param=param)
        settings(ctx).key_file = value


def set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        settings(ctx).json = True


def _set_timeout(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        try:
            settings(ctx).timeout = parse.parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def json_option(help: str) -> Callable:
    """--json alone, for the commands that talk to no server (server, dryad, admin)."""
    return click.option("--json", "json_", is_flag=True, default=False, expose_value=False,
                        callback=set_json, help=help)


def global_options(
        timeout_help: str = "Seconds to wait for the server's answer (default 5).") -> Callable:
    """--server, --server-key, --key-file, --json and --timeout, accepted at every level
    of the command."""
    def decorate(f: Callable) -> Callable:
        f = click.option("--timeout", metavar="S", expose_value=False, callback=_set_timeout,
                         help=timeout_help)(f)
        f = json_option("Print one JSON document on stdout (errors too).")(f)
        f = click.option("--key-file", metavar="FILE", expose_value=False,
                         callback=_set_key_file,
                         help=f"Your key file (default: ${KEY_FILE_ENV}, then key_file in the "
                              "client config).")(f)
        f = click.option("--server-key", metavar="KEY", expose_value=False,
                         callback=_set_server_key,
                         help=f"The server's public key (default: ${SERVER_KEY_ENV}, then "
                              "server_key in the client config); none: plain text.")(f)
        f = click.option("--server", metavar="ENDPOINT", expose_value=False, callback=_set_server,
                         help=f"Server endpoint (default: ${SERVER_ENV}, then the client config "
                              f"(${CLIENT_CONFIG_ENV}, else ~/.config/boruta/client.toml), then "
                              f"{CLIENT_ENDPOINT}).")(f)
        return f
    return decorate


WAIT_TIMEOUT_HELP = "Seconds (or 10m, 2h) to wait{what}; also how long a call may go unanswered."


# --------------------------------------------------------------------------- parameter types

class ParsedType(click.ParamType):
    """A click type over one pure parser (a ValueError becomes a usage error)."""

    def __init__(self, name: str, parser: Callable[[str], Any]) -> None:
        self.name = name
        self.parser = parser

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parser(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _bounded(low: int, high: int, what: str) -> ParsedType:
    return ParsedType("integer", lambda text: parse.parse_integer(text, low, high, what))


def _uuid(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("a worker UUID cannot be empty")
    return text


TIME = ParsedType("time", parse.parse_time)
REQ_STATE = ParsedType("state", parse.parse_req_state)
WORKER_STATE = ParsedType("state", parse.parse_worker_state)
SETTABLE_WORKER_STATE = ParsedType("state", parse.parse_settable_worker_state)
CAP = ParsedType("key=value", parse.parse_cap)
REQUIREMENT = ParsedType("key=value or expression", parse.parse_requirement)
SETTING = ParsedType("key=value", parse.parse_setting)
SORT = ParsedType("sort", parse.parse_sort)
UUID = ParsedType("uuid", _uuid)
REQ_ID = _bounded(1, MAX_REQUEST_ID, f"request IDs run from 1 to {MAX_REQUEST_ID}")
# The server judges priorities (and names the range); only what cannot travel stops here.
PRIORITY = _bounded(INT64_MIN, INT64_MAX,
                    f"priorities run from {HI_PRIO} (most important) to {LO_PRIO} (least)")
LIMIT = _bounded(1, MAX_PAGE_LIMIT, f"a page holds 1 to {MAX_PAGE_LIMIT} items")


def caps_dict(pairs: Sequence[tuple[str, str]], param: str = "--caps") -> dict[str, str]:
    """KEY=VALUE pairs as a dict; one key given twice with different values is a usage error."""
    caps: dict[str, str] = {}
    for key, value in pairs:
        if key in caps and caps[key] != value:
            raise click.BadParameter(
                f"capability {key!r} given twice ({caps[key]!r} and {value!r})",
                param_hint=f"'{param}'")
        caps[key] = value
    return caps


def requirements(given: Sequence[Any], param: str = "--caps") -> tuple[dict[str, str],
                                                                      list[str] | None]:
    """--caps as given: the exact KEY=VALUE caps, and the expressions' texts (None: none)."""
    pairs = [item for item in given if isinstance(item, tuple)]
    exprs = [item.text for item in given if not isinstance(item, tuple)]
    return caps_dict(pairs, param), exprs or None


def paginator(after: Any, backward: bool, limit: int | None, first: Any) -> Paginator | None:
    """--after/--backward/--limit as a Paginator (None: all); `first` is "before the first item"."""
    if after is None and not backward and limit is None:
        return None
    return Paginator(id=after if after is not None else first, backward=backward,
                     limit=limit or 0)


def list_options(after_type: Any, after_metavar: str, after_help: str, sort_help: str) -> Callable:
    """--sort, --limit, --after and --backward of `request list` and `worker list`."""
    def decorate(f: Callable) -> Callable:
        f = click.option("--backward", is_flag=True, help="Page backwards from --after.")(f)
        f = click.option("--after", "after", type=after_type, metavar=after_metavar,
                         help=after_help)(f)
        f = click.option("--limit", type=LIMIT, metavar="N",
                         help=f"At most N items (1 to {MAX_PAGE_LIMIT}).")(f)
        f = click.option("--sort", type=SORT, metavar="ITEM[:asc|:desc]", help=sort_help)(f)
        return f
    return decorate
