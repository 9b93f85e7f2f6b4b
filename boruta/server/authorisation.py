"""Who may call what: the operation table's `Access`, enforced for every client call.

Reads are open to every authenticated user. A request belongs to the user
who filed it: only they, or an admin, may update, close, acquire, prolong or
wait on it. Farm administration (worker states and groups, deregistration,
health checks, users and dryads) is for admins. The endpoint calls
`authorise` after the arguments are checked and before the handler runs, so
a refused call changes nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from boruta.core.errors import ForbiddenError
from boruta.transport.operations import Access, Operation

if TYPE_CHECKING:
    from boruta.server.app import Server
    from boruta.server.endpoint import Call


def authorise(op: Operation, call: "Call", args: dict[str, Any], app: "Server") -> None:
    """ForbiddenError unless the call's user may call `op` with `args`."""
    user = call.user
    if user is None or user.admin:
        return                       # no user book here (dryad endpoint), or an admin
    if op.access is Access.ADMIN:
        raise ForbiddenError(f"{op.name} is for admins; user {user.name!r} is not one")
    if op.access is Access.OWNER:
        owner = app.sched.request_owner(args["id"])       # not_found first
        if owner != user.name:
            raise ForbiddenError(f"request {args['id']} belongs to "
                                 f"{repr(owner) if owner else 'nobody known'}, "
                                 f"not to {user.name!r}")
