"""What the `boruta` command prints: JSON documents for machines, rich tables for people.

A request or a worker in `--json` output is the document the protocol
carries (boruta.transport.documents), so that the CLI, the library and
docs/protocol.md agree on one shape. Times are ISO 8601 UTC with a Z;
durations are written for people (`1s`, `2.5s`, `10m`, `1h30m`).
"""
from __future__ import annotations

import enum
import json
import shlex
import shutil
import sys
from dataclasses import asdict, is_dataclass
from datetime import datetime
from collections.abc import Mapping
from typing import Any, Iterable, Sequence, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from boruta.core.durations import format_duration
from boruta.core.types import ListInfo, ReqInfo, WorkerInfo, iso
from boruta.transport.documents import request_out, worker_out

NONE = "-"


# --------------------------------------------------------------------------- JSON

def to_jsonable(value: Any) -> Any:
    """Times as ISO 8601 UTC with a Z, enums as their wire strings, tuples as lists."""
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, (str, int, float)) else str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, ReqInfo):
        return request_out(value)
    if isinstance(value, WorkerInfo):
        return worker_out(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def dumps(doc: Any, *, compact: bool = False) -> str:
    doc = to_jsonable(doc)
    if compact:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(doc, ensure_ascii=False, indent=2)


def print_json(doc: Any, *, compact: bool = False, stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    out.write(dumps(doc, compact=compact) + "\n")
    out.flush()


def error_doc(code: str, message: str, **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    err.update({k: v for k, v in extra.items() if v is not None})
    return {"error": err}


def list_doc(items: Sequence[Any], info: ListInfo | None) -> dict[str, Any]:
    docs = [to_jsonable(i) for i in items]
    total = info.total_items if info is not None else len(docs)
    remaining = info.remaining_items if info is not None else 0
    return {"items": docs, "total": total, "remaining": remaining}


def access_doc(host: str, port: int, username: str, key_file: str,
               key_type: str | None) -> dict[str, Any]:
    return {"host": host, "port": port, "username": username, "key_file": key_file,
            "key_type": key_type}


# --------------------------------------------------------------------------- people



def make_console(stream: TextIO | None = None) -> Console:
    out = stream if stream is not None else sys.stdout
    is_tty = bool(getattr(out, "isatty", lambda: False)())
    width = None if is_tty else max(shutil.get_terminal_size((200, 24)).columns, 200)
    return Console(file=out, width=width, highlight=False, markup=False, emoji=False,
                   soft_wrap=False)


class Printer:
    """Rich renderables to a terminal as they are; to a pipe or file as plain text
    without the trailing blanks that padded table cells leave."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.console = make_console(self.stream)
        self.plain = not self.console.is_terminal

    def print(self, renderable: Any) -> None:
        if not self.plain:
            self.console.print(renderable)
            return
        with self.console.capture() as capture:
            self.console.print(renderable)
        text = "\n".join(line.rstrip() for line in capture.get().splitlines())
        self.stream.write(text + "\n")
        self.stream.flush()


def _fmt_time(value: datetime | None) -> str:
    return iso(value) if value is not None else NONE


def fmt_caps(caps: Mapping[str, str]) -> str:
    if not caps:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(caps.items()))


def fmt_groups(groups: Iterable[str]) -> str:
    groups = list(groups)
    return ",".join(groups) if groups else NONE


def _table(*columns: str) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False,
                  padding=(0, 3, 0, 0), show_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=True, overflow="fold")
    return table


def _row(table: Table, *cells: Any) -> None:
    table.add_row(*(Text(NONE if c is None else str(c)) for c in cells))


def print_request_table(reqs: Sequence[ReqInfo], info: ListInfo | None,
                        backward: bool = False, stream: TextIO | None = None) -> None:
    console = Printer(stream)
    if not reqs:
        console.print(Text(f"No requests{_total_suffix(info)}."))
        return
    table = _table("ID", "PRIORITY", "STATE", "WORKER", "VALID AFTER", "DEADLINE", "CAPS")
    for r in reqs:
        _row(table, r.id, r.priority, str(r.state), r.job.worker_uuid if r.job else NONE,
             _fmt_time(r.valid_after), _fmt_time(r.deadline), fmt_caps(r.caps))
    console.print(table)
    hint = None
    if info is not None and info.remaining_items:
        border = reqs[0].id if backward else reqs[-1].id
        hint = f"--after {border}" + (" --backward" if backward else "")
    _print_summary(console, len(reqs), info, "request", hint)


def print_worker_table(workers: Sequence[WorkerInfo], info: ListInfo | None,
                       backward: bool = False, stream: TextIO | None = None) -> None:
    console = Printer(stream)
    if not workers:
        console.print(Text(f"No workers{_total_suffix(info)}."))
        return
    show_reason = any(w.fail_reason for w in workers)
    cols = ["UUID", "STATE", "GROUPS", "CAPS"] + (["FAIL REASON"] if show_reason else [])
    table = _table(*cols)
    for w in workers:
        caps = {k: v for k, v in w.caps.items() if k != "UUID"}
        cells = [w.worker_uuid, str(w.state), fmt_groups(w.groups), fmt_caps(caps)]
        if show_reason:
            cells.append(w.fail_reason or NONE)
        _row(table, *cells)
    console.print(table)
    hint = None
    if info is not None and info.remaining_items:
        border = workers[0].worker_uuid if backward else workers[-1].worker_uuid
        hint = f"--after {border}" + (" --backward" if backward else "")
    _print_summary(console, len(workers), info, "worker", hint)


def _total_suffix(info: ListInfo | None) -> str:
    if info is not None and info.total_items:
        return f" on this page ({info.total_items} in all)"
    return ""


def _print_summary(console: Printer, shown: int, info: ListInfo | None, noun: str,
                   hint: str | None) -> None:
    if info is None:
        return
    if info.remaining_items or shown != info.total_items:
        text = f"{shown} of {info.total_items} {noun}s shown, {info.remaining_items} more"
        if hint:
            text += f" (next page: {hint})"
        console.print(Text(text, style="dim"))


def print_fields(fields: Sequence[tuple[str, Any]], stream: TextIO | None = None) -> None:
    console = Printer(stream)
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0),
                  show_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in fields:
        table.add_row(Text(name), Text(NONE if value is None else str(value)))
    console.print(table)


def print_request(req: ReqInfo, stream: TextIO | None = None) -> None:
    print_fields([
        ("ID", req.id),
        ("Priority", req.priority),
        ("State", str(req.state)),
        ("Caps", fmt_caps(req.caps)),
        ("Expressions", ", ".join(req.expr) if req.expr else NONE),
        ("Groups", fmt_groups(req.owner.groups)),
        ("Valid after", _fmt_time(req.valid_after)),
        ("Deadline", _fmt_time(req.deadline)),
        ("Worker", req.job.worker_uuid if req.job else NONE),
        ("Job ends", _fmt_time(req.job.timeout) if req.job else NONE),
        ("Lease", f"{req.lease:g} s grace" if req.lease is not None else NONE),
    ], stream)


def queue_place(req_id: int, doc: Mapping[str, Any]) -> str:
    """One line for a request's place: `Request 7: WAITING, 3 ahead of it (12 ready).`"""
    state = doc.get("state", "?")
    if state != "WAITING":
        return f"Request {req_id}: {state}."
    ahead, ready = doc.get("ahead"), doc.get("ready", 0)
    if ahead is None:
        return f"Request {req_id}: WAITING, not ready yet (its ValidAfter is to come)."
    return f"Request {req_id}: WAITING, {ahead} ahead of it ({ready} ready)."


def print_worker(worker: WorkerInfo, stream: TextIO | None = None) -> None:
    fields: list[tuple[str, Any]] = [
        ("UUID", worker.worker_uuid),
        ("State", str(worker.state)),
        ("Groups", fmt_groups(worker.groups)),
        ("Caps", fmt_caps(worker.caps)),
        ("Fail reason", worker.fail_reason or NONE),
    ]
    if worker.dryad_address:
        fields.append(("Dryad", worker.dryad_address))
    if worker.ssh_address:
        fields.append(("SSH", worker.ssh_address))
    print_fields(fields, stream)


_ENDPOINT_LABELS = {"listen": "Clients", "dryad": "Dryads", "events": "Events"}


def print_ping(info: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """The server's answer to ping, one field a line."""
    fields: list[tuple[str, Any]] = [
        ("Server", info.get("server")),
        ("Protocol", info.get("protocol")),
        ("Matcher", info.get("matcher")),
    ]
    secure = info.get("secure")
    if isinstance(secure, bool):
        fields.append(("Security", "CurveZMQ" if secure else "none (insecure: every peer an admin)"))
    user = info.get("user")
    if isinstance(user, Mapping):
        fields.append(("You", f"{user.get('name')} ({user.get('role')})"))
    heartbeat = info.get("heartbeat_interval")
    if isinstance(heartbeat, (int, float)) and not isinstance(heartbeat, bool):
        fields.append(("Heartbeat", f"every {format_duration(heartbeat)}"))
    endpoints = info.get("endpoints")
    if isinstance(endpoints, Mapping):
        fields.extend((_ENDPOINT_LABELS.get(str(name), str(name)), where)
                      for name, where in endpoints.items())
    print_fields(fields, stream)


class AccessLineError(ValueError):
    """An access the CLI will not print as an `ssh` line: it would not be one command."""


def ssh_argv(key_file: str, host: str, port: int, username: str) -> list[str]:
    """The command that logs in to a worker, as a list of arguments."""
    return ["ssh", "-i", key_file, "-p", str(port), f"{username}@{host}"]


def check_access_line(key_file: str, host: str, username: str) -> None:
    """Refuse (AccessLineError) what no quoting makes safe in `eval "$(... | tail -n 1)"`.

    Quoting keeps `$(...)`, `;` and spaces inert, but a quoted newline
    splits the line, and `tail -n 1` hands the shell the unquoted rest; a
    user name starting with '-' would be read by ssh as an option.
    """
    for what, value in (("user name", username), ("host", host), ("key file", key_file)):
        if not value.isprintable():
            raise AccessLineError(f"the {what} {value!r:.60} holds a control character, "
                                  "so it cannot be printed as one command line")
    if username.startswith("-"):
        raise AccessLineError(f"the user name {username!r:.60} starts with '-', "
                              "which ssh would read as an option")


def ssh_command(key_file: str, host: str, port: int, username: str) -> str:
    """One line that a POSIX shell runs as exactly `ssh_argv(...)`, every part quoted."""
    check_access_line(key_file, host, username)
    return " ".join(shlex.quote(arg) for arg in ssh_argv(key_file, host, port, username))


def print_access(req_id: int, worker_uuid: str | None, host: str, port: int, username: str,
                 key_file: str, key_type: str | None, stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    where = f" on worker {worker_uuid}" if worker_uuid else ""
    shown_host = f"[{host}]" if ":" in host else host
    lines = [
        f"Request {req_id} is IN PROGRESS{where}.",
        f"Address:  {shown_host}:{port}",
        f"User:     {username}",
        f"Key:      {key_file}" + (f" ({key_type})" if key_type else ""),
        ssh_command(key_file, host, port, username),
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def format_event(event: Mapping[str, Any]) -> str:
    """One line for people: time, kind, subject, state, then the rest as key=value."""
    ev = to_jsonable(dict(event))
    at = ev.pop("at", None) or NONE
    kind = ev.pop("kind", None) or "event"
    subject = ev.pop("id", None)
    if subject is None:
        subject = ev.pop("uuid", None)
        if subject is None:
            subject = ev.pop("worker_uuid", None)
    state = ev.pop("state", None)
    ev.pop("seq", None)                    # the stream's bookkeeping, for machines only
    parts = [str(at), str(kind)]
    if subject is not None:
        parts.append(str(subject))
    if state is not None:
        parts.append(str(state))
    for key, value in ev.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        parts.append(f"{key}={value}")
    return "  ".join(parts)
