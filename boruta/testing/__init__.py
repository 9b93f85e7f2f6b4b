"""Tools for testing with Boruta: drive the core without a server.

`InProcessFarm` is a Scheduler on a manual clock with a shell that answers
its effects (see boruta.testing.farm); `wuuid` and `at` make worker UUIDs
and times for it; `START` is where its clock starts.
"""
from boruta.testing.farm import START, InProcessFarm, at, wuuid

# processes: see boruta.testing.processes

__all__ = ["InProcessFarm", "START", "at", "wuuid"]
