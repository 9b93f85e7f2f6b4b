"""Getting into a worker: wait for the request's job, write its SSH key, say how to log in.

The key file is created with mode 0600 from its first byte (ssh refuses a
key others can read), and a bad --key-out is refused before the call, so
that a job is never started for a key that cannot be written. The `ssh`
line is printed for a shell to run, so an access that would not print as
that one command (a control character, a user name read as an option) is
refused, whoever sent it.
"""
from __future__ import annotations

import os
from typing import Any

from boruta.cli import output as out
from boruta.cli.errors import CliError, refused, wait_reported
from boruta.cli.options import wait_timeout
from boruta.core import addresses
from boruta.core.addresses import AddressError

ACQUIRE_TIMEOUT = 3600.0   # how long `request acquire` waits while the request is WAITING
UNSAFE_ACCESS = "unsafe_access"   # the server's access would not print as one ssh command


def check_key_out(path: str) -> None:
    """Refuse a --key-out that cannot be written (before anything is asked of the server)."""
    if os.path.isdir(path):
        raise CliError(f"--key-out {path!r} is a directory; give a file name")
    if not path.isprintable():
        raise CliError(f"--key-out {path!r}: a file name with a control character "
                       "cannot be printed in the ssh command line")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CliError(f"--key-out {path!r}: directory {parent!r} does not exist")


def key_text(key: Any) -> str:
    """The private key as OpenSSH/PEM text ending with a newline."""
    if isinstance(key, bytes):
        text = key.decode("utf-8")
    elif isinstance(key, str):
        text = key
    elif hasattr(key, "private_bytes"):          # a key object, as an in-process shell makes it
        from cryptography.hazmat.primitives import serialization
        text = key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption()).decode("ascii")
    else:
        raise refused("the server sent no usable private key", "internal")
    if not text.strip():
        raise refused("the server sent an empty private key", "internal")
    return text if text.endswith("\n") else text + "\n"


def guess_key_type(text: str) -> str | None:
    """ssh-rsa or ssh-ed25519 from the key itself, when the server did not say."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    data = text.encode()
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        return "ssh-rsa"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ssh-ed25519"
    return None


def write_key_file(path: str, text: str) -> None:
    """Create (or replace) the key file with mode 0600 from the first byte."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write the key to {path!r}: {exc.strerror or exc}",
                       code="key_file") from None
    try:
        os.fchmod(fd, 0o600)
        data = text.encode("utf-8")
        while data:
            written = os.write(fd, data)
            data = data[written:]
    except OSError as exc:
        raise CliError(f"cannot write the key to {path!r}: {exc.strerror or exc}",
                       code="key_file") from None
    finally:
        os.close(fd)


def access_address(access: Any) -> tuple[str, int]:
    """Where to SSH to: the address the server gives (a tunnel), else the worker's sshd."""
    try:
        return addresses.access_address(access)
    except AddressError:
        raise refused("the server gave no address to connect to", "internal") from None


def acquire(client: Any, req_id: int, key_out: str | None) -> dict[str, Any]:
    """Wait for the worker and write the key; the access document
    (its `_`-keys are for print_access)."""
    path = key_out if key_out else f"./boruta-{req_id}.key"
    check_key_out(path)
    timeout = wait_timeout(ACQUIRE_TIMEOUT)
    with wait_reported(f"request {req_id} is still WAITING", timeout):
        access = client.acquire_worker(req_id, timeout=timeout)
    host, port = access_address(access)
    username = str(access.username)
    try:
        out.check_access_line(path, host, username)
    except out.AccessLineError as exc:
        raise refused(f"the server sent an access that is unsafe to print: {exc}",
                      UNSAFE_ACCESS) from None
    text = key_text(access.key)
    write_key_file(path, text)
    key_type = getattr(access, "key_type", None) or guess_key_type(text)
    doc = out.access_doc(host, port, username, os.path.abspath(path), key_type)
    doc["_key_shown"] = path
    doc["_worker_uuid"] = getattr(access, "worker_uuid", None)
    return doc


def print_access(req_id: int, doc: dict[str, Any]) -> None:
    out.print_access(req_id, doc.get("_worker_uuid"), doc["host"], doc["port"], doc["username"],
                     doc["_key_shown"], doc["key_type"])


def public_access(doc: dict[str, Any]) -> dict[str, Any]:
    """The access document as --json prints it."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}
