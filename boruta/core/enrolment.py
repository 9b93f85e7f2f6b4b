"""Dryad enrolment: which key may register which worker.

An admin enrols a worker's UUID with the public key its dryad connects
with. A dryad may then register that UUID and no other, so a peer on the
dryad port can neither add workers nobody enrolled nor take over an
existing worker by registering its UUID again. Each key serves at most
`max_workers_per_key` workers (one board per dryad is the usual farm).

Pure data and rules, no I/O: the server keeps the enrolments in its store.
"""
from __future__ import annotations

from typing import Iterable

from boruta.core.errors import AlreadyExistsError, BadArgumentError, NotEnrolledError, NotFoundError
from boruta.core.users import check_public_key


MAX_UUID_LENGTH = 256             # a worker's UUID is a cap value: as long as one may be


def check_uuid(uuid: object) -> str:
    if not isinstance(uuid, str) or not uuid or len(uuid) > MAX_UUID_LENGTH:
        raise BadArgumentError(f"uuid must be a non-empty string of at most {MAX_UUID_LENGTH} "
                               f"characters, not {repr(uuid)[:40]}")
    return uuid


class DryadEnrolment:
    def __init__(self, enrolled: Iterable[tuple[str, str]] = (),
                 max_workers_per_key: int = 1) -> None:
        if max_workers_per_key < 1:
            raise BadArgumentError("max_workers_per_key must be at least 1")
        self.max_workers_per_key = max_workers_per_key
        self._key_of: dict[str, str] = {}
        self._uuids_of: dict[str, set[str]] = {}
        for uuid, key in enrolled:
            self._put(uuid, key)

    def __len__(self) -> int:
        return len(self._key_of)

    def enrol(self, uuid: str, key: str) -> None:
        """Let `key` register `uuid`; an enrolled UUID is revoked first."""
        uuid = check_uuid(uuid)
        check_public_key(key, "key")
        if self._key_of.get(uuid) == key:
            raise AlreadyExistsError(f"worker {uuid} is already enrolled with this key")
        others = self._uuids_of.get(key, set()) - {uuid}
        if len(others) >= self.max_workers_per_key:
            raise AlreadyExistsError(
                f"key {key[:8]}... already serves {len(others)} worker(s), the most allowed "
                f"(max_workers_per_dryad_key): {', '.join(sorted(others)[:3])}")
        if uuid in self._key_of:
            self.revoke(uuid)
        self._put(uuid, key)

    def revoke(self, uuid: str) -> str:
        """Forget `uuid`'s key (NotFoundError if none); returns the key."""
        key = self._key_of.pop(uuid, None)
        if key is None:
            raise NotFoundError(f"Enrolment of {uuid!r}")
        uuids = self._uuids_of[key]
        uuids.discard(uuid)
        if not uuids:
            del self._uuids_of[key]
        return key

    def key_of(self, uuid: str) -> str | None:
        return self._key_of.get(uuid)

    def holds_key(self, key: str | None) -> bool:
        return key is not None and key in self._uuids_of

    def check_register(self, key: str | None, uuid: str) -> None:
        """NotEnrolledError unless `key` was enrolled for `uuid`."""
        enrolled = self._key_of.get(uuid)
        if enrolled is None or enrolled != key:
            mine = sorted(self._uuids_of.get(key or "", ()))
            hint = f" (this key is enrolled for {', '.join(mine[:3])})" if mine else \
                " (this key is enrolled for no worker)"
            raise NotEnrolledError(f"this dryad's key may not register worker {uuid}{hint}: "
                                   f"an admin enrols it with `boruta admin dryad enroll`")

    def items(self) -> list[tuple[str, str]]:
        """(uuid, key) pairs, by UUID."""
        return sorted(self._key_of.items())

    def _put(self, uuid: str, key: str) -> None:
        self._key_of[uuid] = key
        self._uuids_of.setdefault(key, set()).add(uuid)
