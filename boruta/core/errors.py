"""Every error the core can raise, with a stable code and upstream's message.

The code is what travels on the wire and what scripts match on; the message
is upstream Boruta's text where upstream has one, so that people recognise
it; messages name what they refer to where the caller would otherwise guess.
"""
from __future__ import annotations


class BorutaError(Exception):
    """Base class: `code` is stable, `message` is for people."""

    code: str = "internal"
    default_message: str = "Boruta's internal logic error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class NotFoundError(BorutaError):
    """`<what> not found`; `what` is "Request", "Worker", "Job", "request"..."""

    code = "not_found"

    def __init__(self, what: str = "Request") -> None:
        self.what = what
        super().__init__(f"{what} not found")


class BadArgumentError(BorutaError):
    """A call's argument has the wrong type or shape (our addition)."""

    code = "bad_argument"
    default_message = "invalid argument"


class PriorityError(BorutaError):
    code = "bad_priority"
    default_message = "requested priority out of bounds"


class InvalidTimeRangeError(BorutaError):
    code = "invalid_time_range"
    default_message = "requested time range illegal - ValidAfter must be before Deadline"


class DeadlineInThePastError(BorutaError):
    code = "deadline_in_the_past"
    default_message = "deadline in the past"


class WorkerNotAssignedError(BorutaError):
    code = "worker_not_assigned"
    default_message = "worker not assigned"


class ModificationForbiddenError(BorutaError):
    code = "modification_forbidden"
    default_message = "action cannot be executed in current state"


class ProlongLimitError(BorutaError):
    """Our addition: upstream never limited ProlongAccess."""

    code = "prolong_limit"
    default_message = "access cannot be prolonged any more"


class MissingUUIDError(BorutaError):
    code = "missing_uuid"
    default_message = "Capabilities are missing UUID entry"


class InMaintenanceError(BorutaError):
    code = "in_maintenance"
    default_message = "It is forbidden to set FAIL state when Worker is in MAINTENANCE state"


class NotInFailOrMaintenanceError(BorutaError):
    code = "not_in_fail_or_maintenance"
    default_message = "Worker is not in FAIL or MAINTENANCE state"


class WrongStateArgumentError(BorutaError):
    code = "wrong_state_argument"
    default_message = "Only state changes to IDLE and MAINTENANCE are allowed"


class ForbiddenStateChangeError(BorutaError):
    code = "forbidden_state_change"
    default_message = "Invalid state transition was requested"


class NoMatchingWorkerError(BorutaError):
    """NewRequest whose caps and groups no registered worker can satisfy (our addition:
    upstream queued such a request for ever)."""

    code = "no_matching_worker"
    default_message = "No matching worker"


class MissingIPError(BorutaError):
    code = "missing_ip"
    default_message = "IP address is missing from address"


class MissingPortError(BorutaError):
    code = "missing_port"
    default_message = "Port is missing from address"


class InvalidAddressError(BorutaError):
    code = "invalid_address"
    default_message = "invalid address"


class WrongSortItemError(BorutaError):
    code = "wrong_sort_item"
    default_message = "unknown name of item by which list should be sorted"


class WrongSortOrderError(BorutaError):
    code = "wrong_sort_order"
    default_message = "unknown sort order (valid: ascending or descending)"


class WrongListDirectionError(BorutaError):
    code = "wrong_list_direction"
    default_message = "unknown direction (valid: forward or backward)"


class ForbiddenError(BorutaError):
    """The caller's user may not do this (not the request's owner, not an admin)."""

    code = "forbidden"
    default_message = "forbidden"


class PriorityNotAllowedError(BorutaError):
    """A priority outside the range the caller's user may use."""

    code = "priority_not_allowed"
    default_message = "priority outside your allowed range"


class TooManyOpenRequestsError(BorutaError):
    """The caller's user has as many open (waiting or running) requests as allowed."""

    code = "too_many_requests"
    default_message = "too many open requests"


class UnknownUserError(BorutaError):
    """A call on a connection whose key no user holds (any more)."""

    code = "unknown_user"
    default_message = "this key belongs to no user"


class NotEnrolledError(BorutaError):
    """A dryad registering a worker its key was not enrolled for."""

    code = "not_enrolled"
    default_message = "this dryad's key is not enrolled for that worker"


class AlreadyExistsError(BorutaError):
    """A user or an enrolment that is already there."""

    code = "already_exists"
    default_message = "already exists"


class ConfigError(BorutaError, ValueError):
    """A configuration file, flag or variable that cannot be used; says which and why.

    One class for the server's, the dryad's and the client's configuration.
    `field` names the setting (dotted, e.g. "caps.UUID"), `source` the file.
    """

    code = "bad_config"
    default_message = "invalid configuration"

    def __init__(self, message: str, *, field: str | None = None,
                 source: str | None = None) -> None:
        self.field = field
        self.problem = message
        self.source = source
        where = f"{source}: " if source else ""
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


def all_error_classes() -> list[type[BorutaError]]:
    """Every concrete error class, for the wire codec's code -> class table."""
    seen: list[type[BorutaError]] = []
    stack: list[type[BorutaError]] = [BorutaError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
