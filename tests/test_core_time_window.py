"""Times the core cannot keep are refused at the door, and never crash it later.

The core keeps times as float seconds and shows them as datetimes and ISO
text; outside EARLIEST_TIME .. LATEST_TIME (1970-01-01 .. 9999-12-30 UTC)
one of those conversions fails. Such a time once got into the books and
made every listing answer `internal` for everyone, for good. Here: the
core's own check (direct Scheduler callers), the wire's converter
(`as_time`), the times the core computes itself (job timeouts, default
deadlines), and a state file that already holds such a row.
"""
from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boruta.core.clock import ManualClock
from boruta.core.config import SchedulerConfig
from boruta.core.errors import BadArgumentError
from boruta.core.records import Changes
from boruta.core.scheduler import Scheduler
from boruta.core.types import (EARLIEST_TIME, EARLIEST_TIMESTAMP, LATEST_TIME,
                               LATEST_TIMESTAMP, ReqState, iso)
from boruta.server.store import Store, StoreError
from boruta.testing import InProcessFarm, wuuid
from boruta.transport.arguments import as_time

UTC = timezone.utc
PLUS_14, MINUS_14 = timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))

# Datetimes Python can hold whose time the core cannot keep.
OUTSIDE = [
    pytest.param(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), id="end-of-9999"),
    pytest.param(datetime(9999, 12, 31, 23, 59, 59, tzinfo=MINUS_14), id="9999-minus-14h"),
    pytest.param(datetime(1, 1, 1, tzinfo=PLUS_14), id="year-1-plus-14h"),
    pytest.param(datetime(1, 1, 1), id="year-1-naive"),
    pytest.param(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), id="before-1970"),
    pytest.param(LATEST_TIME + timedelta(microseconds=100), id="just-after-latest"),
]


def listable(sched: Scheduler) -> None:
    """Every request can be listed, shown and rendered as the CLI's JSON."""
    for info in sched.list_requests()[0]:
        assert sched.get_request_info(info.id) == info
        info.to_dict()


# ---------------------------------------------------------------- the core's door
@pytest.mark.parametrize("moment", OUTSIDE)
@pytest.mark.parametrize("field", ["deadline", "valid_after"])
def test_new_request_refuses_a_time_it_cannot_keep(farm, moment, field):
    farm.register(wuuid(1))
    with pytest.raises(BadArgumentError) as err:
        farm.scheduler.new_request({"x": "y"}, 8, **{field: moment}, queue_unsatisfiable=True)
    assert str(err.value).startswith(f"{field} must be a time from 1970-01-01T00:00:00Z "
                                     "to 9999-12-30T00:00:00Z, not ")
    assert err.value.code == "bad_argument"
    assert farm.scheduler.list_requests()[0] == [] and farm.drain() == []


@pytest.mark.parametrize("moment", OUTSIDE)
@pytest.mark.parametrize("field", ["deadline", "valid_after"])
def test_update_request_refuses_a_time_it_cannot_keep(farm, moment, field):
    farm.register(wuuid(1))
    req_id = farm.request()
    before = farm.scheduler.get_request_info(req_id)
    with pytest.raises(BadArgumentError) as err:
        farm.scheduler.update_request(req_id, **{field: moment})
    assert str(err.value).startswith(f"{field} must be a time from ")
    assert farm.scheduler.get_request_info(req_id) == before
    listable(farm.scheduler)


def test_the_window_s_ends_are_kept_and_read_back(farm):
    farm.register(wuuid(1))
    req_id = farm.request(valid_after=EARLIEST_TIME, deadline=LATEST_TIME)
    info = farm.scheduler.get_request_info(req_id)
    assert (info.valid_after, info.deadline) == (EARLIEST_TIME, LATEST_TIME)
    assert info.to_dict()["deadline"] == "9999-12-30T00:00:00Z"
    assert datetime.fromisoformat(iso(info.deadline)) == LATEST_TIME
    # Shown in any zone (offsets reach +-14 h) the ends stay inside years 1..9999.
    for zone in (PLUS_14, MINUS_14):
        assert info.deadline.astimezone(zone).year == 9999
        assert info.valid_after.astimezone(zone).year in (1969, 1970)
    listable(farm.scheduler)


def test_a_late_time_comes_back_within_the_window(farm):
    # A float keeps microseconds only to about 2255; later ones move by a few
    # microseconds, never out of the window.
    farm.register(wuuid(1))
    moment = LATEST_TIME - timedelta(microseconds=1)
    req_id = farm.request(deadline=moment)
    shown = farm.scheduler.get_request_info(req_id).deadline
    assert abs(shown - moment) <= timedelta(microseconds=16) and shown <= LATEST_TIME


def test_a_zone_without_a_usable_offset_is_a_bad_argument(farm):
    class Broken(tzinfo):                 # a zone whose utcoffset() is out of range
        def utcoffset(self, dt):
            return timedelta(days=2)

    farm.register(wuuid(1))
    with pytest.raises(BadArgumentError, match="deadline has a time zone without a usable"):
        farm.scheduler.new_request({}, 8, deadline=datetime(2030, 1, 1, tzinfo=Broken()))


# ---------------------------------------------------------------- times the core computes
@pytest.mark.parametrize("config", [SchedulerConfig(job_timeout=1e300, prolong_limit=None)])
def test_a_job_timeout_past_the_window_stops_at_its_end(farm):
    farm.idle(wuuid(1))
    req_id = farm.request()
    assert farm.scheduler.get_request_info(req_id).job.timeout == LATEST_TIME
    farm.scheduler.prolong_access(req_id)
    assert farm.scheduler.get_request_info(req_id).job.timeout == LATEST_TIME
    listable(farm.scheduler)


@pytest.mark.parametrize("fields", [{"job_timeout": math.nan}, {"retention": math.nan},
                                    {"job_timeout": 0}, {"retention": -1.0}])
def test_durations_that_are_not_positive_numbers_are_refused(fields):
    with pytest.raises(ValueError, match="must be positive"):
        SchedulerConfig(**fields)


@pytest.mark.parametrize("config", [SchedulerConfig(default_deadline_months=10**9)])
def test_a_default_deadline_past_year_9999_stops_at_the_window_s_end(farm):
    farm.register(wuuid(1))
    req_id = farm.request()
    assert farm.scheduler.get_request_info(req_id).deadline == LATEST_TIME


@pytest.mark.parametrize("clock", [ManualClock(datetime(9999, 12, 15, tzinfo=UTC).timestamp())])
def test_a_default_deadline_in_the_last_month_stops_at_the_window_s_end(farm):
    farm.register(wuuid(1))
    req_id = farm.request()
    assert farm.scheduler.get_request_info(req_id).deadline == LATEST_TIME
    listable(farm.scheduler)


# ---------------------------------------------------------------- the wire's converter
@pytest.mark.parametrize("value", [
    "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
    "9999-12-30T00:00:00.000100Z", "1969-12-31T23:59:59Z", "0001-01-01",
    1e300, -1e300, 10**400, -10**400, 2**63, -1, -0.5, LATEST_TIMESTAMP + 1,
    math.inf, -math.inf, math.nan,
])
def test_as_time_refuses_what_the_core_cannot_keep(value):
    with pytest.raises(BadArgumentError) as err:
        as_time("deadline", value)
    assert str(err.value).startswith("argument 'deadline' must be a time from 1970-01-01"), err
    assert len(str(err.value)) < 200                       # a huge int is cut short


@pytest.mark.parametrize("value, expected", [
    ("9999-12-30T00:00:00Z", LATEST_TIME),
    ("9999-12-30T13:59:59+14:00", datetime(9999, 12, 29, 23, 59, 59, tzinfo=UTC)),
    ("1970-01-01T00:00:00Z", EARLIEST_TIME),
    ("1970-01-01T09:00:00+09:00", EARLIEST_TIME),
    ("2030-06-01T12:00:00", datetime(2030, 6, 1, 12, tzinfo=UTC)),
    (0, EARLIEST_TIME), (LATEST_TIMESTAMP, LATEST_TIME),
    (1_800_000_000.5, datetime(2027, 1, 15, 8, 0, 0, 500000, tzinfo=UTC)),
])
def test_as_time_takes_the_window_s_ends(value, expected):
    assert as_time("deadline", value) == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=40), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.sampled_from([UTC, PLUS_14, MINUS_14])).map(datetime.isoformat),
    st.builds("{}-{:02}-{:02}T{:02}:00:00{}".format, st.integers(0, 99999), st.integers(0, 13),
              st.integers(0, 32), st.integers(0, 25),
              st.sampled_from(["", "Z", "+14:00", "-14:00", "+23:59", "+24:00"]))))
def test_as_time_answers_a_time_in_the_window_or_bad_argument(value):
    try:
        moment = as_time("t", value)
    except BadArgumentError:
        return
    assert moment.tzinfo is not None
    assert EARLIEST_TIMESTAMP <= moment.timestamp() <= LATEST_TIMESTAMP
    iso(moment)


# ---------------------------------------------------------------- a state file with such a row
def bad_rows() -> list[dict]:
    """Rows an older Boruta accepted: year 10000, before year 1, a job past the window."""
    def row(req_id: int, state: str, **times) -> dict:
        return {"id": req_id, "priority": 8, "groups": [], "caps": {"x": "y"},
                "valid_after": 1_700_000_000.0, "deadline": 1_900_000_000.0, "state": state,
                "job_worker": None, "job_timeout": None, "seq": req_id, "prolongs": 0,
                "ended_at": None, "owner": "", "lease": None, "expr": None, **times}
    return [
        row(1, "WAITING", deadline=datetime(9999, 12, 31, 23, 59, 59, 999999,
                                            tzinfo=UTC).timestamp()),   # stored as year 10000
        row(2, "WAITING", valid_after=-1e300),
        row(3, "IN PROGRESS", job_worker="gone", job_timeout=1e300),
        row(4, "DONE", ended_at=1e300, deadline=1e300),
        row(5, "WAITING"),                                              # a good one
    ]


def write_state(path: Path) -> None:
    store = Store(path, "OFF")
    store.commit(Changes(requests=bad_rows(), last_id=5, last_seq=5))
    store.close()


def test_a_stored_row_outside_the_window_is_read_at_its_nearest_end_and_logged(
        tmp_path, caplog, matcher_kind):
    write_state(tmp_path)
    store = Store(tmp_path, "OFF")
    with caplog.at_level(logging.WARNING, logger="boruta.server.store"):
        snapshot = store.load(history=False)
        history = store.history()
        single = store.load_request(1)
    by_id = {r["id"]: r for r in snapshot.requests + history}
    assert sorted(by_id) == [1, 2, 3, 4, 5]
    assert by_id[1]["deadline"] == single["deadline"] == LATEST_TIMESTAMP
    assert by_id[2]["valid_after"] == EARLIEST_TIMESTAMP
    assert by_id[3]["job_timeout"] == LATEST_TIMESTAMP
    assert by_id[4]["ended_at"] == by_id[4]["deadline"] == LATEST_TIMESTAMP
    assert by_id[5] == bad_rows()[4]
    reported = {r.fields["request"] for r in caplog.records if hasattr(r, "fields")}
    assert reported == {1, 2, 3, 4}

    sched = Scheduler.restore(snapshot, ManualClock(), matcher=matcher_kind)
    sched.add_history(history)
    listable(sched)
    assert sched.get_request_info(1).deadline == LATEST_TIME
    sched.close_request(1)                   # the owner can still close it
    assert sched.get_request_info(1).state is ReqState.CANCEL
    store.commit(sched.drain_changes())      # and the row is written back inside the window
    store.close()
    caplog.clear()
    reread = Store(tmp_path, "OFF")
    with caplog.at_level(logging.WARNING, logger="boruta.server.store"):
        assert reread.load_request(1)["deadline"] == LATEST_TIMESTAMP
    assert caplog.records == []
    reread.close()


def test_a_stored_time_that_is_no_number_is_a_damaged_record(tmp_path):
    write_state(tmp_path)
    store = Store(tmp_path, "OFF")
    store._conn().execute("UPDATE requests SET deadline='soon' WHERE id=5")
    with pytest.raises(StoreError) as err:
        store.load()
    assert "request 5: deadline 'soon' is not a time" in str(err.value)
    store.close()


def test_the_in_process_farm_survives_a_restart_from_such_a_file(tmp_path):
    write_state(tmp_path)
    store = Store(tmp_path, "OFF")
    farm = InProcessFarm(Scheduler.restore(store.load(), ManualClock()))
    store.close()
    listable(farm.scheduler)
    farm.tick(86_400 * 365 * 10)
    listable(farm.scheduler)
