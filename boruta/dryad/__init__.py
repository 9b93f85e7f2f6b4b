"""The dryad: the agent on each MuxPi board next to a device under test.

* `agent`: `DryadAgent`, the process (`boruta dryad`), joining the parts
  below to the server through `link`: `DryadLink`, the dryad's side of the
  wire (register, heartbeat, reconnect, answer commands).
* `operations`: `DryadOperations`, i.e. PutInMaintenance, Prepare, Healthcheck.
* `board`: the `Board` protocol (MuxPi operations) and `SimulatedBoard`;
  `stm`: `StmBoard`, the MuxPi STM's serial text protocol.
* `session`: the `SessionBackend` protocol and `SessionError`;
  `accounts`: job keys and session user names;
  `embedded_ssh`: `EmbeddedSSHServer` (paramiko), with `channel_io` and
  `sftp` (rooted at a job's working directory);
  `system_session`: `SystemSessionBackend` (a real account for the board's sshd).
* `config`: the TOML configuration (`load_config`, `write_default_config`).

Names are imported lazily so that `import boruta.dryad` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Board": "board",
    "BoardError": "board",
    "SimulatedBoard": "board",
    "StmBoard": "stm",
    "SessionBackend": "session",
    "SessionError": "session",
    "EmbeddedSSHServer": "embedded_ssh",
    "SystemSessionBackend": "system_session",
    "RootedSFTPServer": "sftp",
    "DryadOperations": "operations",
    "DryadAgent": "agent",
    "DryadLink": "link",
    "DryadConfig": "config",
    "load_config": "config",
    "write_default_config": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'boruta.dryad' has no attribute {name!r}")
    return getattr(importlib.import_module(f"boruta.dryad.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
