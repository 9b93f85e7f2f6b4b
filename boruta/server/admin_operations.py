"""What the client endpoint does for the farm's administration: users and dryad enrolments.

Every operation here is declared `Access.ADMIN` in the operation table, so
the endpoint has refused anyone else before a handler runs. A change is
written to the store before it is answered (admin calls are rare; an answer
must not claim a change the disk does not hold), and undone in memory if
the store refuses it. No secret crosses the wire: users and dryads are
given by their public keys; the CLI keeps the private halves.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from boruta.core.users import User
from boruta.server.endpoint import Call

if TYPE_CHECKING:
    from boruta.server.app import Server

log = logging.getLogger("boruta.server")

USER_CHANGES = ("keys", "groups", "role", "priorities", "max_open")


def _kept(save: Callable[[], None], undo: Callable[[], None]) -> None:
    """Write a change already made in memory; undo it there if the write fails."""
    try:
        save()
    except Exception:
        undo()
        raise


class AdminOperations:
    def __init__(self, app: "Server") -> None:
        self.app = app
        self.ids = app.identities

    # ------------------------------------------------------------------ users
    def op_user_add(self, call: Call, a: dict[str, Any]) -> Any:
        doc = {k: a[k] for k in ("name", *USER_CHANGES) if a[k] is not None}
        user = self.ids.users.add(User.from_doc(doc))
        _kept(lambda: self.ids.save_user(user), lambda: self.ids.users.remove(user.name))
        self._said("user added", call, user=user.name, role=str(user.role))
        return user.to_doc()

    def op_user_set(self, call: Call, a: dict[str, Any]) -> Any:
        old = self.ids.users.get(a["name"])
        user = self.ids.users.update(old.name, {k: a[k] for k in USER_CHANGES})
        _kept(lambda: self.ids.save_user(user), lambda: self._put_back(old))
        self._said("user changed", call, user=user.name, role=str(user.role))
        return user.to_doc()

    def op_user_remove(self, call: Call, a: dict[str, Any]) -> Any:
        old = self.ids.users.remove(a["name"])
        _kept(lambda: self.ids.forget_user(old.name), lambda: self.ids.users.add(old))
        self._said("user removed", call, user=old.name)
        return None

    def op_user_list(self, call: Call, a: dict[str, Any]) -> Any:
        return [user.to_doc() for user in self.ids.users.users()]

    def op_user_token(self, call: Call, a: dict[str, Any]) -> Any:
        """Only the token's hash arrives: the CLI made the token and showed it once."""
        old = self.ids.users.get(a["name"])
        revoke = bool(a["revoke"])
        user = self.ids.users.with_token(old.name, a["token_hash"], revoke=revoke)
        _kept(lambda: self.ids.save_user(user), lambda: self._put_back(old))
        self._said("user token revoked" if revoke else "user token added", call,
                   user=user.name, token=a["token_hash"][:8])
        return user.to_doc()

    def _put_back(self, old: User) -> None:
        self.ids.users.remove(old.name)
        self.ids.users.add(old)

    # ------------------------------------------------------------------ dryads
    def op_dryad_enroll(self, call: Call, a: dict[str, Any]) -> Any:
        uuid, key = a["uuid"], a["key"]
        before = self.ids.dryads.key_of(uuid)
        self.ids.dryads.enrol(uuid, key)

        def undo() -> None:
            self.ids.dryads.revoke(uuid)
            if before is not None:
                self.ids.dryads.enrol(uuid, before)
        _kept(lambda: self.ids.save_enrolment(uuid, key), undo)
        if before is not None:
            self.app.dryads.revoked(uuid)          # the old key's connection is trusted no more
        self._said("dryad enrolled", call, worker_uuid=uuid, key=key)
        return {"uuid": uuid, "key": key}

    def op_dryad_revoke(self, call: Call, a: dict[str, Any]) -> Any:
        uuid = a["uuid"]
        key = self.ids.dryads.revoke(uuid)
        _kept(lambda: self.ids.forget_enrolment(uuid), lambda: self.ids.dryads.enrol(uuid, key))
        self.app.dryads.revoked(uuid)
        self._said("dryad revoked", call, worker_uuid=uuid)
        return None

    def op_dryad_list(self, call: Call, a: dict[str, Any]) -> Any:
        return [{"uuid": uuid, "key": key} for uuid, key in self.ids.dryads.items()]

    @staticmethod
    def _said(what: str, call: Call, **fields: Any) -> None:
        log.info(what, extra={"fields": {**fields, "by": call.who()}})
