"""What the client endpoint does for each operation of the table (`op_<name>`).

Arguments arrive converted by the operation's declaration; the core checks
its own rules and raises the error whose code the client gets. Reads return
documents (boruta.transport.documents); parked calls go to ParkedCalls.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boruta
from boruta.core.errors import PriorityError
from boruta.core.explain import to_doc as explain_doc
from boruta.core.types import HI_PRIO, LO_PRIO
from boruta.server.endpoint import Call
from boruta.server.parked import PARKED
from boruta.transport import documents
from boruta.transport.errors import PROTOCOL_VERSION

if TYPE_CHECKING:
    from boruta.server.app import Server


class ClientOperations:
    def __init__(self, app: "Server") -> None:
        self.app = app

    # ------------------------------------------------------------------ requests
    def op_ping(self, call: Call, a: dict[str, Any]) -> Any:
        app = self.app
        user = call.user
        return {"server": boruta.__version__, "protocol": PROTOCOL_VERSION,
                "matcher": app.sched.matcher_kind, "endpoints": dict(app.endpoints),
                "heartbeat_interval": app.cfg.heartbeat_interval,
                "secure": not app.cfg.insecure,
                "user": None if user is None else {"name": user.name, "role": str(user.role)}}

    def op_new_request(self, call: Call, a: dict[str, Any]) -> Any:
        """The request belongs to the caller: their name and groups, within their limits."""
        sched, user, priority = self.app.sched, call.user, a["priority"]
        owner = None
        if user is not None:
            if not HI_PRIO <= priority <= LO_PRIO:
                raise PriorityError()                # the core's own error comes first
            user.check_priority(priority)
            user.check_open(sched.open_requests(user.name))
            owner = user.owner
        req_id = sched.new_request(a["caps"], priority, owner, a["valid_after"], a["deadline"],
                                   queue_unsatisfiable=bool(a["queue_unsatisfiable"]),
                                   lease=a["lease"], expr=a["expr"])
        return {"id": req_id}

    def op_renew_leases(self, call: Call, a: dict[str, Any]) -> Any:
        """A user renews only their own requests' leases (an admin anyone's)."""
        user = call.user
        owner = None if user is None or user.admin else user.name
        held, lost = self.app.sched.renew_leases(a["ids"], owner)
        return {"held": held, "lost": lost}

    def op_queue_position(self, call: Call, a: dict[str, Any]) -> Any:
        state, ahead, ready = self.app.sched.queue_position(a["id"])
        return {"state": str(state), "ahead": ahead, "ready": ready}

    def op_explain_request(self, call: Call, a: dict[str, Any]) -> Any:
        return explain_doc(self.app.sched.explain(a["id"]))

    def op_update_request(self, call: Call, a: dict[str, Any]) -> Any:
        priority = a["priority"]
        if call.user is not None and priority and HI_PRIO <= priority <= LO_PRIO:
            call.user.check_priority(priority)       # a user's range holds for changes too
        self.app.sched.update_request(a["id"], a["priority"], a["valid_after"], a["deadline"])
        return None

    def op_close_request(self, call: Call, a: dict[str, Any]) -> Any:
        self.app.sched.close_request(a["id"])
        return None

    def op_get_request_info(self, call: Call, a: dict[str, Any]) -> Any:
        return documents.request_out(self.app.sched.get_request_info(a["id"]))

    def op_list_requests(self, call: Call, a: dict[str, Any]) -> Any:
        items, info = self.app.sched.list_requests(a["filter"], a["sorter"], a["paginator"])
        return documents.list_out([documents.request_out(i) for i in items], info)

    def op_acquire_worker(self, call: Call, a: dict[str, Any]) -> Any:
        return self.app.parked.acquire(call.route, call.msg_id, a["id"], a["timeout"],
                                       call.who())

    def op_prolong_access(self, call: Call, a: dict[str, Any]) -> Any:
        self.app.sched.prolong_access(a["id"])
        return None

    def op_wait_request(self, call: Call, a: dict[str, Any]) -> Any:
        return self.app.parked.wait(call.route, call.msg_id, a["id"], a["states"], a["timeout"],
                                    call.who())

    # ------------------------------------------------------------------ workers
    def op_list_workers(self, call: Call, a: dict[str, Any]) -> Any:
        items, info = self.app.sched.list_workers(a["filter"], a["sorter"], a["paginator"])
        return documents.list_out([documents.worker_out(i) for i in items], info)

    def op_get_worker_info(self, call: Call, a: dict[str, Any]) -> Any:
        return documents.worker_out(self.app.sched.get_worker_info(a["uuid"]))

    def op_set_state(self, call: Call, a: dict[str, Any]) -> Any:
        self.app.sched.set_state(a["uuid"], a["state"])
        return None

    def op_set_groups(self, call: Call, a: dict[str, Any]) -> Any:
        self.app.sched.set_groups(a["uuid"], a["groups"])
        return None

    def op_deregister(self, call: Call, a: dict[str, Any]) -> Any:
        self.app.sched.deregister(a["uuid"])
        return None

    def op_healthcheck(self, call: Call, a: dict[str, Any]) -> Any:
        uuid = a["uuid"]
        self.app.sched.get_worker_info(uuid)               # not_found for unknown workers
        self.app.spawn(self.app.dryads.healthcheck(uuid, (call.route, call.msg_id)))
        return PARKED
