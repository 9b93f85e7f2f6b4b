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
from boruta.core.users import (DEFAULT_MAX_OPEN, MAX_TOKENS_PER_USER, Role, User, UserBook,
                               check_public_key, is_public_key, token_hash)


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


def hashes(n: int) -> list[str]:
    return [token_hash(f"token-{i}") for i in range(n)]


def test_token_hash_is_sha256_hex_of_the_tokens_text() -> None:
    assert token_hash("abc") == ("ba7816bf8f01cfea414140de5dae2223"
                                 "b00361a396177a9cb410ff61f20015ad")


def test_a_users_tokens_are_checked_hashes_and_absent_from_a_document_without_them() -> None:
    k, (h1, h2) = key(), hashes(2)
    user = User.from_doc({"name": "alice", "keys": [k], "tokens": [h1, h2, h1]})
    assert user.tokens == (h1, h2)                                    # duplicates dropped
    assert User.from_doc(user.to_doc()) == user and user.to_doc()["tokens"] == [h1, h2]
    old = {"name": "bob", "keys": [k], "groups": [], "role": "user", "priorities": [1, 16],
           "max_open": 1000}                            # a row written before tokens existed
    assert User.from_doc(old).tokens == () and User.from_doc(old).to_doc() == old
    assert User.from_doc({**old, "tokens": []}).to_doc() == old
    bad = [("x" * 64, "not a token's SHA-256"), (h1.upper(), "not a token's SHA-256"),
           (h1[:63], "not a token's SHA-256"), (7, "not a token's SHA-256")]
    for token, words in bad:
        with pytest.raises(BadArgumentError, match=f"tokens: .*{words}"):
            User.from_doc({**old, "tokens": [token]})
    with pytest.raises(BadArgumentError, match="tokens must be a list"):
        User.from_doc({**old, "tokens": h1})
    User.from_doc({**old, "tokens": hashes(MAX_TOKENS_PER_USER)})
    with pytest.raises(BadArgumentError, match=f"at most {MAX_TOKENS_PER_USER} tokens, not 17"):
        User.from_doc({**old, "tokens": hashes(MAX_TOKENS_PER_USER + 1)})


def test_the_book_finds_users_by_token_in_step_with_every_change() -> None:
    k1, k2 = key(), key()
    h1, h2, h3 = hashes(3)
    book = UserBook([User("alice", (k1,), tokens=(h1,))])
    assert book.by_token(h1).name == "alice" and book.by_token(h2) is None
    with pytest.raises(AlreadyExistsError, match="token .* already belongs to user 'alice'"):
        book.add(User("bob", (k2,), tokens=(h1,)))                   # tokens name one user
    assert book.by_token(h1).name == "alice"                         # the refusal changed nothing
    book.add(User("bob", (k2,)))
    bob = book.with_token("bob", h2)
    assert bob.tokens == (h2,) and book.by_token(h2) is bob is book.get("bob")
    assert book.with_token("bob", h3).tokens == (h2, h3)
    with pytest.raises(AlreadyExistsError, match="already belongs to user 'alice'"):
        book.with_token("bob", h1)
    with pytest.raises(AlreadyExistsError, match="user 'bob' already holds token"):
        book.with_token("bob", h2)
    changed = book.update("bob", {"groups": ["lab"]})                 # other changes keep them
    assert changed.tokens == (h2, h3) and book.by_token(h3) is changed
    assert book.with_token("bob", h2, revoke=True).tokens == (h3,)
    assert book.by_token(h2) is None
    with pytest.raises(NotFoundError, match="Token .* of user 'bob' not found"):
        book.with_token("bob", h2, revoke=True)
    with pytest.raises(NotFoundError, match="Token .* of user 'alice' not found"):
        book.with_token("alice", h3, revoke=True)                    # bob's, not alice's
    with pytest.raises(BadArgumentError, match="token_hash: .* not a token's SHA-256"):
        book.with_token("bob", "secret")                             # a token, not its hash
    with pytest.raises(NotFoundError, match="User 'carol' not found"):
        book.with_token("carol", h2)
    for token in hashes(MAX_TOKENS_PER_USER + 3)[3:MAX_TOKENS_PER_USER + 2]:
        book.with_token("bob", token)
    with pytest.raises(BadArgumentError, match="at most 16 tokens"):
        book.with_token("bob", token_hash("one too many"))
    assert book.by_token(token_hash("one too many")) is None
    book.remove("bob")
    assert book.by_token(h3) is None and book.by_token(h1).name == "alice"


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
