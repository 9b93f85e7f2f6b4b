"""Simulated boards with `ssh=True` run real SSH sessions: the job's key gets in, through the tunnel."""
from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from e2e_helpers import server_factory, ssh_exec, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow


def test_a_job_on_a_simulated_board_is_an_ssh_session(
        server_factory, tmp_path: Path) -> None:  # noqa: F811
    server = server_factory()
    caps = unique_caps()
    farm = server.farm(1, caps=caps, ssh=True)
    board = farm.dryads[0]
    client = server.client()
    client.set_state(board.uuid, "IDLE")
    wait_until(lambda: str(client.get_worker_info(board.uuid).state) == "IDLE", 10,
               what="the board prepared")
    req_id = client.new_request(caps, 4)
    access = client.acquire_worker(req_id, timeout=10)
    key_file = tmp_path / "job.key"
    key_file.write_text(access.key)
    key_file.chmod(0o600)
    host, port = access.addr
    assert ssh_exec(host, port, access.username, key_file, "echo $((2 + 3))") == "5\n"
    assert board.session.user == access.username == "boruta-user"
    client.close_request(req_id)                    # the job ends: its key is revoked
    board_host, board_port = board.session.address()
    wait_until(lambda: str(client.get_worker_info(board.uuid).state) == "IDLE", 10,
               what="the board prepared again")
    with pytest.raises(paramiko.AuthenticationException):
        ssh_exec(board_host, board_port, access.username, key_file, "true")
