"""Boruta: a scheduler for farms of test devices.

Public names: the clients (`Client`, `AsyncClient`), the core `Scheduler`
with its clock and configuration, the seed's types and states (`ReqInfo`,
`WorkerInfo`, `ReqState`, ...), and every error class (`BorutaError` and
one subclass per error code). `boruta.testing` holds an in-process farm for
tests.

The names are imported on first use (PEP 562): `import boruta.device`, or
pytest loading the plugin, does not pay for the clients and the core.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

_HOMES = ("boruta.core", "boruta.core.errors", "boruta.transport.errors")
_CLIENTS = {"Client": "boruta.transport.client", "AsyncClient": "boruta.transport.async_client"}


def _error_names(module: object) -> list[str]:
    from boruta.core.errors import BorutaError
    return [name for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, BorutaError)]


def _public() -> dict[str, str]:
    """Every public name -> the module that holds it."""
    core = importlib.import_module("boruta.core")
    names = {name: "boruta.core" for name in core.__all__}
    for home in _HOMES[1:]:
        names.update((name, home) for name in _error_names(importlib.import_module(home)))
    return {**names, **_CLIENTS}


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = sorted({*_public(), "__version__"})
    else:
        home = _CLIENTS.get(name) or _public().get(name)
        if home is None:
            raise AttributeError(f"module 'boruta' has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
