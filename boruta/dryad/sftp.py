"""SFTP for the embedded SSH server, rooted at the job's working directory.

The client sees the working directory as `/`. A path that would leave it,
by `..` above the root or through a symbolic link pointing outside, is
refused with "permission denied" rather than clamped, so a mistake shows.
"""
from __future__ import annotations

import errno
import os

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.sftp import SFTP_OK, SFTP_PERMISSION_DENIED

__all__ = ["RootedSFTPServer", "PathEscapeError", "resolve_in_root"]


class PathEscapeError(PermissionError):
    """A client path that leads outside the root."""


def _client_parts(path: str | bytes) -> list[str]:
    """The components of a client path under the root; raise if it climbs out."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    if "\0" in path:
        raise PathEscapeError(f"bad path {path!r}")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathEscapeError(f"{path!r} leaves the working directory")
            parts.pop()
        else:
            parts.append(part)
    return parts


def resolve_in_root(root: str, path: str | bytes) -> str:
    """The local path for client `path`, with symbolic links resolved.

    Raises PathEscapeError when the path, or what its links point to, is
    outside `root` (which must be a real path).
    """
    local = os.path.join(root, *_client_parts(path))
    real = os.path.realpath(local)
    if real != root and not real.startswith(root + os.sep):
        raise PathEscapeError(f"{path!r} leads outside the working directory")
    return real


def _lexical(root: str, path: str | bytes) -> str:
    """The local path without resolving the last component (for lstat, links)."""
    parts = _client_parts(path)
    if not parts:
        return root
    parent = resolve_in_root(root, "/" + "/".join(parts[:-1]))
    return os.path.join(parent, parts[-1])


def _errno_reply(e: OSError) -> int:
    if isinstance(e, PathEscapeError):
        return SFTP_PERMISSION_DENIED
    return SFTPServer.convert_errno(e.errno or errno.EIO)


class _Handle(SFTPHandle):
    def stat(self):
        try:
            return SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as e:
            return _errno_reply(e)

    def chattr(self, attr):
        try:
            SFTPServer.set_file_attr(self.filename, attr)
        except OSError as e:
            return _errno_reply(e)
        return SFTP_OK


class RootedSFTPServer(SFTPServerInterface):
    """An SFTPServerInterface confined to one directory.

    paramiko builds it with the connection's ServerInterface; the root is
    `root=` if given, else that interface's `workdir` attribute (the
    embedded SSH server sets it when the connection authenticates).
    """

    def __init__(self, server: paramiko.ServerInterface, *args, root: str | None = None,
                 **kwargs) -> None:
        super().__init__(server, *args, **kwargs)
        root = root if root is not None else getattr(server, "workdir", None)
        if not root:
            raise ValueError("RootedSFTPServer needs a root directory")
        self.root = os.path.realpath(root)

    def _real(self, path) -> str:
        return resolve_in_root(self.root, path)

    def _client_path(self, real: str) -> str:
        rel = os.path.relpath(real, self.root)
        return "/" if rel == "." else "/" + rel.replace(os.sep, "/")

    # --- the interface ------------------------------------------------------------

    def canonicalize(self, path):
        # An escape raises: paramiko then answers SSH_FX_FAILURE.
        return self._client_path(self._real(path))

    def list_folder(self, path):
        try:
            real = self._real(path)
            out = []
            for name in os.listdir(real):
                attr = SFTPAttributes.from_stat(os.lstat(os.path.join(real, name)))
                attr.filename = name
                out.append(attr)
            return out
        except OSError as e:
            return _errno_reply(e)

    def stat(self, path):
        try:
            return SFTPAttributes.from_stat(os.stat(self._real(path)))
        except OSError as e:
            return _errno_reply(e)

    def lstat(self, path):
        try:
            return SFTPAttributes.from_stat(os.lstat(_lexical(self.root, path)))
        except OSError as e:
            return _errno_reply(e)

    def open(self, path, flags, attr):
        try:
            real = self._real(path)
            mode = getattr(attr, "st_mode", None) or 0o666
            fd = os.open(real, flags | getattr(os, "O_BINARY", 0), mode & 0o7777)
        except OSError as e:
            return _errno_reply(e)
        if (flags & os.O_CREAT) and attr is not None:
            attr._flags &= ~attr.FLAG_PERMISSIONS
            try:
                SFTPServer.set_file_attr(real, attr)
            except OSError:
                pass
        if flags & os.O_WRONLY:
            fmode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            fmode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            fmode = "rb"
        handle = _Handle(flags)
        handle.filename = real
        handle.readfile = handle.writefile = os.fdopen(fd, fmode)
        return handle

    def remove(self, path):
        try:
            os.remove(_lexical(self.root, path))
        except OSError as e:
            return _errno_reply(e)
        return SFTP_OK

    def rename(self, oldpath, newpath):
        try:
            old, new = _lexical(self.root, oldpath), _lexical(self.root, newpath)
            if os.path.exists(new):
                return SFTPServer.convert_errno(errno.EEXIST)
            os.rename(old, new)
        except OSError as e:
            return _errno_reply(e)
        return SFTP_OK

    def posix_rename(self, oldpath, newpath):
        try:
            os.rename(_lexical(self.root, oldpath), _lexical(self.root, newpath))
        except OSError as e:
            return _errno_reply(e)
        return SFTP_OK

    def mkdir(self, path, attr):
        try:
            real = self._real(path)
            os.mkdir(real)
            if attr is not None:
                SFTPServer.set_file_attr(real, attr)
        except OSError as e:
            return _errno_reply(e)
        return SFTP_OK

    def rmdir(self, path):
        try:
            os.rmdir(_lexical(self.root, path))
        except OSError as e:
            return _errno_reply(e)
        return SFTP_OK

    def chattr(self, path, attr):
        try:
            SFTPServer.set_file_attr(self._real(path), attr)
        except OSError as e:
            return _errno_reply(e)
        return SFTP_OK

    def symlink(self, target_path, path):
        # Only links that stay inside; stored relative to the link's directory.
        try:
            link = _lexical(self.root, path)
            base = os.path.dirname(link)
            if target_path.startswith("/"):
                target = self._real(target_path)
            else:
                here = self._client_path(base)
                target = self._real(here.rstrip("/") + "/" + target_path)
            os.symlink(os.path.relpath(target, base), link)
        except OSError as e:
            return _errno_reply(e)
        return SFTP_OK

    def readlink(self, path):
        try:
            link = _lexical(self.root, path)
            os.readlink(link)  # ENOENT / EINVAL when not a link
            return self._client_path(self._real(path))
        except OSError as e:
            return _errno_reply(e)
