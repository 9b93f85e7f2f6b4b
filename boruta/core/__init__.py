"""The functional core: types, errors, matchers, timers and the scheduler. No I/O here."""
from boruta.core.clock import Clock, ManualClock, SystemClock
from boruta.core.config import SchedulerConfig
from boruta.core.errors import *  # noqa: F401,F403 - the error classes are public names
from boruta.core.scheduler import Scheduler
from boruta.core.types import (HI_PRIO, LO_PRIO, MAX_PAGE_LIMIT, AccessInfo, JobInfo,
                               ListInfo, Paginator, ReqInfo, ReqState, RequestFilter, SortInfo,
                               UserInfo, WorkerFilter, WorkerInfo, WorkerState)

__all__ = [
    "Clock", "ManualClock", "SystemClock", "SchedulerConfig", "Scheduler",
    "HI_PRIO", "LO_PRIO", "MAX_PAGE_LIMIT", "AccessInfo", "JobInfo", "ListInfo", "Paginator",
    "ReqInfo", "ReqState", "RequestFilter", "SortInfo", "UserInfo", "WorkerFilter",
    "WorkerInfo", "WorkerState",
]
