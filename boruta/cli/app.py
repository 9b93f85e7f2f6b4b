"""The `boruta` command: its root, how it reports failures, and its entry point.

Nouns then verbs (`boruta request list`), `--help` everywhere, `--json` for
machines. Exit status: 0 done, 1 the server refused the call, 2 the command
line is wrong, 3 the server did not answer. Whatever happens, the user gets
one sentence on stderr (or one JSON error document on stdout with --json),
never a traceback.

Each noun has its module (request.py, worker.py, events.py, server.py,
dryad.py, admin.py with its users and dryads in identity.py); parsing lives
in parse.py, printing in output.py, the client in session.py (its
`make_client` is the seam tests replace).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import click

from boruta.cli import output as out
from boruta.cli.admin import admin
from boruta.cli.dryad import dryad
from boruta.cli.errors import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    error_extra,
    exc_text,
    is_unreachable,
)
from boruta.cli.events import events
from boruta.cli.options import CONTEXT, global_options, json_setting, with_ports
from boruta.cli.request import request
from boruta.cli.server import ping, server
from boruta.cli.top import top
from boruta.cli.worker import worker
from boruta.core.errors import BorutaError
from boruta.transport.errors import HandshakeError

__all__ = ["EXIT_AUTH", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE", "EXIT_USAGE", "OPERATION_COMMANDS",
           "cli", "main", "run"]


@click.group(context_settings=CONTEXT)
@global_options()
@with_ports
def cli() -> None:
    """Boruta: request test devices from a farm, and look after the farm.

    \b
    Examples:
      boruta request new --caps device_type=rpi4 --wait
      boruta request list --state wait
      boruta worker list --json
      boruta --server tcp://boruta.example.com:{CLIENT_PORT} request show 7

    Exit status: 0 done, 1 the server refused the call, 2 the command line is
    wrong, 3 the server did not answer, 4 the secure handshake failed (the
    server refused our key, or its key is not the one we know).
    """


for _command in (request, worker, events, top, ping, server, dryad, admin):
    cli.add_command(_command)

# Which command calls each operation of the client endpoint (a test checks that every
# operation of boruta.transport.operations.CLIENT_OPS has one, and that it exists).
OPERATION_COMMANDS: dict[str, str] = {
    "ping": "ping",
    "new_request": "request new",
    "list_requests": "request list",
    "get_request_info": "request show",
    "update_request": "request update",
    "close_request": "request close",
    "acquire_worker": "request acquire",
    "prolong_access": "request prolong",
    "wait_request": "request wait",
    "renew_leases": "request renew",
    "queue_position": "request position",
    "explain_request": "request explain",
    "list_workers": "worker list",
    "get_worker_info": "worker show",
    "set_state": "worker set-state",
    "set_groups": "worker set-groups",
    "deregister": "worker deregister",
    "healthcheck": "worker healthcheck",
    "user_add": "admin user add",
    "user_set": "admin user set",
    "user_remove": "admin user remove",
    "user_list": "admin user list",
    "user_token": "admin user token",
    "dryad_enroll": "admin dryad enroll",
    "dryad_revoke": "admin dryad revoke",
    "dryad_list": "admin dryad list",
}


# --------------------------------------------------------------------------- reporting

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
        _report(json_out or json_setting(ctx_meta), exc.code, exc.message, **error_extra(ctx_meta))
        return exc.exit_code
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a sentence
        return _report_exception(exc, json_out or json_setting(ctx_meta), error_extra(ctx_meta))


def _report_exception(exc: BaseException, json_out: bool, extra: dict[str, Any]) -> int:
    """Any other failure as one sentence, with the exit status that says whose it was."""
    if isinstance(exc, (KeyboardInterrupt, click.Abort)):
        _report(json_out, "interrupted", "interrupted", **extra)
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_REFUSED)
    if isinstance(exc, BrokenPipeError):         # `boruta ... | head`: the reader has enough
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    if isinstance(exc, BorutaError):
        _report(json_out, exc.code, exc.message or exc_text(exc), **extra)
        if isinstance(exc, HandshakeError):
            return EXIT_AUTH
        return EXIT_UNREACHABLE if is_unreachable(exc) else EXIT_REFUSED
    message = exc_text(exc)
    if isinstance(exc, TimeoutError):
        _report(json_out, "timeout", f"the server did not answer in time ({message})", **extra)
        return EXIT_UNREACHABLE
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
