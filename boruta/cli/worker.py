"""`boruta worker ...`: inspect and administer workers (devices with their dryads)."""
from __future__ import annotations

from typing import Any

import click

from boruta.cli import output as out
from boruta.cli.options import (
    CAP,
    CONTEXT,
    SETTABLE_WORKER_STATE,
    UUID,
    WORKER_STATE,
    caps_dict,
    global_options,
    list_options,
    paginator,
    say,
    show,
)
from boruta.cli.session import client_session, report_change
from boruta.core.types import WorkerFilter, WorkerState


@click.group(context_settings=CONTEXT)
@global_options()
def worker() -> None:
    """Inspect and administer workers (devices with their dryads).

    \b
    Examples:
      boruta worker list --state idle
      boruta worker set-state 4f1a... maintenance
    """


@worker.command("list")
@click.option("--state", "states", type=WORKER_STATE, multiple=True, metavar="S",
              help="Only workers in this state (idle, running, maintenance, ...); repeat for more.")
@click.option("--caps", "caps", type=CAP, multiple=True, metavar="KEY=VALUE",
              help="Only workers with this capability; repeat for more.")
@click.option("--group", "groups", multiple=True, metavar="G",
              help="Only workers in this group; repeat for more (any of them).")
@list_options(UUID, "UUID", "Start after the worker with this UUID.",
              "Sort by uuid, state or groups.")
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
    capmap = caps_dict(caps)
    flt = WorkerFilter(groups=tuple(groups), caps=capmap, states=tuple(states)) \
        if (states or capmap or groups) else None
    with client_session() as client:
        items, info = client.list_workers(flt, sort, paginator(after, backward, limit, ""))
    show(out.list_doc(items, info), lambda _: out.print_worker_table(items, info, backward))


@worker.command("show")
@click.argument("uuid", type=UUID)
@global_options()
def worker_show(uuid: str) -> None:
    """Show one worker, with the addresses of its dryad and its sshd.

    \b
    Example:
      boruta worker show 4f1a2b3c-0000-4000-8000-000000000001
    """
    with client_session() as client:
        show(client.get_worker_info(uuid), out.print_worker)


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
        report_change(lambda: client.get_worker_info(uuid), {"uuid": uuid, "state": str(state)},
                      f"Worker {uuid} set to {str(state)}.")


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
        report_change(lambda: client.get_worker_info(uuid), {"uuid": uuid, "groups": list(groups)},
                      f"Worker {uuid} is now in {', '.join(groups) if groups else 'no group'}.")


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
    show({"uuid": uuid, "deregistered": True}, say(f"Worker {uuid} deregistered."))


@worker.command("healthcheck")
@click.argument("uuid", type=UUID)
@global_options()
def worker_healthcheck(uuid: str) -> None:
    """Ask a worker's dryad to check its board now.

    Exit 0 when the check passed. When it fails, this command exits 1 naming
    the reason, and the server marks the worker FAILED with it (a worker in
    MAINTENANCE stays there).

    \b
    Example:
      boruta worker healthcheck 4f1a2b3c-0000-4000-8000-000000000001
    """
    with client_session() as client:
        client.healthcheck(uuid)
    show({"uuid": uuid, "healthy": True}, say(f"Worker {uuid} passed its healthcheck."))
