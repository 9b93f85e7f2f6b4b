"""The S5 load generator sends exactly what boruta.Client sends (bench/e2e_server.py)."""
from __future__ import annotations

from bench.e2e_load import DRYAD_CAPS, NewRequestFrames
from boruta.transport import codec
from boruta.transport.operations import CLIENT_OPS


def test_prebuilt_new_request_frames_are_the_clients_bytes() -> None:
    frames = NewRequestFrames()
    for priority in range(1, 17):
        args = CLIENT_OPS["new_request"].encode_args({"caps": DRYAD_CAPS, "priority": priority})
        for msg_id in (0, 1, 127, 128, 65536, 2**32 + 5):
            assert frames(msg_id, priority) == codec.request_frame(msg_id, "new_request", args)
