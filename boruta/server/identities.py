"""Who may connect, and who each call is: users, enrolled dryads, and the CURVE handshake.

Every socket of a secure server is a CurveZMQ server. pyzmq's authenticator
(ZAP) runs on the server's loop and asks `allowed` for each new connection:
the client and events sockets accept the keys of users, the dryad socket
the keys of enrolled dryads. The ZAP user id of a connection is its public
key; the endpoint reads it from each frame (`Call.key`) and finds the user
by key here, so a call cannot claim to be anyone else and identity costs a
dictionary look-up per call.

The books live in the store (users and enrolments tables) when the server
is durable, else in memory; the bootstrap admin (the identity directory's
`admin.key`, boruta.server.keyring) is put back at every start.

A server run with `insecure = true` has no handshake: every peer is the
INSECURE user, an admin.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from boruta.core.enrolment import DryadEnrolment
from boruta.core.errors import NotFoundError
from boruta.core.users import ALL_PRIORITIES, UNLIMITED_OPEN, Role, User, UserBook

if TYPE_CHECKING:
    from boruta.server.app import Server
    from boruta.server.keyring import Keyring

log = logging.getLogger("boruta.server")

CLIENT_DOMAIN, DRYAD_DOMAIN, EVENTS_DOMAIN = "client", "dryad", "events"
BOOTSTRAP_ADMIN = "admin"
REFUSED_LINES = 20                   # refused handshakes logged a minute (the rest counted)

#: Every peer of an insecure server: an admin without a key.
INSECURE = User("insecure", (), (), Role.ADMIN, ALL_PRIORITIES, UNLIMITED_OPEN)


class Identities:
    """The user book and the dryad enrolments, kept in the store, and the ZAP callback."""

    def __init__(self, app: "Server") -> None:
        self.app = app
        self.insecure = app.cfg.insecure
        self.users = UserBook()
        self.dryads = DryadEnrolment(max_workers_per_key=app.cfg.max_workers_per_dryad_key)
        self.refused = 0                      # handshakes refused (unknown keys)
        self._window_start = time.monotonic()
        self._logged = self._unlogged = 0
        self._auth: AsyncioAuthenticator | None = None

    # ------------------------------------------------------------------ start and stop
    def load(self, keyring: "Keyring | None") -> None:
        """The books from the store; the bootstrap admin from the keyring, put back if gone."""
        store = self.app.store
        if store is not None:
            for doc in store.load_users():
                try:
                    self.users.add(User.from_doc(doc))
                except Exception as exc:          # a damaged row must not stop the farm
                    log.error("a stored user was skipped: %s", exc)
            for uuid, key in store.load_enrolments():
                try:
                    self.dryads.enrol(uuid, key)
                except Exception as exc:
                    log.error("a stored enrolment was skipped: %s", exc)
        if keyring is not None:
            self._bootstrap_admin(keyring.admin.public)

    def _bootstrap_admin(self, key: str) -> None:
        holder = self.users.by_key(key)
        if holder is not None and holder.admin:
            return
        try:
            current = self.users.get(BOOTSTRAP_ADMIN)
        except NotFoundError:
            current = None
        if holder is not None:                     # demoted: the file's key is always an admin
            self.save_user(self.users.update(holder.name, {"role": Role.ADMIN.value}))
        elif current is not None:
            self.save_user(self.users.update(BOOTSTRAP_ADMIN, {
                "keys": [*current.keys, key], "role": Role.ADMIN.value}))
        else:
            self.save_user(self.users.add(User(BOOTSTRAP_ADMIN, (key,), (), Role.ADMIN,
                                               ALL_PRIORITIES, UNLIMITED_OPEN)))
        log.info("bootstrap admin is in the user book", extra={"fields": {
            "user": self.users.by_key(key).name}})           # type: ignore[union-attr]

    def start(self, ctx: zmq.Context[Any]) -> None:
        """The ZAP handler, on this loop, in the sockets' context (before they bind)."""
        if self.insecure:
            return
        auth = AsyncioAuthenticator(context=zmq.asyncio.Context.shadow(ctx.underlying),
                                    log=logging.getLogger("boruta.server.zap"))
        auth.start()
        for domain in (CLIENT_DOMAIN, DRYAD_DOMAIN, EVENTS_DOMAIN):
            auth.configure_curve_callback(domain, credentials_provider=self)
        self._auth = auth

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    # ------------------------------------------------------------------ the handshake
    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: may this public key (Z85) connect to this socket?"""
        text = key.decode("ascii", "replace")
        if domain == DRYAD_DOMAIN:
            allowed = self.dryads.holds_key(text)
        else:
            allowed = self.users.by_key(text) is not None
        if not allowed:
            self.refused += 1
            self._log_refused(domain, text)
        return allowed

    def _log_refused(self, domain: str, key: str) -> None:
        """A line per refused handshake, up to REFUSED_LINES a minute: a peer that
        reconnects with an unknown key in a loop must not fill the disk."""
        now = time.monotonic()
        if now - self._window_start >= 60.0:
            if self._unlogged:
                log.warning("handshakes refused without a line", extra={"fields": {
                    "count": self._unlogged, "seconds": round(now - self._window_start)}})
            self._window_start, self._logged, self._unlogged = now, 0, 0
        if self._logged < REFUSED_LINES:
            self._logged += 1
            log.warning("handshake refused: unknown key", extra={"fields": {
                "socket": domain, "key": key}})
        else:
            self._unlogged += 1

    # ------------------------------------------------------------------ calls
    def user_of(self, key: str | None) -> User | None:
        """The user a call comes from: by its connection's key (INSECURE without one)."""
        if self.insecure:
            return INSECURE
        return self.users.by_key(key)

    # ------------------------------------------------------------------ changes, kept
    def save_user(self, user: User) -> User:
        if self.app.store is not None:
            self.app.store.save_user(user.to_doc())
        return user

    def forget_user(self, name: str) -> None:
        if self.app.store is not None:
            self.app.store.delete_user(name)

    def save_enrolment(self, uuid: str, key: str) -> None:
        if self.app.store is not None:
            self.app.store.save_enrolment(uuid, key)

    def forget_enrolment(self, uuid: str) -> None:
        if self.app.store is not None:
            self.app.store.delete_enrolment(uuid)
