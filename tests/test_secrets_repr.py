"""A private key never shows in the repr of what carries it (a repr ends up in logs)."""
from __future__ import annotations

from boruta.core.types import AccessInfo
from boruta.transport import documents

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def test_access_info_repr_holds_no_key() -> None:
    access = documents.access_in({"host": "farm", "port": 20001, "username": "boruta-user",
                                  "key": KEY, "key_type": "ssh-ed25519", "worker_uuid": "w-1"})
    assert access.key == KEY                                  # still carried
    for text in (repr(access), str(access), f"{access}", repr([access])):
        assert "PRIVATE KEY" not in text and "b3BlbnNzaC1rZXkt" not in text
        assert "boruta-user" in text and "20001" in text      # the rest still shows


def test_access_info_equality_still_sees_the_key() -> None:
    a = AccessInfo("u", KEY, "w")
    assert a == AccessInfo("u", KEY, "w") and a != AccessInfo("u", KEY + "x", "w")
