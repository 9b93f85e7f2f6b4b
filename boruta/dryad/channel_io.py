"""Bytes between an SSH channel and a job's process, and the end of that process.

The embedded SSH server runs each command as a process in its own session
(process group), fed from the channel and copied back to it, by threads.
A client that hangs up gets its processes a SIGHUP, as sshd does; revoking
a job SIGKILLs whatever is left (`kill_group`).
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import struct
import subprocess
import sys
import termios
from typing import IO, Callable

import paramiko

__all__ = ["close_quietly", "exit_status", "feed_pty", "feed_stdin", "kill_group", "pump",
           "set_winsize", "with_controlling_tty"]

log = logging.getLogger(__name__)

CHUNK = 32768

# Run argv[1:] with stdin as the controlling terminal (a new session has none).
_CTTY_HELPER = ("import fcntl,os,sys,termios;"
                "fcntl.ioctl(0,termios.TIOCSCTTY,0);"
                "os.execvp(sys.argv[1],sys.argv[1:])")


def with_controlling_tty(argv: list[str]) -> list[str]:
    """`argv` wrapped so that it runs with its stdin (a pty) as controlling terminal.

    Job control and ^C in an interactive shell need one; a process started in
    a new session has none until it asks.
    """
    return [sys.executable, "-I", "-c", _CTTY_HELPER, *argv]


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group of a job's command, if it is still running."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def close_quietly(chan: paramiko.Channel) -> None:
    """Close a channel whose client may have hung up already (paramiko raises EOFError)."""
    try:
        chan.close()
    except Exception as e:
        log.debug("closing a session channel: %s", e or type(e).__name__)


def exit_status(code: int) -> int:
    """A Popen return code as a shell reports it: killed by signal N is 128 + N."""
    return 128 - code if code < 0 else code


def pump(src: IO[bytes], send: Callable[[bytes], None]) -> None:
    """Copy a process's output to the channel; keep draining if the channel died."""
    alive = True
    fd = src.fileno()
    try:
        while True:
            data = os.read(fd, CHUNK)
            if not data:
                return
            if alive:
                try:
                    send(data)
                except Exception:
                    alive = False
    finally:
        src.close()


def feed_stdin(chan: paramiko.Channel, proc: subprocess.Popen) -> None:
    """Copy the channel to the process's stdin; hang up on it if the client left."""
    assert proc.stdin is not None
    try:
        while True:
            data = chan.recv(CHUNK)
            if not data:
                break
            proc.stdin.write(data)
            proc.stdin.flush()
    except (OSError, ValueError):
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
    if chan.closed:  # the client went away: hang up, as sshd does
        kill_group(proc, signal.SIGHUP)


def feed_pty(chan: paramiko.Channel, proc: subprocess.Popen, master: int) -> None:
    """Copy the channel to the pty's master side; hang up if the client left."""
    try:
        while True:
            data = chan.recv(CHUNK)
            if not data:
                break
            while data:
                data = data[os.write(master, data):]
    except OSError:
        pass
    if chan.closed:
        kill_group(proc, signal.SIGHUP)


def set_winsize(fd: int, size: tuple[int, int, int, int]) -> None:
    """Tell the pty its window size: (columns, rows, pixel width, pixel height)."""
    cols, rows, pw, ph = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, pw, ph))
