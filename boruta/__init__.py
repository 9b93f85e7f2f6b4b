"""Boruta: a scheduler for farms of test devices.

Public names: the clients (`Client`, `AsyncClient`), the core `Scheduler`
with its clock and configuration, the seed's types and states (`ReqInfo`,
`WorkerInfo`, `ReqState`, ...), and every error class (`BorutaError` and
one subclass per error code). `boruta.testing` holds an in-process farm for
tests.
"""
from boruta.core import *  # noqa: F401,F403
from boruta.core import __all__ as _core_all
from boruta.core import errors as _errors
from boruta.core.errors import *  # noqa: F401,F403
from boruta.transport import errors as _wire_errors
from boruta.transport.async_client import AsyncClient  # noqa: F401 - in __all__
from boruta.transport.client import Client  # noqa: F401 - in __all__
from boruta.transport.errors import *  # noqa: F401,F403

__version__ = "0.3.0"


def _error_names(module: object) -> list[str]:
    return [name for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, _errors.BorutaError)]


__all__ = sorted({*_core_all, *_error_names(_errors), *_error_names(_wire_errors),
                  "Client", "AsyncClient", "__version__"})
