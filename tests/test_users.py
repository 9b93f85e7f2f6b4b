"""The user book and dryad enrolment: the rules the server enforces, in the core, without I/O."""
from __future__ import annotations

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85

from boruta.core.enrolment import DryadEnrolment
from boruta.core.errors import (AlreadyExistsError, BadArgumentError, NotEnrolledError,
                                NotFoundError, PriorityNotAllowedError, TooManyOpenRequestsError)
from boruta.core.users import (DEFAULT_MAX_OPEN, Role, User, UserBook, check_public_key,
                               is_public_key)


def key() -> str:
    return zmq.curve_keypair()[0].decode()


@given(st.binary(min_size=32, max_size=32))
def test_every_z85_encoded_32_bytes_is_a_public_key(raw: bytes) -> None:
    assert is_public_key(z85.encode(raw).decode())


@pytest.mark.parametrize("text", ["", "x" * 39, "x" * 41, "%%%%%" * 8, "#" * 40, "é" * 40,
                                  " " * 40, None, 7, b"x" * 40])
def test_what_is_not_a_public_key_is_named(text) -> None:
    assert not is_public_key(text)
    with pytest.raises(BadArgumentError, match="keys: .* is not a CurveZMQ public key"):
        check_public_key(text, "keys")


def test_a_user_from_its_document_checks_every_field() -> None:
    k = key()
    user = User.from_doc({"name": "alice", "keys": [k, k], "groups": ["b", "a", "a"],
                          "role": "admin", "priorities": [2, 9], "max_open": 5})
    assert user == User("alice", (k,), ("a", "b"), Role.ADMIN, (2, 9), 5)
    assert User.from_doc(user.to_doc()) == user
    assert User.from_doc({"name": "bob", "keys": [k]}).max_open == DEFAULT_MAX_OPEN
    bad = [({"name": "Alice", "keys": [k]}, "not a user name"),
           ({"name": "a\nb", "keys": [k]}, "not a user name"),
           ({"name": "bob", "keys": []}, "1 to 16 keys"),
           ({"name": "bob", "keys": "k"}, "list of public keys"),
           ({"name": "bob", "keys": [k], "role": "root"}, "use user or admin"),
           ({"name": "bob", "keys": [k], "priorities": [9, 2]}, "highest first"),
           ({"name": "bob", "keys": [k], "priorities": [0, 16]}, "not a range"),
           ({"name": "bob", "keys": [k], "priorities": [1]}, "a pair"),
           ({"name": "bob", "keys": [k], "max_open": -1}, "must not be negative"),
           ({"name": "bob", "keys": [k], "max_open": True}, "integer"),
           ({"name": "bob", "keys": [k], "shell": "/bin/sh"}, "unknown user field 'shell'"),
           ({"name": "bob"}, "needs a name and at least one key")]
    for doc, words in bad:
        with pytest.raises(BadArgumentError, match=words):
            User.from_doc(doc)


def test_limits_of_a_user() -> None:
    user = User("carol", (key(),), priorities=(4, 10), max_open=2)
    for allowed in (4, 7, 10):
        user.check_priority(allowed)
    for refused in (1, 3, 11, 16):
        with pytest.raises(PriorityNotAllowedError, match="4 .. 10"):
            user.check_priority(refused)
    user.check_open(1)
    with pytest.raises(TooManyOpenRequestsError, match="2 open requests"):
        user.check_open(2)


def test_the_book_finds_users_by_any_key_and_keeps_keys_unique() -> None:
    k1, k2, k3 = key(), key(), key()
    book = UserBook([User("alice", (k1, k2))])
    assert book.by_key(k2).name == "alice" and book.by_key(k3) is None and book.by_key(None) is None
    with pytest.raises(AlreadyExistsError, match="user 'alice' already exists"):
        book.add(User("alice", (k3,)))
    with pytest.raises(AlreadyExistsError, match="already belongs to user 'alice'"):
        book.add(User("bob", (k2,)))
    book.add(User("bob", (k3,)))
    changed = book.update("alice", {"keys": [k1], "groups": ["lab"], "role": None})
    assert changed.groups == ("lab",) and changed.role is Role.USER
    assert book.by_key(k2) is None and book.by_key(k1) is changed     # the old key is gone
    with pytest.raises(AlreadyExistsError):
        book.update("alice", {"keys": [k3]})                          # bob's
    assert book.by_key(k3).name == "bob" and book.get("alice") is changed
    book.remove("bob")
    assert book.by_key(k3) is None and [u.name for u in book.users()] == ["alice"]
    with pytest.raises(NotFoundError, match="User 'bob' not found"):
        book.remove("bob")


def test_enrolment_lets_a_key_register_only_its_workers() -> None:
    k1, k2 = key(), key()
    dryads = DryadEnrolment(max_workers_per_key=2)
    dryads.enrol("w-1", k1)
    dryads.check_register(k1, "w-1")
    for who, uuid in ((k2, "w-1"), (k1, "w-2"), (None, "w-1")):
        with pytest.raises(NotEnrolledError, match=f"may not register worker {uuid}"):
            dryads.check_register(who, uuid)
    dryads.enrol("w-2", k1)
    with pytest.raises(AlreadyExistsError, match="already serves 2 worker"):
        dryads.enrol("w-3", k1)
    dryads.enrol("w-1", k2)                          # a new key for w-1: the old one loses it
    assert dryads.key_of("w-1") == k2 and dryads.holds_key(k1)
    with pytest.raises(NotEnrolledError):
        dryads.check_register(k1, "w-1")
    assert dryads.revoke("w-2") == k1 and not dryads.holds_key(k1)
    with pytest.raises(NotFoundError):
        dryads.revoke("w-2")
    with pytest.raises(BadArgumentError, match="uuid must be"):
        dryads.enrol("", k1)
    with pytest.raises(BadArgumentError, match="not a CurveZMQ public key"):
        dryads.enrol("w-4", "k")
    assert dryads.items() == [("w-1", k2)]
