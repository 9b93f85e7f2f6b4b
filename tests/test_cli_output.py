"""What the `boruta` command prints for people and machines (boruta/cli/output.py)."""
from __future__ import annotations

import pytest

from boruta.cli import output as out
from boruta.core.types import WorkerInfo, WorkerState


@pytest.mark.parametrize("seconds, text", [
    (0.999999, "1s"), (1, "1s"), (2.5, "2.5s"), (0.25, "0.25s"), (0.5, "0.5s"),
    (9.96, "10s"), (12.4, "12s"), (59.4, "59s"), (59.6, "1m"), (600, "10m"), (90, "1m30s"),
    (5400, "1h30m"), (3600.4, "1h"), (86400, "1d"), (90061, "1d1h1m1s"), (0, "0s"),
])
def test_format_duration(seconds, text):
    assert out.format_duration(seconds) == text


def test_worker_document_is_the_protocols():
    info = WorkerInfo("w", WorkerState.IDLE, ("lab",), {"UUID": "w"}, None, "h:7176", "h:22")
    assert out.to_jsonable(info) == {"uuid": "w", "state": "IDLE", "groups": ["lab"],
                                     "caps": {"UUID": "w"}, "fail_reason": None,
                                     "dryad_address": "h:7176", "ssh_address": "h:22"}
    assert out.list_doc([info], None)["items"] == [out.to_jsonable(info)]
