"""SSH session backends: who may log in to the board during the current job.

Every job gets one public key (the server generates the pair and hands the
private half to the request's owner only). A backend lets in the job user
with that key and nothing else, and forgets it when the job's key is
revoked or replaced. Two backends share the `SessionBackend` protocol:

* `boruta.dryad.embedded_ssh.EmbeddedSSHServer`: an SSH server inside the
  dryad (paramiko, threads), for development, tests, the demo, and boards
  without their own sshd;
* `boruta.dryad.system_session.SystemSessionBackend`: a real local account
  per job for the board's own OpenSSH server, as upstream's dryad does. Needs
  root.

Both check keys and user names with `boruta.dryad.accounts`. Every method is
blocking; the asyncio side calls them in a worker thread.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from boruta.core.errors import BorutaError

__all__ = ["SessionBackend", "SessionError"]


class SessionError(BorutaError):
    """A session backend could not do what it was asked (or a bad key or name)."""

    code = "session_failed"


@runtime_checkable
class SessionBackend(Protocol):
    def start(self) -> None:
        """Get ready (bind, check tools). Called once before anything else."""

    def set_job_key(self, user: str, public_key_openssh: str) -> str:
        """Let `user` in with this key only, revoking any previous job; return the username."""

    def revoke(self) -> None:
        """Nobody gets in any more; the previous job's sessions are ended."""

    def stop(self) -> None:
        """Revoke, release everything. Idempotent."""

    def address(self) -> tuple[str, int]:
        """Where the SSH server listens: (host, port)."""
