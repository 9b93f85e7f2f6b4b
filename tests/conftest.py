"""Shared fixtures: every scheduler test runs against both matchers.

The "compiled" matcher (boruta._matcher, built from boruta/_matcher.pyx) is
skipped only while it cannot be imported; once `make build` has produced
it, the same tests simply run against it too.
"""
from __future__ import annotations

from typing import Iterator

import pytest
import zmq

from boruta.core.clock import ManualClock
from boruta.core.config import SchedulerConfig
from boruta.core.scheduler import Scheduler
from boruta.testing import START, InProcessFarm


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
