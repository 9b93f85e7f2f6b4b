"""`request new --wait` holds its board: the request's lease lives as long as the command.

The client renews the lease in the background; the command stays in the
foreground after printing the access, like `salloc` holding an allocation,
until Ctrl-C or SIGTERM (it closes the request, freeing the worker at once)
or until the request ends on its own (job timeout, closed elsewhere). If the
command is killed outright, nobody renews the lease and the server closes
the request after its grace.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import click

from boruta.cli.errors import sigterm_interrupts
from boruta.core.errors import BorutaError
from boruta.core.types import ReqState

ENDED = [ReqState.DONE, ReqState.FAILED, ReqState.CANCEL, ReqState.TIMEOUT, ReqState.INVALID]


@contextlib.contextmanager
def closed_on_interrupt(client: Any, req_id: int) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside: close the request (best effort), then stop as interrupted."""
    with sigterm_interrupts():
        try:
            yield
        except KeyboardInterrupt:
            with contextlib.suppress(BorutaError):
                client.close_request(req_id)
                click.echo(f"Request {req_id} closed.", err=True)
            raise


def hold(client: Any, req_id: int) -> ReqState:
    """Wait, renewing the lease, until the request ends; returns how it ended."""
    click.echo(f"Holding request {req_id}: its lease is renewed while this command runs; "
               "Ctrl-C closes it.", err=True)
    sys.stderr.flush()
    req = client.wait_request(req_id, states=ENDED, timeout=None)
    click.echo(f"Request {req_id} ended: {req.state}.", err=True)
    return req.state
