"""Client methods made from the operation table, for the blocking and the asyncio client.

Each client operation becomes a method whose parameters are the operation's
arguments (Python names, client defaults), whose docstring is its summary,
and whose body encodes the arguments, calls, and decodes the result as the
declaration says. So a new operation needs no client code, and the two
clients cannot drift from the table or from each other.

Parked operations (`acquire_worker`, `wait_request`) take the caller's whole
`timeout` and ask the server in slices of at most `park_slice` seconds, so
that a server that dies while a call waits is noticed.
"""
from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Iterator, Mapping

from boruta.transport.operations import CLIENT_OPS, Operation

PARK_SLICE = 10.0


def slices(timeout: float | None, park_slice: float) -> Iterator[float]:
    """Server-side waiting times for one parked call with the caller's `timeout`."""
    if timeout is None:
        while True:
            yield park_slice
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.0, deadline - time.monotonic())
        yield min(park_slice, left)
        if left <= park_slice:
            return


def signature(op: Operation) -> inspect.Signature:
    """The method's signature: self, then each argument by its Python name."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for arg in op.args:
        default = inspect.Parameter.empty if arg.required else arg.default
        params.append(inspect.Parameter(arg.python_name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=default))
    return inspect.Signature(params)


def docstring(op: Operation) -> str:
    lines = [op.summary, ""]
    for arg in op.args:
        if op.parks and arg.name == "timeout":
            continue                   # the caller's timeout, below
        note = "" if arg.required else " (optional)"
        lines.append(f"{arg.python_name}: {arg.doc or arg.kind}{note}")
    if op.parks:
        lines.append("timeout: the caller's whole wait in seconds (None: no limit)")
    lines.append(f"Returns: {op.result}.")
    return "\n".join(lines)


def _values(sig: inspect.Signature, args: tuple[Any, ...],
            kwargs: Mapping[str, Any]) -> dict[str, Any]:
    bound = sig.bind(*args, **kwargs)
    values = dict(bound.arguments)
    del values["self"]
    return values


def sync_method(op: Operation) -> Callable[..., Any]:
    sig = signature(op)

    def method(*args: Any, **kwargs: Any) -> Any:
        values = _values(sig, args, kwargs)
        return args[0].perform(op, values)

    return _named(method, op, sig)


def async_method(op: Operation) -> Callable[..., Any]:
    sig = signature(op)

    async def method(*args: Any, **kwargs: Any) -> Any:
        values = _values(sig, args, kwargs)
        return await args[0].perform(op, values)

    return _named(method, op, sig)


def _named(method: Any, op: Operation, sig: inspect.Signature) -> Any:
    method.__name__ = method.__qualname__ = op.name
    method.__doc__ = docstring(op)
    method.__signature__ = sig
    method.operation = op
    return method


def with_operations(make: Callable[[Operation], Callable[..., Any]]) -> Callable[[type], type]:
    """Class decorator: one method per client operation (a method the class defines wins)."""
    def decorate(cls: type) -> type:
        for name, op in CLIENT_OPS.items():
            if name not in cls.__dict__:
                method = make(op)
                method.__qualname__ = f"{cls.__name__}.{name}"
                setattr(cls, name, method)
        return cls
    return decorate
