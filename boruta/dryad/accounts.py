"""Who may log in: a job's SSH public key and the session user's name.

Both come from outside the dryad (the key from the server, the name from the
configuration) and end up in an SSH server's decisions or in `useradd`'s
argument list, so both are checked strictly, once, here.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import paramiko

from boruta.core.names import USER_NAME_RULE, is_user_name
from boruta.dryad.session import SessionError

__all__ = [
    "KEY_TYPES",
    "MIN_RSA_BITS",
    "PublicKey",
    "USER_NAME_RULE",
    "check_username",
    "is_user_name",
    "parse_public_key",
]

#: The key types a job key may have (no DSA: too weak and gone from OpenSSH).
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key: its type and wire blob (the comment is kept for logs)."""

    type: str
    blob: bytes
    comment: str = ""

    @property
    def openssh(self) -> str:
        """`type base64`, the authorized_keys line without options or comment."""
        return f"{self.type} {base64.b64encode(self.blob).decode('ascii')}"

    def matches(self, key: paramiko.PKey) -> bool:
        return key.asbytes() == self.blob

    def fingerprint(self) -> str:
        return paramiko.PKey.from_type_string(self.type, self.blob).fingerprint


def parse_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line: `TYPE BASE64 [COMMENT]`.

    Refuses options, several lines, unknown or weak types (DSA, RSA under
    2048 bits) and blobs that do not decode to the key they claim to be.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str) or not text.strip():
        raise SessionError("empty public key")
    text = text.strip()
    if "\n" in text or "\r" in text or "\0" in text:
        raise SessionError("a public key is one line")
    fields = text.split(None, 2)
    if len(fields) < 2:
        raise SessionError("public key must be 'TYPE BASE64 [COMMENT]'")
    ktype, b64 = fields[0], fields[1]
    if ktype not in KEY_TYPES:
        raise SessionError(f"unsupported public key type {ktype[:40]!r}; one of {KEY_TYPES}")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise SessionError("public key is not valid base64") from None
    try:
        key = paramiko.PKey.from_type_string(ktype, blob)
    except Exception as e:  # paramiko raises several kinds on bad blobs
        raise SessionError(f"public key does not decode: {e}") from None
    if key.asbytes() != blob:
        raise SessionError("public key blob is not canonical")
    if ktype == "ssh-rsa" and key.get_bits() < MIN_RSA_BITS:
        raise SessionError(f"RSA key of {key.get_bits()} bits; at least {MIN_RSA_BITS} needed")
    return PublicKey(ktype, blob, fields[2] if len(fields) > 2 else "")


def check_username(name: str) -> str:
    """`name` if it is a portable POSIX user name, else SessionError saying the rule."""
    if not is_user_name(name):
        raise SessionError(f"invalid user name {name!r:.60}: {USER_NAME_RULE}")
    return name
