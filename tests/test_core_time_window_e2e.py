"""Times the core cannot keep, end to end: a real server refuses them on the wire, and
starts (listing everything) from a real SQLite file that already holds them."""
from __future__ import annotations

from pathlib import Path

import pytest

from boruta.core.errors import BadArgumentError
from boruta.core.records import Changes
from boruta.core.types import LATEST_TIME, ReqState
from boruta.server.store import Store
from e2e_helpers import server_factory, wait_until  # noqa: F401 - a fixture

BAD_TIMES = ["9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00+14:00",
             "9999-12-31T23:59:59-14:00", 1e300, -1e300, 2**64 - 1, -2**63]


def test_the_wire_refuses_a_time_the_core_cannot_keep(server_factory):  # noqa: F811
    client = server_factory().client()
    for value in BAD_TIMES:
        for field in ("deadline", "valid_after"):
            with pytest.raises(BadArgumentError) as err:
                client.call("new_request", {"caps": {"x": "y"}, "priority": 8, field: value,
                                            "queue_unsatisfiable": True})
            assert f"argument '{field}' must be a time from 1970" in str(err.value)
    req_id = client.new_request({"x": "y"}, 8, queue_unsatisfiable=True)
    for value in BAD_TIMES:
        with pytest.raises(BadArgumentError):
            client.call("update_request", {"id": req_id, "deadline": value})
    items, info = client.list_requests()
    assert [r.id for r in items] == [req_id] and info.total_items == 1


def test_a_server_starts_from_a_file_holding_times_outside_the_window(
        server_factory, tmp_path: Path):  # noqa: F811
    state = tmp_path / "state"
    store = Store(state, "OFF")
    year_10000 = 253402300800.0              # what 9999-12-31T23:59:59.999999Z was stored as
    base = {"priority": 8, "groups": [], "caps": {"x": "y"}, "valid_after": 1_700_000_000.0,
            "job_worker": None, "job_timeout": None, "prolongs": 0}
    store.commit(Changes(requests=[
        {**base, "id": 1, "seq": 1, "deadline": year_10000, "state": "WAITING",
         "ended_at": None},
        {**base, "id": 2, "seq": 2, "deadline": year_10000, "state": "CANCELLED",
         "ended_at": 1e300},
    ], last_id=2, last_seq=2))
    store.close()

    server = server_factory(state_dir=str(state))
    client = server.client()
    items, _ = client.list_requests()
    assert [(r.id, r.state, r.deadline) for r in items] == [
        (1, ReqState.WAIT, LATEST_TIME), (2, ReqState.CANCEL, LATEST_TIME)]
    assert client.get_request_info(1).deadline == LATEST_TIME
    client.close_request(1)
    assert client.get_request_info(1).state is ReqState.CANCEL
    wait_until(lambda: "outside the window" in server.log(), 5, what="the report in the log")
