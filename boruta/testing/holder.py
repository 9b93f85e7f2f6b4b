"""A lease holder in a process of its own, to be killed: `python -m boruta.testing.holder`.

    python -m boruta.testing.holder CLIENT_CONFIG DEVICE_TYPE GRACE

It files one request for DEVICE_TYPE with a lease of GRACE seconds (queued
even if no worker has the caps yet), prints `held ID`, and then only lives:
its client renews the lease in the background until the process dies. Tests
and benches kill it with real signals to see the server close the request.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from boruta.transport.client import Client


def start_holder(server: Any, log: Path, device_type: str, grace: float) -> tuple[Any, int]:
    """A holder of a request on `server` (a ServerProcess): its Child and the request's ID."""
    from boruta.testing.processes import Child
    child = Child([sys.executable, "-m", "boruta.testing.holder", str(server.client_config),
                   device_type, str(grace)], log)
    return child, int(child.expect("held").split()[1])


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    config, device_type, grace = argv
    client = Client.from_config(config, timeout=2.0, retries=1)
    req_id = client.new_request({"device_type": device_type}, 4, lease=float(grace),
                                queue_unsatisfiable=True)
    print("held", req_id, flush=True)
    threading.Event().wait()               # until a signal ends the process
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
