"""GcFreezer: young collections and freezes every second, a full sweep every hour."""
from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from boruta.server.gcfreeze import GcFreezer


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_survivors_are_frozen_once_a_second() -> None:
    freezer = GcFreezer(now=100.0)
    keep = [Node() for _ in range(1000)]
    freezer.tick(100.5)
    assert gc.get_freeze_count() == 0
    freezer.tick(101.0)
    assert gc.get_freeze_count() >= len(keep)


def test_young_garbage_cycles_are_collected_before_the_freeze() -> None:
    freezer = GcFreezer(now=0.0)
    gc.collect()
    dead = _cycle()
    assert dead() is not None             # a cycle: only the collector frees it
    freezer.tick(1.0)
    assert dead() is None


def test_a_cycle_that_dies_frozen_is_collected_by_the_hourly_sweep() -> None:
    freezer = GcFreezer(now=0.0, freeze_every=1.0, sweep_every=3600.0)
    holder = [Node()]
    holder[0].other = Node()
    holder[0].other.other = holder[0]
    ref = weakref.ref(holder[0])
    freezer.tick(1.0)                     # frozen while alive
    holder.clear()                        # now garbage, but out of the collector's sight
    freezer.tick(2.0)
    assert ref() is not None
    freezer.tick(3600.0)
    assert ref() is None
    assert freezer.sweeps == 1
    assert gc.get_freeze_count() > 0      # and what lives on is frozen again
