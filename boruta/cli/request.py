"""`boruta request ...`: file, inspect and use requests for workers."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import click

from boruta.cli import output as out
from boruta.cli.access import acquire, check_key_out, print_access, public_access
from boruta.cli.errors import refused, remember_created, wait_reported
from boruta.cli.hold import closed_on_interrupt, hold
from boruta.cli.options import (
    CONTEXT,
    PRIORITY,
    REQ_ID,
    REQ_STATE,
    REQUIREMENT,
    TIME,
    WAIT_TIMEOUT_HELP,
    global_options,
    json_mode,
    list_options,
    paginator,
    requirements,
    show,
    wait_timeout,
)
from boruta.cli.explain_output import format_explanation, start_phrase
from boruta.cli.session import client_session, fetch_after, report_change
from boruta.core.errors import BorutaError
from boruta.core.types import HI_PRIO, LO_PRIO, ReqState, RequestFilter
from boruta.transport.leases import DEFAULT_LEASE

DEFAULT_PRIORITY = 8       # halfway between HI_PRIO (1) and LO_PRIO (16)


def _changed(client: Any, req_id: int, text: str) -> None:
    report_change(lambda: client.get_request_info(req_id), {"id": req_id}, text)


@click.group(context_settings=CONTEXT)
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
@click.option("--caps", "caps", type=REQUIREMENT, multiple=True, required=True,
              metavar="KEY=VALUE|EXPR",
              help="A capability the worker must have, or an expression: 'KEY in V1,V2', "
                   "'KEY LOW..HIGH', 'KEY != VALUE', 'KEY?', '!KEY'; repeat for more.")
@click.option("--priority", type=PRIORITY, default=DEFAULT_PRIORITY, show_default=True,
              metavar="N", help=f"{HI_PRIO} (most important) to {LO_PRIO} (least).")
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
@click.option("--lease", "lease", type=click.FloatRange(min=0, min_open=True), metavar="S",
              default=DEFAULT_LEASE, show_default=True,
              help="With --wait: the lease's grace; the server closes the request this long "
                   "after the command dies.")
@click.option("--no-lease", is_flag=True,
              help="With --wait: no lease; print the access and exit, leaving the request "
                   "open until it is closed or its job times out.")
@global_options(WAIT_TIMEOUT_HELP.format(what=" for a worker with --wait (default 1 hour)"))
def request_new(caps: tuple[Any, ...], priority: int, valid_after: Any,
                deadline: Any, queue_unsatisfiable: bool, wait: bool, key_out: str | None,
                lease: float, no_lease: bool) -> None:
    """File a new request and print its ID.

    With --wait it then waits for a worker, prints how to log in, and holds
    the request by a lease until Ctrl-C (which closes it) or until the
    request ends; if the command is killed, the server closes the request
    after the lease's grace. Without --wait, or with --no-lease, the request
    stays open after the command exits.

    \b
    Examples:
      boruta request new --caps device_type=rpi4
      boruta request new --caps device_type=rpi4 --caps display=yes --priority 2 --deadline +2h
      ID=$(boruta request new --caps device_type=rpi4)
      boruta request new --caps device_type=rpi4 --wait --timeout 30m
      boruta request new --caps device_type=rpi4 --wait --no-lease --key-out rpi4.key
      boruta request new --caps 'serial in 57600,115200' --caps 'voltage 2.9..3.6' --caps '!sdmux'
    """
    capmap, exprs = requirements(caps)
    if key_out is not None and not wait:
        raise click.UsageError("--key-out only makes sense with --wait")
    if no_lease and not wait:
        raise click.UsageError("--no-lease only makes sense with --wait (a request filed "
                               "without --wait has no lease)")
    if wait:
        check_key_out(key_out or "./boruta-0.key")
    leased = wait and not no_lease
    with client_session(waits=wait) as client:
        req_id = client.new_request(capmap, priority, valid_after=valid_after, deadline=deadline,
                                    queue_unsatisfiable=queue_unsatisfiable,
                                    lease=lease if leased else None, expr=exprs)
        remember_created(req_id)
        if not wait:
            if json_mode():
                out.print_json(client.get_request_info(req_id))
            else:
                click.echo(req_id)
            return
        if not json_mode():
            click.echo(req_id)
        with closed_on_interrupt(client, req_id) if leased else _nothing():
            access = acquire(client, req_id, key_out)
            if json_mode():
                doc = out.to_jsonable(fetch_after(lambda: client.get_request_info(req_id),
                                                  {"id": req_id}))
                doc["access"] = public_access(access)
                out.print_json(doc)
            else:
                print_access(req_id, access)
            if leased:
                hold(client, req_id)


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


@request.command("list")
@click.option("--state", "states", type=REQ_STATE, multiple=True, metavar="S",
              help="Only requests in this state (wait, inprogress, done, ...); repeat for more.")
@click.option("--priority", "priorities", type=PRIORITY, multiple=True, metavar="N",
              help="Only requests with this priority; repeat for more.")
@click.option("--id", "ids", type=REQ_ID, multiple=True, metavar="N",
              help="Only the request with this ID; repeat for more.")
@click.option("--mine", is_flag=True, help="Only the requests you filed.")
@list_options(REQ_ID, "ID", "Start after the request with this ID.",
              "Sort by id, priority, deadline, validafter or state.")
@global_options()
def request_list(states: tuple[ReqState, ...], priorities: tuple[int, ...], ids: tuple[int, ...],
                 mine: bool, sort: Any, limit: int | None, after: int | None,
                 backward: bool) -> None:
    """List requests.

    \b
    Examples:
      boruta request list
      boruta request list --mine --state wait --state inprogress --sort priority:desc
      boruta request list --limit 20 --after 140
      boruta request list --json | jq '.items[].id'
    """
    with client_session() as client:
        owners = (_my_name(client),) if mine else ()
        flt = RequestFilter(ids=tuple(ids), priorities=tuple(priorities), states=tuple(states),
                            owners=owners) if (states or priorities or ids or owners) else None
        items, info = client.list_requests(flt, sort, paginator(after, backward, limit, 0))
    show(out.list_doc(items, info), lambda _: out.print_request_table(items, info, backward))


def _my_name(client: Any) -> str:
    """Who the server knows this client as (its answer to ping names the caller's user)."""
    info = client.ping()
    user = info.get("user") if isinstance(info, dict) else None
    name = user.get("name") if isinstance(user, dict) else None
    if not isinstance(name, str) or not name:
        raise refused("the server does not say which user you are (a server without users?): "
                      "--mine cannot tell your requests apart", "unknown_user")
    return name


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
        info = client.get_request_info(req_id)
        estimate = (_start_estimate(client, req_id)
                    if info.state is ReqState.WAIT and not json_mode() else None)
    show(info, lambda r: _print_with_estimate(r, estimate))


def _start_estimate(client: Any, req_id: int) -> str | None:
    """A waiting request's expected start in words; None when the server cannot say."""
    try:
        return start_phrase(client.explain_request(req_id))
    except BorutaError:                     # an older server (unknown operation), or gone
        return None


def _print_with_estimate(info: Any, estimate: str | None) -> None:
    out.print_request(info)
    if estimate:
        click.echo(f"Estimate: {estimate}")


@request.command("update")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@click.option("--priority", type=PRIORITY, metavar="N",
              help=f"New priority, {HI_PRIO} to {LO_PRIO}.")
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
        _changed(client, req_id, f"Request {req_id} updated.")


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
        _changed(client, req_id, f"Request {req_id} closed.")


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
        access = acquire(client, req_id, key_out)
    show(public_access(access), lambda _: print_access(req_id, access))


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
        req = fetch_after(lambda: client.get_request_info(req_id), None)
    if json_mode():
        out.print_json(req if req is not None else {"id": req_id})
    elif req is not None and req.job is not None:
        click.echo(f"Request {req_id} prolonged; its job now ends at {out.iso(req.job.timeout)}.")
    else:
        click.echo(f"Request {req_id} prolonged.")


@request.command("renew")
@click.argument("req_ids", metavar="ID...", type=REQ_ID, nargs=-1, required=True)
@global_options()
def request_renew(req_ids: tuple[int, ...]) -> None:
    """Renew the leases of your requests by hand (a script holding a lease).

    The clients renew their leases themselves; this is for a shell script
    that holds a request filed with a lease by another command. Exit status
    1 if any lease is lost (the request ended, or its grace passed).

    \b
    Example:
      while sleep 20; do boruta request renew 7 || break; done
    """
    with client_session() as client:
        result = client.renew_leases(list(req_ids))
    lost = [int(i) for i in result.get("lost", [])]
    if json_mode():
        out.print_json(result)
    else:
        for req_id in result.get("held", []):
            click.echo(f"Request {req_id}: lease renewed.")
    if lost:
        raise refused(f"no lease held for request{'s' if len(lost) > 1 else ''} "
                      f"{', '.join(map(str, lost))} (ended, without a lease, not yours, "
                      "or its grace passed)", "lease_lost")


@request.command("position")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@global_options()
def request_position(req_id: int) -> None:
    """Where a waiting request stands in the queue.

    \b
    Example:
      boruta request position 7
    """
    with client_session() as client:
        doc = client.queue_position(req_id)
    show(doc, lambda d: click.echo(out.queue_place(req_id, d)))


@request.command("explain")
@click.argument("req_id", metavar="ID", type=REQ_ID)
@global_options()
def request_explain(req_id: int) -> None:
    """Why a request waits, and when it is expected to start.

    Its candidate workers by state, the terms that rule out the nearest
    misses, how many ready requests its candidates serve first, and what
    holds it.

    \b
    Example:
      boruta request explain 7
    """
    with client_session() as client:
        doc = client.explain_request(req_id)
    show(doc, lambda d: click.echo(format_explanation(d)))


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
    timeout = wait_timeout(None)
    unmet = (f"request {req_id} is not yet {' or '.join(str(s) for s in states)}" if states
             else f"request {req_id} is still WAITING")
    with client_session(waits=True) as client, wait_reported(unmet, timeout):
        req = client.wait_request(req_id, states=list(states) or None, timeout=timeout)
    show(req, out.print_request)
