"""The `boruta` command: the contract of shared/CLI.md.

Nouns then verbs (`boruta request list`), `--help` everywhere, `--json` for
machines. Exit status: 0 done, 1 the server refused the call, 2 the command
line is wrong, 3 the server did not answer.

The client comes from `make_client` (module level, so tests replace it with
a fake); parsing lives in boruta/cli/parse.py, printing in boruta/cli/output.py.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import click

from boruta.cli import output as out
from boruta.cli import parse
from boruta.core.errors import BorutaError
from boruta.core.types import (
    HI_PRIO,
    LO_PRIO,
    MAX_PAGE_LIMIT,
    Paginator,
    ReqState,
    RequestFilter,
    WorkerFilter,
    WorkerState,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

RPC_TIMEOUT = 5.0          # how long one call may go unanswered, unless --timeout says otherwise
ACQUIRE_TIMEOUT = 3600.0   # how long `request acquire` waits while the request is WAITING
DEFAULT_PRIORITY = 8       # halfway between HI_PRIO (1) and LO_PRIO (16)

_SETTINGS_KEY = "boruta.settings"
_CREATED_KEY = "boruta.created_id"
_UNREACHABLE_CODES = frozenset({"unreachable", "timeout", "wait_timeout"})


# --------------------------------------------------------------------------- the client

def make_client(endpoint: str, timeout: float, events_endpoint: str | None = None) -> Any:
    """The client every command talks through; tests replace this function."""
    from boruta.transport.client import Client
    return Client(endpoint, timeout=timeout, events_endpoint=events_endpoint)


def _unreachable_classes() -> tuple[type[BaseException], ...]:
    try:
        from boruta.transport.client import ServerUnreachableError
    except Exception:          # the transport is missing or broken: judge by code alone
        return ()
    return (ServerUnreachableError,)


# --------------------------------------------------------------------------- global options

@dataclass
class Settings:
    server: str | None = None
    json: bool = False
    timeout: float | None = None


def settings(ctx: click.Context | None = None) -> Settings:
    ctx = ctx or click.get_current_context()
    found = ctx.meta.get(_SETTINGS_KEY)
    if found is None:
        found = ctx.meta[_SETTINGS_KEY] = Settings()
    return found


def _set_server(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        try:
            settings(ctx).server = parse.normalize_endpoint(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        settings(ctx).json = True


def _set_timeout(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        try:
            settings(ctx).timeout = parse.parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def global_options(timeout_help: str = "Seconds to wait for the server's answer (default 5).") -> Callable:
    """--server, --json and --timeout, accepted at every level of the command."""
    def decorate(f: Callable) -> Callable:
        f = click.option("--timeout", metavar="S", expose_value=False, callback=_set_timeout,
                         help=timeout_help)(f)
        f = click.option("--json", "json_", is_flag=True, default=False, expose_value=False,
                         callback=_set_json,
                         help="Print one JSON document on stdout (errors too).")(f)
        f = click.option("--server", metavar="ENDPOINT", expose_value=False, callback=_set_server,
                         help="Server endpoint (default: $BORUTA_SERVER, then "
                              "~/.config/boruta/client.toml, then tcp://127.0.0.1:7175).")(f)
        return f
    return decorate


WAIT_TIMEOUT_HELP = "Seconds (or 10m, 2h) to wait{what}; also how long a call may go unanswered."


# --------------------------------------------------------------------------- parameter types

class _ParsedType(click.ParamType):
    """A click type over one of the pure parsers of boruta.cli.parse."""

    parser: Callable[[str], Any]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return type(self).parser(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class TimeType(_ParsedType):
    name = "time"
    parser = staticmethod(parse.parse_time)


class ReqStateType(_ParsedType):
    name = "state"
    parser = staticmethod(parse.parse_req_state)


class WorkerStateType(_ParsedType):
    name = "state"
    parser = staticmethod(parse.parse_worker_state)


class SettableWorkerStateType(_ParsedType):
    name = "state"
    parser = staticmethod(parse.parse_settable_worker_state)


class CapType(_ParsedType):
    name = "key=value"
    parser = staticmethod(parse.parse_cap)


class SortType(_ParsedType):
    name = "sort"
    parser = staticmethod(parse.parse_sort)


TIME = TimeType()
REQ_STATE = ReqStateType()
WORKER_STATE = WorkerStateType()
SETTABLE_WORKER_STATE = SettableWorkerStateType()
CAP = CapType()
SORT = SortType()
REQ_ID = click.IntRange(min=1)
LIMIT = click.IntRange(min=1, max=MAX_PAGE_LIMIT)


def _caps_dict(pairs: Sequence[tuple[str, str]], param: str = "--caps") -> dict[str, str]:
    caps: dict[str, str] = {}
    for key, value in pairs:
        if key in caps and caps[key] != value:
            raise click.BadParameter(f"capability {key!r} given twice ({caps[key]!r} and {value!r})",
                                     param_hint=f"'{param}'")
        caps[key] = value
    return caps


# --------------------------------------------------------------------------- helpers

class CliError(Exception):
    """A failure of ours (not the server's) with an exit status and an error code."""

    def __init__(self, message: str, code: str = "usage", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code


@dataclass
class _Call:
    """Which client to open: the endpoint and its per-call timeout."""

    endpoint: str
    timeout: float


def _endpoint(ctx: click.Context) -> str:
    s = settings(ctx)
    try:
        return parse.resolve_server(s.server)
    except ValueError as exc:
        raise CliError(str(exc)) from None


class _ClientSession:
    def __init__(self, ctx: click.Context, waits: bool = False,
                 events_endpoint: str | None = None) -> None:
        s = settings(ctx)
        if waits:
            # The wait itself is given to the call; each call still gives up when the
            # server is silent, so that an unreachable server is reported quickly.
            rpc = min(s.timeout, RPC_TIMEOUT) if s.timeout is not None else RPC_TIMEOUT
        else:
            rpc = s.timeout if s.timeout is not None else RPC_TIMEOUT
        self.call = _Call(_endpoint(ctx), rpc)
        self.events_endpoint = events_endpoint
        self.client: Any = None

    def __enter__(self) -> Any:
        if self.events_endpoint is None:
            self.client = make_client(self.call.endpoint, self.call.timeout)
        else:
            self.client = make_client(self.call.endpoint, self.call.timeout,
                                      events_endpoint=self.events_endpoint)
        return self.client

    def __exit__(self, *exc: Any) -> None:
        if self.client is not None:
            close = getattr(self.client, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass


def client_session(waits: bool = False, events_endpoint: str | None = None) -> _ClientSession:
    return _ClientSession(click.get_current_context(), waits=waits,
                          events_endpoint=events_endpoint)


_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]", "", "[::0]"})


def connectable_events_endpoint(reported: Any, client_endpoint: str) -> str | None:
    """The event stream's endpoint as the server reports it (its bound address), with a
    wildcard host replaced by the host the client reached the server at."""
    if not isinstance(reported, str) or not reported.startswith("tcp://"):
        return reported if isinstance(reported, str) and reported else None
    host, sep, port = reported[len("tcp://"):].rpartition(":")
    if not sep or not port.isdigit() or port == "0":
        return None
    if host in _WILDCARD_HOSTS:
        if not client_endpoint.startswith("tcp://"):
            return None
        host = client_endpoint[len("tcp://"):].rpartition(":")[0]
    return f"tcp://{host}:{port}"


def _discover_events_endpoint(ctx: click.Context) -> str | None:
    """Ask the server where its event stream is (it need not be on the default port)."""
    with _ClientSession(ctx) as client:
        ping = getattr(client, "ping", None)
        if ping is None:
            return None
        try:
            info = ping()
        except BorutaError as exc:
            if isinstance(exc, _unreachable_classes()) or exc.code in _UNREACHABLE_CODES:
                raise
            return None                 # an older server: fall back to the default place
    endpoints = info.get("endpoints") if isinstance(info, dict) else None
    if not isinstance(endpoints, dict):
        return None
    return connectable_events_endpoint(endpoints.get("events"), _endpoint(ctx))


def json_mode() -> bool:
    return settings(click.get_current_context()).json


def _wait_timeout(default: float | None) -> float | None:
    s = settings(click.get_current_context())
    return s.timeout if s.timeout is not None else default


def _remember_created(req_id: int) -> None:
    click.get_current_context().meta[_CREATED_KEY] = req_id


def _paginator(after: Any, backward: bool, limit: int | None) -> Paginator | None:
    if after is None and not backward and limit is None:
        return None
    return Paginator(id=after if after is not None else 0, backward=backward,
                     limit=limit or 0)


def _fetch_after(fetch: Callable[[], Any], fallback: dict[str, Any]) -> Any:
    """The object after a change succeeded; a failure to read it back is not a failure."""
    try:
        return fetch()
    except BorutaError:
        return fallback


# --------------------------------------------------------------------------- access (acquire)

def _check_key_out(path: str) -> None:
    if os.path.isdir(path):
        raise CliError(f"--key-out {path!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CliError(f"--key-out {path!r}: directory {parent!r} does not exist")


def key_text(key: Any) -> str:
    """The private key as OpenSSH/PEM text ending with a newline."""
    if isinstance(key, bytes):
        text = key.decode("utf-8")
    elif isinstance(key, str):
        text = key
    elif hasattr(key, "private_bytes"):
        from cryptography.hazmat.primitives import serialization
        text = key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption()).decode("ascii")
    else:
        raise CliError("the server sent no usable private key", code="internal",
                       exit_code=EXIT_REFUSED)
    if not text.strip():
        raise CliError("the server sent an empty private key", code="internal",
                       exit_code=EXIT_REFUSED)
    return text if text.endswith("\n") else text + "\n"


def guess_key_type(text: str) -> str | None:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
        data = text.encode()
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return "ssh-rsa"
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return "ssh-ed25519"
    except Exception:
        return None
    return None


def write_key_file(path: str, text: str) -> None:
    """Create (or replace) the key file with mode 0600 from the first byte."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write the key to {path!r}: {exc.strerror or exc}",
                       code="key_file") from None
    try:
        os.fchmod(fd, 0o600)
        data = text.encode("utf-8")
        while data:
            written = os.write(fd, data)
            data = data[written:]
    except OSError as exc:
        raise CliError(f"cannot write the key to {path!r}: {exc.strerror or exc}",
                       code="key_file") from None
    finally:
        os.close(fd)


def _access_address(access: Any) -> tuple[str, int]:
    addr = getattr(access, "addr", None)
    if addr:
        host, port = addr[0], addr[1]
        return str(host), int(port)
    text = getattr(access, "ssh_address", None)
    if text:
        host, sep, port = str(text).rpartition(":")
        if sep and port.isdigit():
            return host.strip("[]"), int(port)
    raise CliError("the server gave no address to connect to", code="internal",
                   exit_code=EXIT_REFUSED)


def _acquire(client: Any, req_id: int, key_out: str | None) -> dict[str, Any]:
    """Wait for the worker, write the key; the access document of CLI.md."""
    path = key_out if key_out else f"./boruta-{req_id}.key"
    _check_key_out(path)
    access = client.acquire_worker(req_id, timeout=_wait_timeout(ACQUIRE_TIMEOUT))
    host, port = _access_address(access)
    text = key_text(access.key)
    write_key_file(path, text)
    key_type = getattr(access, "key_type", None) or guess_key_type(text)
    doc = out.access_doc(host, port, str(access.username), os.path.abspath(path), key_type)
    doc["_key_shown"] = path
    doc["_worker_uuid"] = getattr(access, "worker_uuid", None)
    return doc


def _print_access(req_id: int, doc: dict[str, Any]) -> None:
    out.print_access(req_id, doc.get("_worker_uuid"), doc["host"], doc["port"], doc["username"],
                     doc["_key_shown"], doc["key_type"])


def _public_access(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- commands

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@global_options()
def cli() -> None:
    """Boruta: request test devices from a farm, and look after the farm.

    \b
    Examples:
      boruta request new --caps device_type=rpi4 --wait
      boruta request list --state wait
      boruta worker list --json
      boruta --server tcp://boruta.example.com:7175 request show 7

    Exit status: 0 done, 1 the server refused the call, 2 the command line is
    wrong, 3 the server did not answer.
    """


# ---- request

@cli.group(context_settings=CONTEXT)
@global_options()
def request() -> None:
    """File, inspect and use requests for workers.

    \b
    Examples:
      boruta request new --caps device_type=rpi4 --priority 4
      boruta request acquire 7
      boruta request close 7
    """


@request.command("new")
@click.option("--caps", "caps", type=CAP, multiple=True, required=True, metavar="KEY=VALUE",
              help="A capability the worker must have; repeat for more.")
@click.option("--priority", type=int, default=DEFAULT_PRIORITY, show_default=True,
              help=f"{HI_PRIO} (most important) to {LO_PRIO} (least).")
@click.option("--valid-after", type=TIME, metavar="T",
              help="Not before this time: ISO 8601 or +90s, +10m, +2h, +1d.")
@click.option("--deadline", type=TIME, metavar="T",
              help="Give up unless started by this time: ISO 8601 or +10m, +2h, +1d.")
@click.option("--queue-unsatisfiable", is_flag=True,
              help="Queue the request even if no registered worker has these caps now.")
@click.option("--wait", "wait", is_flag=True,
              help="Then wait for a worker and write its key, as `request acquire` does.")
@click.option("--key-out", metavar="PATH",
              help="With --wait: where to write the private key (default ./boruta-ID.key).")
@global_options(WAIT_TIMEOUT_HELP.format(what=" for a worker with --wait (default 1 hour)"))
def request_new(caps: tuple[tuple[str, str], ...], priority: int, valid_after: Any,
                deadline: Any, queue_unsatisfiable: bool, wait: bool, key_out: str | None) -> None:
    """File a new request and print its ID.

    \b
    Examples:
      boruta request new --caps device_type=rpi4
      boruta request new --caps device_type=rpi4 --caps display=yes --priority 2 --deadline +2h
      ID=$(boruta request new --caps device_type=rpi4)
      boruta request new --caps device_type=rpi4 --wait --timeout 30m
    """
    capmap = _caps_dict(caps)
    if key_out is not None and not wait:
        raise click.UsageError("--key-out only makes sense with --wait")
    if wait:
        _check_key_out(key_out or "./boruta-0.key")
    with client_session(waits=wait) as client:
        req_id = client.new_request(capmap, priority, valid_after=valid_after, deadline=deadline,
                                    queue_unsatisfiable=queue_unsatisfiable)
        _remember_created(req_id)
        if not wait:
            if json_mode():
                out.print_json(client.get_request_info(req_id).to_dict())
            else:
                click.echo(req_id)
            return
        if not json_mode():
            click.echo(req_id)
        access = _acquire(client, req_id, key_out)
        if json_mode():
            doc = _fetch_after(lambda: client.get_request_info(req_id).to_dict(), {"id": req_id})
            doc["access"] = _public_access(access)
            out.print_json(doc)
        else:
            _print_access(req_id, access)


def _list_options(after_type: Any, after_metavar: str, after_help: str, sort_help: str) -> Callable:
    def decorate(f: Callable) -> Callable:
        f = click.option("--backward", is_flag=True, help="Page backwards from --after.")(f)
        f = click.option("--after", "after", type=after_type, metavar=after_metavar,
                         help=after_help)(f)
        f = click.option("--limit", type=LIMIT, metavar="N",
                         help=f"At most N items (1 to {MAX_PAGE_LIMIT}).")(f)
        f = click.option("--sort", type=SORT, metavar="ITEM[:asc|:desc]", help=sort_help)(f)
        return f
    return decorate


@request.command("list")
@click.option("--state", "states", type=REQ_STATE, multiple=True, metavar="S",
              help="Only requests in this state (wait, inprogress, done, ...); repeat for more.")
@click.option("--priority", "priorities", type=int, multiple=True, metavar="N",
              help="Only requests with this priority; repeat for more.")
@click.option("--id", "ids", type=REQ_ID, multiple=True, metavar="N",
              help="Only the request with this ID; repeat for more.")
@_list_options(REQ_ID, "ID", "Start after the request with this ID.",
               "Sort by id, priority, deadline, validafter or state.")
@global_options()
def request_list(states: tuple[ReqState, ...], priorities: tuple[int, ...], ids: tuple[int, ...],
                 sort: Any, limit: int | None, after: int | None, backward: bool) -> None:
    """List requests.

    \b
    Examples:
      boruta request list
      boruta request list --state wait --state inprogress --sort priority:desc
      boruta request list --limit 20 --after 140
      boruta request list --json | jq '.items[].id'
    """
    flt = RequestFilter(ids=tuple(ids), priorities=tuple(priorities), states=tuple(states)) \
        if (states or priorities or ids) else None
    with client_session() as client:
        items, info = client.list_requests(flt, sort, _paginator(after, backward, limit))
    if json_mode():
        out.print_json(out.list_doc(items, info))
    else:
        out.print_request_table(items, info, backward=backward)


@request.command("show")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@global_options()
def request_show(req_id: int) -> None:
    """Show one request.

    \b
    Example:
      boruta request show 7
    """
    with client_session() as client:
        req = client.get_request_info(req_id)
    if json_mode():
        out.print_json(req.to_dict())
    else:
        out.print_request(req)


@request.command("update")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@click.option("--priority", type=int, help=f"New priority, {HI_PRIO} to {LO_PRIO}.")
@click.option("--valid-after", type=TIME, metavar="T", help="New ValidAfter: ISO 8601 or +10m.")
@click.option("--deadline", type=TIME, metavar="T", help="New Deadline: ISO 8601 or +2h.")
@global_options()
def request_update(req_id: int, priority: int | None, valid_after: Any, deadline: Any) -> None:
    """Change a waiting request's priority, ValidAfter or Deadline.

    \b
    Examples:
      boruta request update 7 --priority 2
      boruta request update 7 --deadline +1d
    """
    if priority is None and valid_after is None and deadline is None:
        raise click.UsageError("nothing to update: give --priority, --valid-after or --deadline")
    with client_session() as client:
        client.update_request(req_id, priority=priority, valid_after=valid_after,
                              deadline=deadline)
        if json_mode():
            out.print_json(_fetch_after(lambda: client.get_request_info(req_id).to_dict(),
                                        {"id": req_id}))
        else:
            click.echo(f"Request {req_id} updated.")


@request.command("close")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@global_options()
def request_close(req_id: int) -> None:
    """Close a request: cancel it while waiting, or end its job.

    \b
    Example:
      boruta request close 7
    """
    with client_session() as client:
        client.close_request(req_id)
        if json_mode():
            out.print_json(_fetch_after(lambda: client.get_request_info(req_id).to_dict(),
                                        {"id": req_id}))
        else:
            click.echo(f"Request {req_id} closed.")


@request.command("acquire")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@click.option("--key-out", metavar="PATH",
              help="Where to write the private key (default ./boruta-ID.key, mode 0600).")
@global_options(WAIT_TIMEOUT_HELP.format(what=" while the request is WAITING (default 1 hour)"))
def request_acquire(req_id: int, key_out: str | None) -> None:
    """Wait for a request's worker, write the SSH key and print how to log in.

    \b
    Examples:
      boruta request acquire 7
      boruta request acquire 7 --timeout 10m --key-out ~/.ssh/boruta-7
      eval "$(boruta request acquire 7 | tail -n 1)"
    """
    with client_session(waits=True) as client:
        access = _acquire(client, req_id, key_out)
    if json_mode():
        out.print_json(_public_access(access))
    else:
        _print_access(req_id, access)


@request.command("prolong")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@global_options()
def request_prolong(req_id: int) -> None:
    """Extend the job of a request in progress by the job timeout.

    \b
    Example:
      boruta request prolong 7
    """
    with client_session() as client:
        client.prolong_access(req_id)
        req = _fetch_after(lambda: client.get_request_info(req_id), None)
    if json_mode():
        out.print_json(req.to_dict() if req is not None else {"id": req_id})
    elif req is not None and req.job is not None:
        click.echo(f"Request {req_id} prolonged; its job now ends at {out.iso(req.job.timeout)}.")
    else:
        click.echo(f"Request {req_id} prolonged.")


@request.command("wait")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@click.option("--until", "states", type=REQ_STATE, multiple=True, metavar="STATE",
              help="Return when the request is in this state; repeat for more "
                   "(default: any state but WAITING).")
@global_options(WAIT_TIMEOUT_HELP.format(what=" for the state (default: no limit)"))
def request_wait(req_id: int, states: tuple[ReqState, ...]) -> None:
    """Wait until a request reaches one of the given states, then show it.

    \b
    Examples:
      boruta request wait 7
      boruta request wait 7 --until inprogress --timeout 10m
      boruta request wait 7 --until done --until failed --json
    """
    with client_session(waits=True) as client:
        req = client.wait_request(req_id, states=list(states) or None,
                                  timeout=_wait_timeout(None))
    if json_mode():
        out.print_json(req.to_dict())
    else:
        out.print_request(req)


# ---- worker

@cli.group(context_settings=CONTEXT)
@global_options()
def worker() -> None:
    """Inspect and administer workers (devices with their dryads).

    \b
    Examples:
      boruta worker list --state idle
      boruta worker set-state 4f1a... maintenance
    """


class UuidType(click.ParamType):
    name = "uuid"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip()
        if not text:
            self.fail("a worker UUID cannot be empty", param, ctx)
        return text


UUID = UuidType()


@worker.command("list")
@click.option("--state", "states", type=WORKER_STATE, multiple=True, metavar="S",
              help="Only workers in this state (idle, running, maintenance, ...); repeat for more.")
@click.option("--caps", "caps", type=CAP, multiple=True, metavar="KEY=VALUE",
              help="Only workers with this capability; repeat for more.")
@click.option("--group", "groups", multiple=True, metavar="G",
              help="Only workers in this group; repeat for more (any of them).")
@_list_options(UUID, "UUID", "Start after the worker with this UUID.", "Sort by uuid, state or groups.")
@global_options()
def worker_list(states: tuple[WorkerState, ...], caps: tuple[tuple[str, str], ...],
                groups: tuple[str, ...], sort: Any, limit: int | None, after: str | None,
                backward: bool) -> None:
    """List workers.

    \b
    Examples:
      boruta worker list
      boruta worker list --state idle --caps device_type=rpi4
      boruta worker list --group lab1 --sort state:desc --json
    """
    capmap = _caps_dict(caps)
    flt = WorkerFilter(groups=tuple(groups), caps=capmap, states=tuple(states)) \
        if (states or capmap or groups) else None
    pag = None
    if after is not None or backward or limit is not None:
        pag = Paginator(id=after if after is not None else "", backward=backward, limit=limit or 0)
    with client_session() as client:
        items, info = client.list_workers(flt, sort, pag)
    if json_mode():
        out.print_json(out.list_doc(items, info))
    else:
        out.print_worker_table(items, info, backward=backward)


@worker.command("show")
@click.argument("uuid", type=UUID)
@global_options()
def worker_show(uuid: str) -> None:
    """Show one worker.

    \b
    Example:
      boruta worker show 4f1a2b3c-0000-4000-8000-000000000001
    """
    with client_session() as client:
        info = client.get_worker_info(uuid)
    if json_mode():
        out.print_json(info.to_dict())
    else:
        out.print_worker(info)


@worker.command("set-state")
@click.argument("uuid", type=UUID)
@click.argument("state", type=SETTABLE_WORKER_STATE, metavar="IDLE|MAINTENANCE")
@global_options()
def worker_set_state(uuid: str, state: WorkerState) -> None:
    """Put a worker in MAINTENANCE, or back to IDLE.

    \b
    Examples:
      boruta worker set-state 4f1a2b3c-0000-4000-8000-000000000001 maintenance
      boruta worker set-state 4f1a2b3c-0000-4000-8000-000000000001 idle
    """
    with client_session() as client:
        client.set_state(uuid, state)
        if json_mode():
            out.print_json(_fetch_after(lambda: client.get_worker_info(uuid).to_dict(),
                                        {"uuid": uuid, "state": str(state)}))
        else:
            click.echo(f"Worker {uuid} set to {str(state)}.")


@worker.command("set-groups")
@click.argument("uuid", type=UUID)
@click.argument("groups", nargs=-1, metavar="[GROUP ...]")
@global_options()
def worker_set_groups(uuid: str, groups: tuple[str, ...]) -> None:
    """Replace a worker's groups (none given: the worker is in no group).

    \b
    Examples:
      boruta worker set-groups 4f1a2b3c-0000-4000-8000-000000000001 lab1 ci
      boruta worker set-groups 4f1a2b3c-0000-4000-8000-000000000001
    """
    with client_session() as client:
        client.set_groups(uuid, list(groups))
        if json_mode():
            out.print_json(_fetch_after(lambda: client.get_worker_info(uuid).to_dict(),
                                        {"uuid": uuid, "groups": list(groups)}))
        else:
            shown = ", ".join(groups) if groups else "no group"
            click.echo(f"Worker {uuid} is now in {shown}.")


@worker.command("deregister")
@click.argument("uuid", type=UUID)
@global_options()
def worker_deregister(uuid: str) -> None:
    """Forget a worker (it must be in MAINTENANCE or FAILED).

    \b
    Example:
      boruta worker deregister 4f1a2b3c-0000-4000-8000-000000000001
    """
    with client_session() as client:
        client.deregister(uuid)
    if json_mode():
        out.print_json({"uuid": uuid, "deregistered": True})
    else:
        click.echo(f"Worker {uuid} deregistered.")


# ---- events

@cli.command("events", context_settings=CONTEXT)
@click.option("--request", "request_id", type=REQ_ID, metavar="ID",
              help="Only events of this request.")
@click.option("--worker", "worker_uuid", type=UUID, metavar="UUID",
              help="Only events of this worker.")
@global_options()
def events(request_id: int | None, worker_uuid: str | None) -> None:
    """Follow request and worker state changes until interrupted (Ctrl-C).

    With --json, one JSON object per line.

    \b
    Examples:
      boruta events
      boruta events --request 7
      boruta events --worker 4f1a2b3c-0000-4000-8000-000000000001 --json
    """
    as_json = json_mode()
    try:
        events_ep = _discover_events_endpoint(click.get_current_context())
        with client_session(events_endpoint=events_ep) as client:
            for event in client.events(request_id=request_id, worker_uuid=worker_uuid):
                if as_json:
                    out.print_json(event, compact=True)
                else:
                    sys.stdout.write(out.format_event(event) + "\n")
                    sys.stdout.flush()
    except KeyboardInterrupt:
        return


# ---- server

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


@cli.command("server", context_settings=CONTEXT)
@click.option("--config", "config", metavar="FILE", help="Server configuration (TOML).")
@click.option("--state-dir", metavar="DIR", help="Where the server keeps its state (default $XDG_STATE_HOME/boruta, else ~/.local/state/boruta; :memory: keeps nothing).")
@click.option("--listen", metavar="EP", help="Client endpoint (default tcp://*:7175).")
@click.option("--dryad-listen", metavar="EP", help="Dryad endpoint (default tcp://*:7176).")
@click.option("--events", "events_ep", metavar="EP", help="Event stream endpoint (default tcp://*:7177).")
@click.option("--public-host", metavar="HOST", help="Host name clients use to reach tunnels.")
@click.option("--set", "settings_", multiple=True, metavar="KEY=VALUE",
              help="Any other setting of the configuration file, e.g. --set heartbeat_interval=0.5 "
                   "(repeatable; wins over the file and the flags above).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), metavar="L",
              help="debug, info, warning, error or critical.")
@click.option("--log-format", type=click.Choice(["json", "text"], case_sensitive=False),
              help="json or text.")
@click.option("--json", "json_", is_flag=True, default=False, expose_value=False,
              callback=_set_json, help="Report a failure to start as a JSON document on stdout.")
def server(config: str | None, state_dir: str | None, listen: str | None,
           dryad_listen: str | None, events_ep: str | None, public_host: str | None,
           log_level: str | None, log_format: str | None, settings_: tuple[str, ...]) -> None:
    """Run the Boruta server (until interrupted).

    Options given here override the configuration file.

    \b
    Examples:
      boruta server --state-dir /var/lib/boruta
      boruta server --config /etc/boruta/server.toml --public-host boruta.example.com
    """
    overrides = {k: v for k, v in {
        "state_dir": state_dir, "listen": listen, "dryad_listen": dryad_listen,
        "events": events_ep, "public_host": public_host,
        "log_level": log_level.lower() if log_level else None,
        "log_format": log_format.lower() if log_format else None,
    }.items() if v is not None}
    for item in settings_:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value.strip()
    from boruta.server.app import run_server
    from boruta.server.config import load_server_config
    try:
        cfg = load_server_config(config, overrides)
    except BorutaError as exc:
        raise CliError(f"invalid server configuration: {exc.message}") from None
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise CliError(f"invalid server configuration: {_exc_text(exc)}") from None
    try:
        rc = run_server(cfg)
    except KeyboardInterrupt:
        return
    except OSError as exc:
        raise CliError(f"the server stopped: {_exc_text(exc)}", code="server_failed",
                       exit_code=EXIT_REFUSED) from None
    if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
        click.get_current_context().exit(rc)    # the server has logged why


# ---- dryad

DRYAD_BOARDS = ["simulated", "stm"]
DRYAD_SESSIONS = ["embedded", "system"]


def _dryad_config_path(path: str | None) -> str:
    from boruta.dryad.config import DEFAULT_CONFIG_PATH
    return path or os.environ.get("BORUTA_DRYAD_CONFIG") or DEFAULT_CONFIG_PATH


@cli.group("dryad", invoke_without_command=True, context_settings=CONTEXT)
@click.option("--config", metavar="FILE",
              help="Dryad configuration (default: $BORUTA_DRYAD_CONFIG, then "
                   "/etc/boruta/dryad.conf).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info",
              show_default=True, metavar="L", help="debug, info, warning, error or critical.")
@click.option("--log-format", type=click.Choice(["json", "text"], case_sensitive=False),
              default="text", show_default=True, help="json or text.")
@click.option("--json", "json_", is_flag=True, default=False, expose_value=False,
              callback=_set_json, help="Report a failure to start as a JSON document on stdout.")
@click.pass_context
def dryad(ctx: click.Context, config: str | None, log_level: str, log_format: str) -> None:
    """Run a dryad: the agent next to a device under test (until interrupted).

    It connects to the server's dryad endpoint, registers the caps of its
    configuration, heartbeats, and prepares a fresh SSH session for every
    job. Write a configuration first with `boruta dryad init`. Prints
    `boruta dryad ready uuid=... ssh=...` once registered; SIGTERM or
    SIGINT stop it (exit 0). A bad configuration exits 2, naming the field.

    \b
    Examples:
      boruta dryad init --caps device_type=rpi4 --config dryad.toml
      boruta dryad --config dryad.toml
    """
    ctx.meta["boruta.dryad_config"] = config
    if ctx.invoked_subcommand is not None:
        return
    from boruta.dryad.agent import AgentError, run_agent
    from boruta.dryad.config import ConfigError, load_config
    path = _dryad_config_path(config)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise CliError(f"invalid dryad configuration: {exc}", code="bad_config") from None
    try:
        rc = run_agent(cfg, log_level=log_level.lower(), log_format=log_format.lower())
    except AgentError as exc:
        raise CliError(f"the dryad cannot run: {exc}", code="dryad_failed",
                       exit_code=EXIT_REFUSED) from None
    except KeyboardInterrupt:
        return
    if rc:
        ctx.exit(rc)


@dryad.command("init", context_settings=CONTEXT)
@click.option("--config", metavar="FILE",
              help="Where to write it (default: the dryad's --config, $BORUTA_DRYAD_CONFIG, "
                   "then /etc/boruta/dryad.conf). An existing file is never overwritten.")
@click.option("--caps", "caps", type=CAP, multiple=True, metavar="KEY=VALUE",
              help="A capability of this worker (repeatable). A fresh UUID is added unless "
                   "--caps UUID=... gives one.")
@click.option("--server", "server_ep", metavar="EP",
              help="The server's dryad endpoint (default tcp://127.0.0.1:7176).")
@click.option("--board", type=click.Choice(DRYAD_BOARDS), default="simulated", show_default=True,
              help="simulated (anywhere) or stm (the MuxPi's microcontroller).")
@click.option("--session", type=click.Choice(DRYAD_SESSIONS), default="embedded",
              show_default=True,
              help="embedded (an SSH server inside the dryad) or system (a real account for "
                   "the board's sshd; needs root).")
@click.option("--ssh-listen", metavar="HOST:PORT",
              help="Where the embedded SSH server listens (default 127.0.0.1:0, a free port; "
                   "give a fixed port so that restarts keep the worker's configuration).")
@click.option("--user", metavar="NAME", help="The session user of every job (default boruta-user).")
@click.option("--json", "json_", is_flag=True, default=False, expose_value=False,
              callback=_set_json, help="Print what was written as one JSON document.")
@click.pass_context
def dryad_init(ctx: click.Context, config: str | None, caps: tuple[tuple[str, str], ...],
               server_ep: str | None, board: str, session: str, ssh_listen: str | None,
               user: str | None) -> None:
    """Write a commented dryad configuration with a fresh UUID.

    Edit it if need be, then start the dryad with `boruta dryad --config FILE`.

    \b
    Examples:
      boruta dryad init --config dryad.toml --caps device_type=rpi4
      boruta dryad init --caps device_type=rpi4 --server tcp://boruta.example.com:7176 \\
          --board stm --session system
    """
    from boruta.dryad.config import DEFAULT_SERVER, DEFAULT_USER, ConfigError, write_default_config
    parent_config = ctx.parent.meta.get("boruta.dryad_config") if ctx.parent else None
    path = _dryad_config_path(config or parent_config)
    kwargs: dict[str, Any] = {"caps": _caps_dict(caps), "server": server_ep or DEFAULT_SERVER,
                              "board": board, "session": session, "user": user or DEFAULT_USER}
    if ssh_listen is not None:
        kwargs["ssh_listen"] = ssh_listen
    parent = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.exists(path):
            os.makedirs(parent, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {parent}: {_exc_text(exc)}", code="bad_config") from None
    try:
        written = write_default_config(path, **kwargs)
    except ConfigError as exc:
        code = "exists" if isinstance(exc, FileExistsError) else "bad_config"
        raise CliError(f"no configuration written: {exc}", code=code) from None
    if json_mode():
        out.print_json({"config": path, "uuid": written.uuid, "caps": dict(written.caps),
                        "server": written.server, "board": written.board.backend,
                        "session": written.session.backend, "user": written.user})
    else:
        sys.stdout.write(f"Wrote {path} for dryad {written.uuid}.\n"
                         f"Start it with: boruta dryad --config {path}\n")


@cli.group("admin", context_settings=CONTEXT)
def admin() -> None:
    """Dump and restore the server's durable state (its state directory).

    The dump is JSON lines: a meta record, then workers, tunnels and
    requests. It holds the private keys of jobs in progress: keep it as
    secret as the state directory.

    \b
    Examples:
      boruta admin dump --state-dir /var/lib/boruta > state.jsonl
      boruta admin restore --state-dir /var/lib/boruta-new < state.jsonl
    """


def _state_dir_option(f: Callable) -> Callable:
    return click.option("--state-dir", metavar="DIR",
                        help="The server's state directory (default: $XDG_STATE_HOME/boruta, "
                             "else ~/.local/state/boruta, as `boruta server`).")(f)


def _resolve_state_dir(state_dir: str | None) -> str:
    from boruta.server.config import default_state_dir
    return os.path.expanduser(state_dir) if state_dir else default_state_dir()


@admin.command("dump", context_settings=CONTEXT)
@_state_dir_option
@click.option("--output", "-o", metavar="FILE", help="Write the dump here instead of stdout.")
def admin_dump(state_dir: str | None, output: str | None) -> None:
    """Dump the whole state as JSON lines, the server stopped or running.

    A running server is not disturbed: the dump reads the last committed
    state in one consistent snapshot.

    \b
    Examples:
      boruta admin dump --state-dir /var/lib/boruta > state.jsonl
      boruta admin dump --state-dir /var/lib/boruta -o state.jsonl
    """
    import json

    from boruta.server.store import Store, StoreError
    where = _resolve_state_dir(state_dir)
    counts = {"worker": 0, "request": 0, "tunnel": 0}
    try:
        store = Store(where, readonly=True)
    except StoreError as exc:
        raise CliError(str(exc), code="state_error", exit_code=EXIT_REFUSED) from None
    try:
        sink = open(output, "w", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        store.close()
        raise CliError(f"cannot write {output}: {_exc_text(exc)}", code="state_error",
                       exit_code=EXIT_REFUSED) from None
    try:
        for record in store.dump():
            sink.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            counts[record["kind"]] = counts.get(record["kind"], 0) + 1
        sink.flush()
    except StoreError as exc:
        raise CliError(str(exc), code="state_error", exit_code=EXIT_REFUSED) from None
    finally:
        store.close()
        if output:
            sink.close()
    sys.stderr.write(f"Dumped {counts['worker']} workers and {counts['request']} requests "
                     f"from {where}.\n")


@admin.command("restore", context_settings=CONTEXT)
@_state_dir_option
@click.option("--input", "-i", "input_", metavar="FILE",
              help="Read the dump from FILE instead of stdin.")
@click.option("--json", "json_", is_flag=True, default=False, expose_value=False,
              callback=_set_json, help="Print what was restored as one JSON document.")
def admin_restore(state_dir: str | None, input_: str | None) -> None:
    """Restore a dump into an empty state directory (the server stopped).

    All or nothing: the first bad line is reported and nothing is written.
    The directory may not exist yet; one that holds state is refused.

    \b
    Examples:
      boruta admin restore --state-dir /var/lib/boruta < state.jsonl
      boruta admin restore --state-dir /var/lib/boruta -i state.jsonl
    """
    import json

    from boruta.server.store import Store, StoreError
    where = _resolve_state_dir(state_dir)

    def records(stream: Any) -> Any:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise StoreError(f"line {number}: not JSON ({exc})") from None

    try:
        source = open(input_, encoding="utf-8") if input_ else sys.stdin
    except OSError as exc:
        raise CliError(f"cannot read {input_}: {_exc_text(exc)}", code="state_error",
                       exit_code=EXIT_REFUSED) from None
    store = None
    try:
        store = Store(where, lock=True)
        workers, requests = store.restore(records(source))
    except StoreError as exc:
        raise CliError(f"nothing restored: {exc}", code="state_error",
                       exit_code=EXIT_REFUSED) from None
    except UnicodeDecodeError as exc:
        raise CliError(f"nothing restored: the dump is not UTF-8 text ({exc.reason})",
                       code="state_error", exit_code=EXIT_REFUSED) from None
    finally:
        if store is not None:
            store.close()
        if input_:
            source.close()
    if json_mode():
        out.print_json({"state_dir": where, "workers": workers, "requests": requests})
    else:
        sys.stdout.write(f"Restored {workers} workers and {requests} requests into {where}.\n")


# --------------------------------------------------------------------------- entry point

def _exc_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror}"
    text = str(exc).strip()
    return text or type(exc).__name__


def _wants_json(args: Sequence[str]) -> bool:
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def _sentence(message: str) -> str:
    message = " ".join(str(message).split())
    return message if message.endswith((".", "!", "?")) else message + "."


def _report(json_out: bool, code: str, message: str, **extra: Any) -> None:
    if json_out:
        try:
            out.print_json(out.error_doc(code, message, **extra))
        except Exception:
            pass
    else:
        if extra.get("request_id") is not None:
            message = f"{str(message).rstrip('.')} (request {extra['request_id']} was created)"
        text = _sentence(message)
        try:
            sys.stderr.write(f"boruta: {text}\n")
            sys.stderr.flush()
        except Exception:
            pass


def _usage_message(exc: click.UsageError) -> str:
    message = exc.format_message()
    ctx = exc.ctx
    if ctx is not None:
        message = f"{_sentence(message)} See '{ctx.command_path} --help'"
    return message


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status. Never lets a traceback out."""
    args = list(sys.argv[1:] if argv is None else argv)
    json_out = _wants_json(args)
    ctx_meta: dict[str, Any] = {}

    def extra() -> dict[str, Any]:
        return {"request_id": ctx_meta.get(_CREATED_KEY)}

    try:
        ctx = cli.make_context("boruta", args)
        ctx_meta = ctx.meta
        with ctx:
            cli.invoke(ctx)
        return EXIT_OK
    except click.exceptions.NoArgsIsHelpError as exc:
        if json_out:
            _report(True, "usage", f"missing command; see '{exc.ctx.command_path} --help'")
        else:
            try:
                sys.stderr.write(exc.ctx.get_help() + "\n")
            except Exception:
                pass
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        _report(json_out, "usage", _usage_message(exc))
        return EXIT_USAGE
    except click.ClickException as exc:
        _report(json_out, "usage", exc.format_message())
        return EXIT_USAGE
    except CliError as exc:
        _report(json_out or _json_setting(ctx_meta), exc.code, exc.message, **extra())
        return exc.exit_code
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a sentence
        return _report_exception(exc, json_out or _json_setting(ctx_meta), extra())


def _json_setting(meta: dict[str, Any]) -> bool:
    found = meta.get(_SETTINGS_KEY)
    return bool(found and found.json)


def _report_exception(exc: BaseException, json_out: bool, extra: dict[str, Any]) -> int:
    if isinstance(exc, (KeyboardInterrupt, click.Abort)):
        _report(json_out, "interrupted", "interrupted", **extra)
        return 130
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_REFUSED)
    if isinstance(exc, BrokenPipeError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except Exception:
            pass
        return EXIT_OK
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or _exc_text(exc)
    if isinstance(exc, _unreachable_classes()) or (isinstance(exc, BorutaError)
                                                   and code in _UNREACHABLE_CODES):
        _report(json_out, code if isinstance(code, str) else "unreachable", message, **extra)
        return EXIT_UNREACHABLE
    if isinstance(exc, TimeoutError):
        _report(json_out, "timeout", f"the server did not answer in time ({message})", **extra)
        return EXIT_UNREACHABLE
    if isinstance(exc, BorutaError):
        _report(json_out, str(code or "internal"), message, **extra)
        return EXIT_REFUSED
    if not isinstance(exc, Exception):
        _report(json_out, "internal", f"stopped by {type(exc).__name__}", **extra)
        return EXIT_REFUSED
    _report(json_out, "internal", f"internal error ({type(exc).__name__}): {message}", **extra)
    return EXIT_REFUSED


def main(argv: Sequence[str] | None = None) -> None:
    """Console script entry point."""
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
