"""Shared fixtures: every scheduler test runs against both matchers.

The "compiled" matcher (boruta._matcher, built from boruta/_matcher.pyx) is
skipped only while it cannot be imported; once `make build` has produced
it, the same tests simply run against it too.

At import, before any test runs, the session gets private XDG config and
state directories and loses the variables that name a client identity: a
server writes its admin's client config under $XDG_CONFIG_HOME, and clients
read it from there, so no test may touch the developer's own files or keys.
Child processes inherit this environment.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Iterator

import pytest
import zmq

from boruta.core.clock import ManualClock
from boruta.core.config import SchedulerConfig
from boruta.core.scheduler import Scheduler
from boruta.testing import START, InProcessFarm
from boruta.testing.processes import IDENTITY_ENV


def _private_home() -> str:
    """Fresh XDG config and state directories for this test session (removed at exit)."""
    home = tempfile.mkdtemp(prefix="boruta-tests-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    for name, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state")):
        os.environ[name] = os.path.join(home, sub)
        os.mkdir(os.environ[name], 0o700)
    for name in IDENTITY_ENV:
        os.environ.pop(name, None)
    return home


PRIVATE_HOME = _private_home()


@pytest.fixture(params=["reference", "compiled"])
def matcher_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "compiled":
        pytest.importorskip("boruta._matcher",
                            reason="compiled matcher boruta._matcher is not built")
    return request.param


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def config() -> SchedulerConfig:
    """Override in a test module (or with indirect parametrisation) for other settings."""
    return SchedulerConfig()


@pytest.fixture
def sched(clock: ManualClock, config: SchedulerConfig, matcher_kind: str) -> Scheduler:
    s = Scheduler(clock, config=config, matcher=matcher_kind)
    assert s.matcher_kind == matcher_kind
    return s


@pytest.fixture
def farm(sched: Scheduler) -> InProcessFarm:
    """The scheduler with a shell that answers its effects only when the test says so."""
    return InProcessFarm(sched, auto_complete=False)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """A ZeroMQ context for raw sockets in a test, destroyed (linger 0) at teardown."""
    context = zmq.Context()
    yield context
    context.destroy(0)
