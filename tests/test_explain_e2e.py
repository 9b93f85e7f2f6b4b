"""End to end: `explain_request` and `boruta request explain` against a real server.

A farm of two simulated dryads with caps of their own (so the shared server's
other requests are no candidates of ours): both run a job, three requests
wait. The answer must say what the farm is: 2 RUNNING candidates, the queue
ahead, no estimate before any job ended; then, once a job ended, an expected
start, in the document, in `request explain` and in `request show`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from boruta.core.types import ReqState, WorkerState
from e2e_helpers import ServerProcess, shared_server, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow


def _cli(server: ServerProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = server.cli_env(BORUTA_SERVER=server.listen, HOME=str(cwd))
    proc = subprocess.run([sys.executable, "-m", "boruta.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=60)
    assert "Traceback" not in proc.stdout + proc.stderr, proc
    return proc


def test_explain_a_waiting_request(shared_server: ServerProcess, tmp_path: Path) -> None:
    caps = unique_caps()
    farm = shared_server.farm(2, caps=caps)
    client = shared_server.client()
    running: list[int] = []
    waiting: list[int] = []
    wrong: list[int] = []
    try:
        for dryad in farm.dryads:
            client.set_state(dryad.uuid, "IDLE")
            wait_until(lambda: client.get_worker_info(dryad.uuid).state is WorkerState.IDLE,
                       10, what=f"{dryad.uuid} IDLE")
        running += [client.new_request(caps, 8, lease=None) for _ in range(2)]
        for req_id in running:
            wait_until(lambda: client.get_request_info(req_id).state is ReqState.INPROGRESS,
                       10, what=f"request {req_id} IN PROGRESS")
        waiting += [client.new_request(caps, 8, lease=None) for _ in range(3)]

        doc = client.explain_request(waiting[2])
        assert (doc["state"], doc["held_by"], doc["candidates"], doc["ahead"]) == (
            "WAITING", "queue", 2, 2)
        assert doc["candidate_states"] == {"RUNNING": 2}
        assert doc["expected_start"] is None          # no job has ended on this server's books
        assert doc["misses"] == []                    # nobody else has these caps
        wrong.append(client.new_request({**caps, "usb": "nope"}, 8, lease=None,
                                        queue_unsatisfiable=True))
        assert [(m["term"], m["workers"]) for m in client.explain_request(wrong[0])["misses"]] == [
            ("usb=nope", 2)]

        # a job ends: its board takes the first waiting request; now there is a duration
        client.close_request(running[0])
        wait_until(lambda: client.get_request_info(waiting[0]).state is ReqState.INPROGRESS,
                   10, what="the next request started")
        doc = client.explain_request(waiting[2])
        assert doc["ahead"] == 1 and doc["expected_start"] is not None and not doc["late"]

        text = _cli(shared_server, tmp_path, "request", "explain", str(waiting[2]))
        assert text.returncode == 0, text
        lines = text.stdout.splitlines()
        assert lines[0] == f"Request {waiting[2]}: WAITING, priority 8."
        assert "Candidate workers: 2 (2 RUNNING)." in lines
        assert "Ahead of it on those workers: 1 ready request." in lines
        assert lines[-1].startswith("Estimate: expected to start ")
        as_json = _cli(shared_server, tmp_path, "request", "explain", str(waiting[2]), "--json")
        assert json.loads(as_json.stdout)["ahead"] == 1
        shown = _cli(shared_server, tmp_path, "request", "show", str(waiting[2]))
        assert shown.returncode == 0 and "Estimate: expected to start " in shown.stdout
        missing = _cli(shared_server, tmp_path, "request", "explain", "999999")
        assert missing.returncode != 0 and "not found" in missing.stderr.lower()
    finally:
        for req_id in running + waiting + wrong:
            if client.get_request_info(req_id).state in (ReqState.WAIT, ReqState.INPROGRESS):
                client.close_request(req_id)
        client.close()
