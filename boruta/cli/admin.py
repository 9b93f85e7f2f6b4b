"""`boruta admin ...`: the farm's users and dryads (identity.py), and `dump|restore`,
the server's durable state as JSON lines, and back.

The dump reads the last committed state in one consistent snapshot, so a
running server is not disturbed; a restore is all or nothing, into an empty
state directory only.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

import click

from boruta.cli import output as out
from boruta.cli.errors import exc_text, refused
from boruta.cli.identity import dryad, user
from boruta.cli.options import CONTEXT, json_mode, json_option


@click.group("admin", context_settings=CONTEXT)
def admin() -> None:
    """Manage the farm's users and dryads; dump and restore the server's state.

    `user` and `dryad` ask the server (as an admin). `dump` and `restore`
    work on the state directory itself: the dump is JSON lines (a meta
    record, then users, enrolments, workers, tunnels and requests) and holds
    the private keys of jobs in progress: keep it as secret as the state
    directory.

    \b
    Examples:
      boruta admin user add alice --group lab
      boruta admin dryad enroll 4f1a2b3c-0000-4000-8000-000000000001
      boruta admin dump --state-dir /var/lib/boruta > state.jsonl
      boruta admin restore --state-dir /var/lib/boruta-new < state.jsonl
    """


admin.add_command(user)
admin.add_command(dryad)


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
    from boruta.server.store import Store, StoreError
    where = _resolve_state_dir(state_dir)
    counts = {"worker": 0, "request": 0, "tunnel": 0}
    try:
        store = Store(where, readonly=True)
    except StoreError as exc:
        raise refused(str(exc), "state_error") from None
    try:
        sink = open(output, "w", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        store.close()
        raise refused(f"cannot write {output}: {exc_text(exc)}", "state_error") from None
    try:
        for record in store.dump():
            sink.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            counts[record["kind"]] = counts.get(record["kind"], 0) + 1
        sink.flush()
    except StoreError as exc:
        raise refused(str(exc), "state_error") from None
    finally:
        store.close()
        if output:
            sink.close()
    identity = (f", {counts.get('user', 0)} users and {counts.get('enrolment', 0)} dryad "
                "enrolments" if counts.get("user") or counts.get("enrolment") else "")
    sys.stderr.write(f"Dumped {counts['worker']} workers and {counts['request']} requests"
                     f"{identity} from {where}.\n")


@admin.command("restore", context_settings=CONTEXT)
@_state_dir_option
@click.option("--input", "-i", "input_", metavar="FILE",
              help="Read the dump from FILE instead of stdin.")
@json_option("Print what was restored as one JSON document.")
def admin_restore(state_dir: str | None, input_: str | None) -> None:
    """Restore a dump into an empty state directory (the server stopped).

    All or nothing: the first bad line is reported and nothing is written.
    The directory may not exist yet; one that holds state is refused.

    \b
    Examples:
      boruta admin restore --state-dir /var/lib/boruta < state.jsonl
      boruta admin restore --state-dir /var/lib/boruta -i state.jsonl
    """
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
        raise refused(f"cannot read {input_}: {exc_text(exc)}", "state_error") from None
    store = None
    try:
        store = Store(where, lock=True)
        workers, requests = store.restore(records(source))
        users, enrolments = len(store.load_users()), len(store.load_enrolments())
    except StoreError as exc:
        raise refused(f"nothing restored: {exc}", "state_error") from None
    except UnicodeDecodeError as exc:
        raise refused(f"nothing restored: the dump is not UTF-8 text ({exc.reason})",
                      "state_error") from None
    finally:
        if store is not None:
            store.close()
        if input_:
            source.close()
    if json_mode():
        out.print_json({"state_dir": where, "workers": workers, "requests": requests,
                        "users": users, "enrolments": enrolments})
    else:
        identity = (f", {users} users and {enrolments} dryad enrolments"
                    if users or enrolments else "")
        sys.stdout.write(f"Restored {workers} workers and {requests} requests{identity} "
                         f"into {where}.\n")
