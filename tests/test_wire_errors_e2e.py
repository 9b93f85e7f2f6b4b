"""The server's own errors reach the caller as themselves, even when their id is nil."""
from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest

import boruta
from boruta.transport.errors import FrameTooLargeError, ServerUnreachableError
from e2e_helpers import ROOT, ServerProcess

pytestmark = pytest.mark.slow

MAX_FRAME = 4096


@pytest.fixture(scope="module")
def small_frames(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("frames") / "server.log",
                           max_frame_bytes=MAX_FRAME)
    server.start()
    yield server
    server.close()


def test_client_reads_frame_too_large_instead_of_reporting_unreachable(
        small_frames: ServerProcess) -> None:
    client = boruta.Client(small_frames.listen, timeout=3.0, retries=1,
                           credentials=small_frames.credentials)
    try:
        with pytest.raises(FrameTooLargeError) as caught:
            client.new_request({"blob": "x" * (2 * MAX_FRAME)}, 8)
        assert not isinstance(caught.value, ServerUnreachableError)
        assert caught.value.code == "frame_too_large"
        assert f"limit of {MAX_FRAME} bytes" in caught.value.message
        assert client.list_requests()[1].total_items == 0     # nothing was created
    finally:
        client.close()


async def _async_too_large(server: ServerProcess) -> str:
    async with boruta.AsyncClient(server.listen, timeout=3.0, retries=1,
                                  credentials=server.credentials) as client:
        try:
            await client.new_request({"blob": "x" * (2 * MAX_FRAME)}, 8)
        except FrameTooLargeError as exc:
            return exc.code
    return "no error"


def test_async_client_reads_frame_too_large(small_frames: ServerProcess) -> None:
    import asyncio
    assert asyncio.run(_async_too_large(small_frames)) == "frame_too_large"


def test_cli_exits_1_with_the_servers_error_for_an_oversize_call(
        small_frames: ServerProcess) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "boruta.cli", "--server", small_frames.listen, "--json",
         "request", "new", "--caps", f"blob={'x' * (2 * MAX_FRAME)}", "--priority", "8"],
        capture_output=True, text=True, cwd=ROOT, env=small_frames.cli_env(), timeout=30)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert '"code": "frame_too_large"' in proc.stdout
