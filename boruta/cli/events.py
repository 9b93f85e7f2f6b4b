"""`boruta events`: follow request and worker state changes as they happen."""
from __future__ import annotations

import sys

import click

from boruta.cli import output as out
from boruta.cli.options import CONTEXT, REQ_ID, UUID, global_options, json_mode
from boruta.cli.session import client_session, events_endpoint


@click.command("events", context_settings=CONTEXT)
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
        with client_session(events_endpoint=events_endpoint()) as client:
            for event in client.events(request_id=request_id, worker_uuid=worker_uuid):
                if as_json:
                    out.print_json(event, compact=True)
                else:
                    sys.stdout.write(out.format_event(event) + "\n")
                    sys.stdout.flush()
    except KeyboardInterrupt:
        return
