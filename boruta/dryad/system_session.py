"""The system session backend: a real local account per job, for the board's own sshd.

On a MuxPi the board runs OpenSSH; the dryad only decides who may log in. For
each job it recreates the session user's account (a fresh home, password
locked) and installs the job's key as its only authorized key, as upstream's
dryad does. Needs root, and `useradd` / `userdel`.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import threading
from typing import Callable

from boruta.dryad.accounts import PublicKey, check_username, parse_public_key
from boruta.dryad.session import SessionError

__all__ = ["SystemSessionBackend", "command_error"]

# Exit codes of useradd and userdel (shadow-utils), worded as upstream's dryad words them.
_USERADD_ERRORS = {
    1: "can't update password file",
    2: "invalid command syntax",
    3: "invalid argument to option",
    4: "UID already in use (and no -o)",
    6: "specified group doesn't exist",
    9: "username already in use",
    10: "can't update group file",
    12: "can't create home directory",
    14: "can't update SELinux user mapping",
}
_USERDEL_ERRORS = {
    1: "can't update password file",
    2: "invalid command syntax",
    6: "specified user doesn't exist",
    8: "user currently logged in",
    10: "can't update group file",
    12: "can't remove home directory",
}


def command_error(tool: str, returncode: int, output: str) -> str:
    """`command failed: <text>` for a useradd/userdel exit code, as upstream reports it."""
    table = {"useradd": _USERADD_ERRORS, "userdel": _USERDEL_ERRORS}.get(tool, {})
    if returncode in table:
        return f"command failed: {table[returncode]}"
    return f"command failed: exit status {returncode}, {output.strip()}"


class SystemSessionBackend:
    """Recreates a local account per job for the board's own sshd (root only).

    `set_job_key(user, key)`: `userdel -r -f USER` if it exists, then
    `useradd -p '*' -m [-G GROUPS] USER` (password locked, fresh home), then
    `~/.ssh` (0700) and `~/.ssh/authorized_keys` (0600) owned by the user,
    holding the key. `revoke()` kills the user's processes (its SSH sessions)
    and removes the account. The key is checked before anything is touched.
    As a safeguard it never removes an account with a UID below `min_uid`.

    `user`: the configured session user; `start()` removes it if a previous
    run left it behind (a crash during a job must not leave a key valid).
    `address`: the board's sshd, as reported to the server.
    """

    def __init__(self, groups: tuple[str, ...] | list[str] = (), *, user: str | None = None,
                 address: tuple[str, int] = ("", 22), min_uid: int = 1000,
                 runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
        self.groups = tuple(groups)
        self._configured_user = check_username(user) if user is not None else None
        self._address = address
        self.min_uid = min_uid
        self._run = runner
        self._user: str | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        for tool in ("useradd", "userdel"):
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
                raise SessionError(f"{tool} not found: the system session backend needs it")
        if self._configured_user is not None:
            with self._lock:
                self._remove(self._configured_user)

    def set_job_key(self, user: str, public_key_openssh: str) -> str:
        user = check_username(user)
        key = parse_public_key(public_key_openssh)
        with self._lock:
            if self._user is not None and self._user != user:
                self._remove(self._user)
            self._user = user
            self._remove(user)
            self._create(user)
            self._install(user, key)
        return user

    def revoke(self) -> None:
        with self._lock:
            if self._user is not None:
                self._remove(self._user)
                self._user = None

    def stop(self) -> None:
        self.revoke()

    def address(self) -> tuple[str, int]:
        return self._address

    # internals

    def _tool(self, name: str) -> str:
        return shutil.which(name) or f"/usr/sbin/{name}"

    def _remove(self, user: str) -> None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return
        if pw.pw_uid < self.min_uid:
            raise SessionError(f"user removal failed: {user} has UID {pw.pw_uid} "
                               f"< {self.min_uid}; refusing to delete a system account")
        _kill_uid(pw.pw_uid)
        done = self._run([self._tool("userdel"), "-r", "-f", user],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode == 0 or (done.returncode in (6, 12) and not _user_exists(user)):
            return  # gone (12: the home was already missing)
        raise SessionError("user removal failed: "
                           + command_error("userdel", done.returncode, done.stdout or ""))

    def _create(self, user: str) -> None:
        argv = [self._tool("useradd"), "-p", "*", "-m"]
        if self.groups:
            argv += ["-G", ",".join(self.groups)]
        done = self._run(argv + [user], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        if done.returncode != 0:
            raise SessionError("user creation failed: "
                               + command_error("useradd", done.returncode, done.stdout or ""))

    def _install(self, user: str, key: PublicKey) -> None:
        try:
            pw = pwd.getpwnam(user)
            ssh_dir = os.path.join(pw.pw_dir, ".ssh")
            os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
            os.chmod(ssh_dir, 0o700)
            os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
            path = os.path.join(ssh_dir, "authorized_keys")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(fd, 0o600)
                os.fchown(fd, pw.pw_uid, pw.pw_gid)
                f.write(key.openssh + " boruta-job\n")
        except (KeyError, OSError) as e:
            raise SessionError(f"user information update failed: {e}") from e


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _kill_uid(uid: int) -> None:
    """SIGKILL every process whose real UID is `uid` (the leaving user's sessions)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            os.kill(int(name), signal.SIGKILL)
                        break
        except (OSError, ValueError):
            continue
