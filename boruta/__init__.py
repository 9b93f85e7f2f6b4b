"""Boruta: a scheduler for farms of test devices.

Public names: the seed's types and states, the error classes, the core
`Scheduler`, and (from boruta.transport) the `Client`.
"""
from boruta.core import *  # noqa: F401,F403
from boruta.core import __all__ as _core_all
from boruta.core.errors import BorutaError

__version__ = "0.3.0"
__all__ = list(_core_all) + ["BorutaError", "__version__"]
