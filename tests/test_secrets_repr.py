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


def test_a_state_directory_readable_by_others_is_made_private(tmp_path, caplog) -> None:
    from boruta.server.store import Store
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)                                    # whatever the umask
    store = Store(state)
    try:
        assert state.stat().st_mode & 0o777 == 0o700
        assert "made it 0700" in caplog.text
    finally:
        store.close()
