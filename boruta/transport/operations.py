"""The operation table: every operation of the protocol, declared once.

An `Operation` says everything anyone needs to serve or call it: its name
and endpoint, its arguments (wire type, how the server converts each into
the core's type, how a client encodes a Python value, the Python name of
the parameter), its result, the errors it may answer, whether a client may
resend it, whether the server parks it, and who may call it.

Everything reads this table: the server's endpoints dispatch from it and
check arguments with `Operation.check`; `boruta.Client` and
`boruta.AsyncClient` build their methods from it (boruta.transport.calls);
the dryad link checks the server's commands with it; docs/protocol.md's
tables are generated from it (`python -m boruta.transport`) and a
test keeps them equal; the CLI names the operation each command calls and a
test checks every client operation has one.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from boruta.core.errors import (AlreadyExistsError, BadArgumentError, BorutaError, DeadlineInThePastError,
                                ForbiddenStateChangeError, InMaintenanceError,
                                InvalidAddressError, InvalidTimeRangeError, MissingIPError,
                                MissingPortError, MissingUUIDError, ModificationForbiddenError,
                                NoMatchingWorkerError, NotFoundError,
                                NotInFailOrMaintenanceError, PriorityError, ProlongLimitError,
                                WorkerNotAssignedError, WrongListDirectionError,
                                WrongSortItemError, WrongSortOrderError,
                                WrongStateArgumentError)
from boruta.core.types import ReqState, WorkerState, iso, parse_req_state, parse_worker_state
from boruta.transport import arguments as a
from boruta.transport import documents
from boruta.transport.leases import DEFAULT_LEASE, MAX_RENEWALS
from boruta.transport.errors import (DeregisteredError, DryadError, NotRegisteredError,
                                     RequestEndedError, ServerBusyError, WaitTimeoutError)

Converter = Callable[[str, Any], Any]


class Endpoint(str, enum.Enum):
    """Where an operation is served."""

    CLIENT = "client"          # the client ROUTER: people, CI, tools
    DRYAD = "dryad"            # the dryad ROUTER: what a dryad sends
    COMMAND = "command"        # what the server sends a dryad (the dryad serves it)


class Access(str, enum.Enum):
    """Who may call an operation.

    The server's endpoint enforces it for every call (boruta.server.
    authorisation): ANYONE is every authenticated user, OWNER the request's
    owner or an admin, ADMIN an admin; DRYAD is a dryad enrolled for the
    worker it speaks of. A server run with `insecure = true` treats every
    peer as an admin.
    """

    ANYONE = "anyone"          # a read
    OWNER = "owner"            # the request's owner (or an admin)
    ADMIN = "admin"            # farm administration
    DRYAD = "dryad"            # the registered dryad of the worker, about itself
    SERVER = "server"          # a command from the server to a dryad


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Arg:
    """One argument: its wire name and type, and its two conversions."""

    name: str
    kind: str                       # wire type, for docs and the fuzzer: "id", "time", ...
    convert: Converter              # server side: wire value -> core value (BadArgumentError)
    required: bool = False
    doc: str = ""
    param: str = ""                 # the client method's parameter name (default: `name`)
    default: Any = None             # the client's default for an optional argument
    encode: Callable[[Any], Any] = _same   # client side: Python value -> wire value

    @property
    def python_name(self) -> str:
        return self.param or self.name


@dataclass(frozen=True)
class Operation:
    name: str
    endpoint: Endpoint
    summary: str
    args: tuple[Arg, ...] = ()
    result: str = "nil"                        # the result document, for people
    errors: tuple[type[BorutaError], ...] = ()  # codes it may answer beyond the common ones
    idempotent: bool = False                   # a read: a client may resend it after a timeout
    parks: bool = False                        # answered when a condition holds (timeout arg)
    access: Access = Access.ANYONE
    reply_within: float = 0.0                  # seconds the server may take beyond a call's
    decode: Callable[[Any], Any] = _same       # client side: wire result -> Python value
    known: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "known", frozenset(arg.name for arg in self.args))

    def check(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Wire arguments -> the core's values, every declared name present (None if absent)."""
        if not self.known.issuperset(args):
            unknown = next(key for key in args if key not in self.known)
            raise BadArgumentError(f"{self.name}: unknown argument {unknown!r}")
        out: dict[str, Any] = {}
        for arg in self.args:
            if arg.required and arg.name not in args:
                raise BadArgumentError(f"{self.name}: missing argument '{arg.name}'")
            out[arg.name] = arg.convert(arg.name, args.get(arg.name))
        return out

    def encode_args(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A client's Python values (by parameter name) -> the wire arguments, in order."""
        return {arg.name: arg.encode(values.get(arg.python_name, arg.default))
                for arg in self.args}


# --------------------------------------------------------------------------- client encoders
def encode_time(value: Any) -> Any:
    """datetime -> ISO 8601 UTC (naive = UTC); epoch numbers and strings go as they are."""
    if value is None or isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return iso(value)
    raise TypeError(f"a time must be a datetime, epoch seconds or an ISO string, "
                    f"not {type(value).__name__}")


def _state_name(state: Any, parse: Callable[[str], Any]) -> str:
    if isinstance(state, (ReqState, WorkerState)):
        return str(state)
    try:
        return str(parse(str(state)))
    except ValueError:
        return str(state)            # the server names the bad state


def encode_req_states(states: Iterable[Any] | None) -> list[str] | None:
    return None if states is None else [_state_name(s, parse_req_state) for s in states]


def encode_worker_state(state: Any) -> str:
    return _state_name(state, parse_worker_state)


def encode_list(values: Iterable[Any] | None) -> list[Any] | None:
    return None if values is None else list(values)


def encode_map(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if values is None else dict(values)


def _nothing(_: Any) -> None:
    return None


def _new_id(result: Any) -> int:
    return int(result["id"])


# --------------------------------------------------------------------------- arguments
def _id(doc: str = "the request's ID") -> Arg:
    return Arg("id", "id", a.identifier, True, doc, param="req_id")


def _uuid(doc: str = "the worker's UUID") -> Arg:
    return Arg("uuid", "uuid", a.as_str, True, doc)


_TIMEOUT = Arg("timeout", "seconds", a.opt(a.as_seconds),
               doc="seconds to wait; 0 answers at once, nil waits without limit")


def _list_args(filter_in: Converter, filter_out: Callable[[Any], Any],
               id_kind: type) -> tuple[Arg, ...]:
    return (Arg("filter", "filter", filter_in, doc="which items (nil: all)", encode=filter_out),
            Arg("sorter", "sorter", a.sorter_in, doc="order (nil: by ID)", encode=a.sorter_out),
            Arg("paginator", "paginator", lambda n, v: a.paginator_in(n, v, id_kind),
                doc="which page (nil: all)", encode=a.paginator_out))


_LIST_ERRORS = (WrongSortItemError, WrongSortOrderError, WrongListDirectionError, NotFoundError)
_TIME_ERRORS = (PriorityError, InvalidTimeRangeError, DeadlineInThePastError)


def _table(*ops: Operation) -> dict[str, Operation]:
    return {op.name: op for op in ops}


# --------------------------------------------------------------------------- the table
CLIENT = Endpoint.CLIENT

# Operations of the client endpoint (upstream's Requests and Workers sets, plus ping).
CLIENT_OPS: dict[str, Operation] = _table(
    Operation(
        "ping", CLIENT, "The server's version, protocol, matcher and endpoints; who you are.",
        result='{"server", "protocol", "matcher", "endpoints", "heartbeat_interval", "secure", '
               '"user": {"name", "role"}}',
        idempotent=True),
    Operation(
        "new_request", CLIENT, "File a request for a worker; answers its new ID.",
        args=(Arg("caps", "caps", a.as_str_map, True, "the capabilities wanted",
                  encode=encode_map),
              Arg("priority", "int", a.as_int, True, "1 (highest) .. 16"),
              Arg("valid_after", "time", a.opt(a.as_time), doc="not before (nil: now)",
                  encode=encode_time),
              Arg("deadline", "time", a.opt(a.as_time),
                  doc="start by, else TIMEOUT (nil: now + the default)", encode=encode_time),
              Arg("queue_unsatisfiable", "bool", a.opt(a.as_bool), default=False,
                  doc="queue even when no registered worker has the caps", encode=bool),
              Arg("expr", "exprs", a.opt(a.as_str_list), encode=encode_list,
                  doc="capability expressions the worker must satisfy too: KEY in V1,V2, "
                      "KEY LOW..HIGH, KEY != VALUE, KEY?, !KEY (nil: none)"),
              Arg("lease", "seconds", a.opt(a.as_seconds), default=DEFAULT_LEASE,
                  doc="hold the request by a lease of this grace, renewed by the client "
                      "(nil: no lease; the clients' default: "
                      f"{DEFAULT_LEASE:g})")),
        result='{"id": n}', errors=(*_TIME_ERRORS, NoMatchingWorkerError),
        access=Access.ANYONE, decode=_new_id),
    Operation(
        "renew_leases", CLIENT,
        "Renew the leases of your requests; answers which are held and which are lost.",
        args=(Arg("ids", "ids", a.request_ids(MAX_RENEWALS), True,
                  f"the request IDs (at most {MAX_RENEWALS:,})", encode=encode_list),),
        result='{"held": [id...], "lost": [id...]}', idempotent=True, access=Access.ANYONE),
    Operation(
        "queue_position", CLIENT,
        "A request's state, how many ready requests come before it (nil: it is not "
        "ready), and how many are ready.",
        args=(_id(),), result='{"state", "ahead", "ready"}', errors=(NotFoundError,),
        idempotent=True),
    Operation(
        "explain_request", CLIENT,
        "Why a request waits: its candidate workers by state, the nearest misses, how "
        "many ready requests they serve first, what holds it, its expected start.",
        args=(_id(),),
        result='{"id", "state", "priority", "ready", "held_by", "held_by_text", "candidates", '
               '"candidate_states", "misses", "ahead", "valid_after", "deadline", '
               '"expected_start", "estimate_basis", "late"}',
        errors=(NotFoundError,), idempotent=True),
    Operation(
        "update_request", CLIENT, "Change a WAITING request's priority or times.",
        args=(_id(), Arg("priority", "int", a.opt(a.as_int), doc="nil or 0: unchanged"),
              Arg("valid_after", "time", a.opt(a.as_time), doc="nil: unchanged",
                  encode=encode_time),
              Arg("deadline", "time", a.opt(a.as_time), doc="nil: unchanged",
                  encode=encode_time)),
        errors=(NotFoundError, ModificationForbiddenError, *_TIME_ERRORS),
        access=Access.OWNER, decode=_nothing),
    Operation(
        "close_request", CLIENT, "WAITING -> CANCELLED; IN PROGRESS -> DONE (the job ends).",
        args=(_id(),), errors=(NotFoundError, ModificationForbiddenError),
        access=Access.OWNER, decode=_nothing),
    Operation(
        "get_request_info", CLIENT, "One request.", args=(_id(),), result="request",
        errors=(NotFoundError,), idempotent=True, decode=documents.request_in),
    Operation(
        "list_requests", CLIENT, "Requests, filtered, sorted and paged.",
        args=_list_args(a.request_filter_in, a.request_filter_out, int),
        result="list of requests", errors=_LIST_ERRORS, idempotent=True,
        decode=lambda r: documents.list_in(r, documents.request_in)),
    Operation(
        "acquire_worker", CLIENT,
        "Access to the request's worker (key, user, address); parked while WAITING.",
        args=(_id(), _TIMEOUT), result="access",
        errors=(NotFoundError, WorkerNotAssignedError, WaitTimeoutError, ServerBusyError),
        idempotent=True, parks=True, access=Access.OWNER, decode=documents.access_in),
    Operation(
        "prolong_access", CLIENT, "Push the job's timeout to now + the job timeout.",
        args=(_id(),), errors=(NotFoundError, WorkerNotAssignedError, ProlongLimitError),
        access=Access.OWNER, decode=_nothing),
    Operation(
        "wait_request", CLIENT, "The request once it is in one of `states`; parked until then.",
        args=(_id(), Arg("states", "states", a.req_states_in,
                         doc="states to wait for (nil: any but WAITING)",
                         encode=encode_req_states), _TIMEOUT),
        result="request", errors=(NotFoundError, RequestEndedError, WaitTimeoutError,
                                  ServerBusyError),
        idempotent=True, parks=True, access=Access.OWNER, decode=documents.request_in),
    Operation(
        "list_workers", CLIENT, "Workers, filtered, sorted and paged.",
        args=_list_args(a.worker_filter_in, a.worker_filter_out, str),
        result="list of workers", errors=_LIST_ERRORS, idempotent=True,
        decode=lambda r: documents.list_in(r, documents.worker_in)),
    Operation(
        "get_worker_info", CLIENT, "One worker.", args=(_uuid(),), result="worker",
        errors=(NotFoundError,), idempotent=True, decode=documents.worker_in),
    Operation(
        "set_state", CLIENT,
        "Put a worker in MAINTENANCE or back to IDLE (completes asynchronously).",
        args=(_uuid(), Arg("state", "state", a.worker_state_in, True, "IDLE or MAINTENANCE",
                           encode=encode_worker_state)),
        errors=(NotFoundError, WrongStateArgumentError, ForbiddenStateChangeError),
        access=Access.ADMIN, decode=_nothing),
    Operation(
        "set_groups", CLIENT, "Replace a worker's groups.",
        args=(_uuid(), Arg("groups", "strings", a.opt(a.as_str_list), doc="nil: none",
                           encode=encode_list)),
        errors=(NotFoundError,), access=Access.ADMIN, decode=_nothing),
    Operation(
        "deregister", CLIENT, "Forget a worker in MAINTENANCE or FAILED.",
        args=(_uuid(),), errors=(NotFoundError, NotInFailOrMaintenanceError),
        access=Access.ADMIN, decode=_nothing),
    Operation(
        "healthcheck", CLIENT,
        "Ask the worker's dryad to check its board; a failure sets the worker FAILED.",
        args=(_uuid(),), errors=(NotFoundError, DryadError), access=Access.ADMIN,
        reply_within=30.0, decode=_nothing),
)

# Farm administration (our addition): users and dryad enrolments, admins only.
def _user_args(required_keys: bool) -> tuple[Arg, ...]:
    unchanged = "" if required_keys else " (nil: unchanged)"
    return (Arg("name", "string", a.as_str, True, "the user's name (a POSIX user name)"),
            Arg("keys", "strings", a.as_str_list if required_keys else a.opt(a.as_str_list),
                required_keys, "their CurveZMQ public keys (Z85)" + unchanged,
                encode=encode_list),
            Arg("groups", "strings", a.opt(a.as_str_list),
                doc="groups their requests carry" + (unchanged or " (nil: none)"),
                encode=encode_list),
            Arg("role", "string", a.opt(a.as_str), doc="user or admin" + (unchanged or
                                                                         " (nil: user)")),
            Arg("priorities", "ints", a.opt(a.as_int_list),
                doc="[highest, lowest] priority they may use" + (unchanged or " (nil: [1, 16])"),
                encode=encode_list),
            Arg("max_open", "int", a.opt(a.as_int),
                doc="open requests they may hold" + (unchanged or " (nil: 1000)")))


_NAME = Arg("name", "string", a.as_str, True, "the user's name")
_USER_ERRORS = (AlreadyExistsError, NotFoundError)

ADMIN_OPS: dict[str, Operation] = _table(
    Operation("user_add", CLIENT, "Add a user (keys, groups, role, priorities, open cap).",
              args=_user_args(True), result="user", errors=(AlreadyExistsError,),
              access=Access.ADMIN),
    Operation("user_set", CLIENT, "Change a user's keys, groups, role, priorities or cap.",
              args=_user_args(False), result="user", errors=_USER_ERRORS,
              access=Access.ADMIN),
    Operation("user_remove", CLIENT, "Remove a user (their connections are refused from now).",
              args=(_NAME,), errors=(NotFoundError,), access=Access.ADMIN, decode=_nothing),
    Operation("user_list", CLIENT, "Every user, by name.", result="list of users",
              idempotent=True, access=Access.ADMIN),
    Operation("user_token", CLIENT, "Give a user an HTTP token, by its SHA-256; or revoke one.",
              args=(_NAME, Arg("token_hash", "string", a.as_str, True,
                               "the token's SHA-256 in hex (the token never crosses the wire)"),
                    Arg("revoke", "bool", a.opt(a.as_bool), default=False, encode=bool,
                        doc="remove this token instead (nil: add it)")),
              result="user", errors=_USER_ERRORS, access=Access.ADMIN),
    Operation("dryad_enroll", CLIENT, "Let a dryad's public key register one worker UUID.",
              args=(_uuid("the worker's UUID"),
                    Arg("key", "string", a.as_str, True, "the dryad's CurveZMQ public key")),
              result='{"uuid", "key"}', errors=(AlreadyExistsError,), access=Access.ADMIN),
    Operation("dryad_revoke", CLIENT, "Forget a worker's enrolled key (its dryad is refused).",
              args=(_uuid("the worker's UUID"),), errors=(NotFoundError,),
              access=Access.ADMIN, decode=_nothing),
    Operation("dryad_list", CLIENT, "Every enrolment, by UUID.", result='list of {"uuid", "key"}',
              idempotent=True, access=Access.ADMIN),
)
CLIENT_OPS.update(ADMIN_OPS)

# Operations a dryad sends to the dryad endpoint (upstream's Superviser set, plus heartbeat).
DRYAD_OPS: dict[str, Operation] = _table(
    Operation(
        "register", Endpoint.DRYAD, "Announce the worker (its caps carry its UUID).",
        args=(Arg("caps", "caps", a.as_str_map, True, "the worker's caps, UUID included"),
              Arg("dryad_address", "address", a.as_str, True,
                  "host:port of the dryad (':port' = the connection's IP)"),
              Arg("ssh_address", "address", a.as_str, True,
                  "host:port of the board's sshd (':port' = the connection's IP)")),
        result='{"uuid", "heartbeat_interval", "heartbeat_liveness"}',
        errors=(MissingUUIDError, MissingIPError, MissingPortError, InvalidAddressError),
        access=Access.DRYAD),
    Operation(
        "set_fail", Endpoint.DRYAD, "The worker failed (the reason is shown to people).",
        args=(_uuid("the registered worker's UUID"),
              Arg("reason", "string", a.opt(a.as_str), doc="why")),
        errors=(NotRegisteredError, DeregisteredError, InMaintenanceError),
        access=Access.DRYAD),
    Operation(
        "heartbeat", Endpoint.DRYAD, "A sign of life (any message is one).",
        args=(Arg("uuid", "uuid", a.opt(a.as_str), doc="the registered worker's UUID"),),
        result="{}", errors=(NotRegisteredError, DeregisteredError), idempotent=True,
        access=Access.DRYAD),
)

# Commands the server sends to a dryad (upstream's Dryad set).
SERVER_COMMANDS: dict[str, Operation] = _table(
    Operation(
        "prepare", Endpoint.COMMAND, "Make a fresh session for the next job with this key.",
        args=(Arg("key", "string", a.as_str, True, "the job's public key, authorized_keys form"),
              Arg("key_type", "string", a.opt(a.as_str), doc="ssh-rsa or ssh-ed25519")),
        result='{"username": "<session user>"}', access=Access.SERVER),
    Operation(
        "put_in_maintenance", Endpoint.COMMAND, "Show the message and blink until prepared.",
        args=(Arg("message", "string", a.opt(a.as_str), doc="shown on the OLED"),),
        access=Access.SERVER),
    Operation(
        "healthcheck", Endpoint.COMMAND, "Check the board.", access=Access.SERVER),
)

ALL_TABLES: dict[Endpoint, dict[str, Operation]] = {
    Endpoint.CLIENT: CLIENT_OPS, Endpoint.DRYAD: DRYAD_OPS, Endpoint.COMMAND: SERVER_COMMANDS}


# --------------------------------------------------------------------------- docs
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: Mapping[str, Operation]) -> str:
    """The table of docs/protocol.md for one endpoint (a test keeps the doc equal to it)."""
    rows = ["| op | args | result | errors | resend | parked | who | what |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for op in table.values():
        args = ", ".join(f"`{arg.name}`{'' if arg.required else '?'} {arg.kind}"
                         for arg in op.args) or "–"
        errors = ", ".join(f"`{cls.code}`" for cls in op.errors) or "–"
        result = f"`{op.result}`" if op.result.startswith("{") else op.result
        rows.append(f"| `{op.name}` | {args} | {_cell(result)} | {errors} | "
                    f"{'yes' if op.idempotent else 'no'} | {'yes' if op.parks else 'no'} | "
                    f"{op.access.value} | {_cell(op.summary)} |")
    return "\n".join(rows)


def markdown_tables() -> dict[str, str]:
    return {endpoint.value: markdown_table(table) for endpoint, table in ALL_TABLES.items()}


def markdown_block(endpoint: Endpoint) -> str:
    """The table between its markers, as docs/protocol.md holds it."""
    return (f"<!-- operations:{endpoint.value} (python -m boruta.transport) -->\n"
            f"{markdown_table(ALL_TABLES[endpoint])}\n<!-- end of operations:{endpoint.value} -->")
