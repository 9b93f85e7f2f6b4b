"""Per-job SSH keys: made off the event loop, kept ready in a small pool.

RSA-2048 by default (the private key as PKCS#1 PEM, `BEGIN RSA PRIVATE KEY`,
as upstream handed it out), Ed25519 by configuration (OpenSSH PEM). The
public half goes to the dryad in OpenSSH `authorized_keys` format.
"""
from __future__ import annotations

import asyncio
import collections
import json
from concurrent.futures import Executor
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

KEY_COMMENT = "boruta-job"
SSH_KEY_TYPES = {"rsa": "ssh-rsa", "ed25519": "ssh-ed25519"}


@dataclass(frozen=True)
class JobKey:
    key_type: str                                # "ssh-rsa" | "ssh-ed25519"
    public_openssh: str                          # "ssh-rsa AAAA... boruta-job"
    private_text: str = field(repr=False)        # never in logs or reprs

    def __repr__(self) -> str:
        return f"JobKey({self.key_type}, {self.public_openssh[-16:]})"


def generate_key(kind: str = "rsa", rsa_bits: int = 2048) -> JobKey:
    """Blocking: call it in an executor (cryptography releases the GIL while it works)."""
    if kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        text = private.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
    elif kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        text = private.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption())
    else:
        raise ValueError(f"unknown key type {kind!r}")
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
    return JobKey(SSH_KEY_TYPES[kind], f"{public.decode()} {KEY_COMMENT}", text.decode())


class KeyPool:
    """Keeps `size` keys ready; `take()` returns one at once when the pool is not empty.

    Refills run in `executor`. When the pool is empty (a burst of prepares),
    `take()` awaits the next key made; every waiter gets its own key.
    """

    def __init__(self, kind: str, size: int, executor: Executor, rsa_bits: int = 2048) -> None:
        self.kind = kind
        self.size = size
        self.rsa_bits = rsa_bits
        self._executor = executor
        self._ready: collections.deque[JobKey] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[JobKey]] = collections.deque()
        self._inflight = 0
        self._closed = False
        self.made = 0

    def start(self) -> None:
        self._refill()

    def ready_count(self) -> int:
        return len(self._ready)

    async def take(self) -> JobKey:
        if self._ready:
            key = self._ready.popleft()
            self._refill()
            return key
        fut: asyncio.Future[JobKey] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._refill()
        try:
            return await fut
        finally:
            if not fut.done():
                fut.cancel()
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass

    def _refill(self) -> None:
        if self._closed:
            return
        live_waiters = sum(1 for w in self._waiters if not w.done())
        while len(self._ready) + self._inflight < self.size + live_waiters:
            self._inflight += 1
            loop = asyncio.get_running_loop()
            task = loop.run_in_executor(self._executor, generate_key, self.kind, self.rsa_bits)
            task.add_done_callback(self._made)

    def _made(self, fut: asyncio.Future[JobKey]) -> None:
        self._inflight -= 1
        if fut.cancelled() or self._closed:
            return
        exc = fut.exception()
        if exc is not None:
            for waiter in list(self._waiters):
                if not waiter.done():
                    waiter.set_exception(exc)
                    break
            return
        key = fut.result()
        self.made += 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(key)
                return
        self._ready.append(key)

    def close(self) -> None:
        self._closed = True
        self._ready.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()


# -- the store's text form ---------------------------------------------------
# A worker's key goes into the durable store as text and comes back as a
# JobKey on restart. The text holds the private key: the store file is 0600.
_KEY_FORMAT = 1


def encode_key(key: object) -> str | None:
    """JobKey -> text for the store (None stays None; text is taken as already encoded)."""
    if key is None or isinstance(key, str):
        return key
    if not isinstance(key, JobKey):
        raise TypeError(f"cannot store a {type(key).__name__} as a job key")
    return json.dumps({"v": _KEY_FORMAT, "type": key.key_type, "public": key.public_openssh,
                       "private": key.private_text}, separators=(",", ":"))


def decode_key(text: object) -> JobKey | None:
    """The store's text -> JobKey; None for None, and for text that is not a key of ours
    (the worker then holds no usable key: its job cannot be resumed, a fresh prepare
    makes a new one)."""
    if not isinstance(text, str):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != _KEY_FORMAT:
        return None
    key_type, public, private = doc.get("type"), doc.get("public"), doc.get("private")
    if not (key_type in SSH_KEY_TYPES.values() and isinstance(public, str)
            and isinstance(private, str)):
        return None
    return JobKey(key_type, public, private)
