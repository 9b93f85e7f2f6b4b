"""Users: who may call the farm, with which keys, and within which limits.

A user is known by the CurveZMQ public keys their clients connect with (the
server reads the key of each call from the connection, so a call cannot
claim to be someone else), and over HTTP by tokens: the book keeps only each
token's SHA-256 (a token is 32 random bytes, so a hash without salt cannot
be turned back into it), and a request's token costs one dictionary look-up
by its hash. A user's record carries what the server enforces
for them: their role (an admin manages the farm), the groups their requests
carry (which restrict the workers they may get), the range of priorities
they may ask for, and how many open requests they may hold at once.

Pure data and rules, no I/O: the server keeps the book in its store.
"""
from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from boruta.core.errors import (AlreadyExistsError, BadArgumentError, NotFoundError,
                                PriorityNotAllowedError, TooManyOpenRequestsError)
from boruta.core.names import USER_NAME_RULE, is_user_name
from boruta.core.types import UserInfo
from boruta.core.validation import check_groups, check_int

HIGHEST_PRIORITY, LOWEST_PRIORITY = 1, 16
ALL_PRIORITIES = (HIGHEST_PRIORITY, LOWEST_PRIORITY)
DEFAULT_MAX_OPEN = 1000            # open (waiting or running) requests a new user may hold
MAX_KEYS_PER_USER = 16
MAX_TOKENS_PER_USER = 16
TOKEN_HASH_LENGTH = 64             # SHA-256 in lower-case hex
_HEX = frozenset("0123456789abcdef")
UNLIMITED_OPEN = 1 << 31           # the bootstrap admin's cap: none to speak of
Z85_ALPHABET = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                ".-:+=^!/*?&<>()[]{}@%$#")
_Z85_VALUE = {c: i for i, c in enumerate(Z85_ALPHABET)}
PUBLIC_KEY_LENGTH = 40             # a 32-byte CurveZMQ key in Z85


class Role(str, enum.Enum):
    USER = "user"
    ADMIN = "admin"

    def __str__(self) -> str:
        return self.value


def is_public_key(text: object) -> bool:
    """Whether `text` is a CurveZMQ public key in Z85 (40 characters, each 5 a 32-bit word)."""
    if not isinstance(text, str) or len(text) != PUBLIC_KEY_LENGTH:
        return False
    for start in range(0, PUBLIC_KEY_LENGTH, 5):
        value = 0
        for char in text[start:start + 5]:
            digit = _Z85_VALUE.get(char)
            if digit is None:
                return False
            value = value * 85 + digit
        if value > 0xFFFFFFFF:
            return False
    return True


def check_public_key(text: Any, what: str = "key") -> str:
    """`text` if it is a public key (is_public_key), else BadArgumentError naming `what`."""
    if not is_public_key(text):
        shown = repr(text)[:60] if isinstance(text, str) else type(text).__name__
        raise BadArgumentError(
            f"{what}: {shown} is not a CurveZMQ public key (40 characters of Z85)")
    return text


def check_user_name(name: Any, what: str = "name") -> str:
    if not is_user_name(name):
        shown = repr(name)[:60] if isinstance(name, str) else type(name).__name__
        raise BadArgumentError(f"{what}: {shown} is not a user name ({USER_NAME_RULE})")
    return name


def check_priorities(value: Any) -> tuple[int, int]:
    """[highest, lowest] a user may ask for: 1 <= highest <= lowest <= 16."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise BadArgumentError("priorities must be a pair [highest, lowest], e.g. [4, 16]")
    high, low = (check_int(v, "priorities") for v in value)
    if not HIGHEST_PRIORITY <= high <= low <= LOWEST_PRIORITY:
        raise BadArgumentError(f"priorities: [{high}, {low}] is not a range within "
                               f"[{HIGHEST_PRIORITY}, {LOWEST_PRIORITY}] (highest first)")
    return high, low


def check_max_open(value: Any) -> int:
    """How many open requests a user may hold (0 and more)."""
    value = check_int(value, "max_open")
    if value < 0:
        raise BadArgumentError(f"max_open must not be negative: {value}")
    return value


def check_keys(keys: Any) -> tuple[str, ...]:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, (list, tuple)):
        raise BadArgumentError("keys must be a list of public keys")
    if not 1 <= len(keys) <= MAX_KEYS_PER_USER:
        raise BadArgumentError(f"a user holds 1 to {MAX_KEYS_PER_USER} keys, not {len(keys)}")
    return tuple(dict.fromkeys(check_public_key(k, "keys") for k in keys))


def token_hash(token: str) -> str:
    """What the book keeps of an HTTP token: its SHA-256, lower-case hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_token_hash(text: object) -> bool:
    return (isinstance(text, str) and len(text) == TOKEN_HASH_LENGTH
            and _HEX.issuperset(text))


def check_token_hash(text: Any, what: str = "token_hash") -> str:
    """`text` if it is a token's hash (64 lower-case hex characters), else BadArgumentError."""
    if not is_token_hash(text):
        shown = repr(text)[:20] if isinstance(text, str) else type(text).__name__
        raise BadArgumentError(f"{what}: {shown} is not a token's SHA-256 (64 lower-case "
                               "hex characters)")
    return text


def check_tokens(tokens: Any) -> tuple[str, ...]:
    """A user's token hashes (none to MAX_TOKENS_PER_USER)."""
    if tokens is None:
        return ()
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (list, tuple)):
        raise BadArgumentError("tokens must be a list of token hashes")
    hashes = tuple(dict.fromkeys(check_token_hash(t, "tokens") for t in tokens))
    if len(hashes) > MAX_TOKENS_PER_USER:
        raise BadArgumentError(f"a user holds at most {MAX_TOKENS_PER_USER} tokens, "
                               f"not {len(hashes)} (revoke some first)")
    return hashes


def check_role(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise BadArgumentError(f"role: {str(value)[:40]!r} (use user or admin)") from None


@dataclass(frozen=True)
class User:
    name: str
    keys: tuple[str, ...]
    groups: tuple[str, ...] = ()
    role: Role = Role.USER
    priorities: tuple[int, int] = ALL_PRIORITIES
    max_open: int = DEFAULT_MAX_OPEN
    tokens: tuple[str, ...] = ()       # the SHA-256 of each HTTP token (never the token)
    # What a request of theirs carries as its owner, made once (every NewRequest needs it).
    owner: UserInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "owner", UserInfo(self.groups, self.name))

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    def check_priority(self, priority: int) -> None:
        """PriorityNotAllowedError unless this user may ask for `priority`."""
        high, low = self.priorities
        if not high <= priority <= low:
            raise PriorityNotAllowedError(
                f"priority {priority} is outside the range user {self.name!r} may use "
                f"({high} .. {low}; 1 is the highest)")

    def check_open(self, open_now: int) -> None:
        """TooManyOpenRequestsError when this user already holds `max_open` open requests."""
        if open_now >= self.max_open:
            raise TooManyOpenRequestsError(
                f"user {self.name!r} has {open_now} open requests, the most allowed "
                f"(close some, or ask an admin to raise max_open)")

    def to_doc(self) -> dict[str, Any]:
        """The user's document; "tokens" only when they hold some, so that a user
        without tokens reads as it did before tokens existed."""
        doc = {"name": self.name, "keys": list(self.keys), "groups": list(self.groups),
               "role": self.role.value, "priorities": list(self.priorities),
               "max_open": self.max_open}
        if self.tokens:
            doc["tokens"] = list(self.tokens)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "User":
        """A user from its document, every field checked (BadArgumentError names the bad one)."""
        if not isinstance(doc, Mapping):
            raise BadArgumentError("a user is a map")
        unknown = set(doc) - set(USER_FIELDS)
        if unknown:
            raise BadArgumentError(f"unknown user field {sorted(unknown)[0]!r}")
        if "name" not in doc or "keys" not in doc:
            raise BadArgumentError("a user needs a name and at least one key")
        return cls(check_user_name(doc["name"]), check_keys(doc["keys"]),
                   check_groups(doc.get("groups"), "groups"),
                   check_role(doc.get("role", Role.USER.value)),
                   check_priorities(doc.get("priorities", ALL_PRIORITIES)),
                   check_max_open(doc.get("max_open", DEFAULT_MAX_OPEN)),
                   check_tokens(doc.get("tokens")))


USER_FIELDS = ("name", "keys", "groups", "role", "priorities", "max_open", "tokens")


class UserBook:
    """Every user, found by name, by any of their keys or by any of their tokens' hashes."""

    def __init__(self, users: Iterable[User] = ()) -> None:
        self._users: dict[str, User] = {}
        self._by_key: dict[str, User] = {}
        self._by_token: dict[str, User] = {}
        for user in users:
            self.add(user)

    def __len__(self) -> int:
        return len(self._users)

    def by_key(self, key: str | None) -> User | None:
        """The user holding `key` (the call's connection's key), or None."""
        return self._by_key.get(key) if key is not None else None

    def by_token(self, hashed: str) -> User | None:
        """The user holding the token whose SHA-256 is `hashed` (token_hash), or None."""
        return self._by_token.get(hashed)

    def get(self, name: str) -> User:
        user = self._users.get(name)
        if user is None:
            raise NotFoundError(f"User {name!r}")
        return user

    def users(self) -> list[User]:
        return [self._users[name] for name in sorted(self._users)]

    def add(self, user: User) -> User:
        if user.name in self._users:
            raise AlreadyExistsError(f"user {user.name!r} already exists")
        self._check_free(user)
        self._put(user)
        return user

    def update(self, name: str, changes: Mapping[str, Any]) -> User:
        """The user with `changes` (document fields; a None value leaves a field as it is)."""
        old = self.get(name)
        doc = old.to_doc()
        doc.update({k: v for k, v in changes.items() if v is not None})
        new = User.from_doc(doc)
        self._check_free(new, except_name=name)
        self._remove(old)
        self._put(new)
        return new

    def with_token(self, name: str, hashed: str, *, revoke: bool = False) -> User:
        """The user given one more token (by its hash), or one fewer with `revoke`."""
        check_token_hash(hashed)
        tokens = self.get(name).tokens
        if revoke:
            if hashed not in tokens:
                raise NotFoundError(f"Token {hashed[:8]}... of user {name!r}")
            return self.update(name, {"tokens": [t for t in tokens if t != hashed]})
        if hashed in tokens:
            raise AlreadyExistsError(f"user {name!r} already holds token {hashed[:8]}...")
        return self.update(name, {"tokens": [*tokens, hashed]})

    def remove(self, name: str) -> User:
        user = self.get(name)
        self._remove(user)
        return user

    def holds_key(self, key: str) -> bool:
        return key in self._by_key

    def _check_free(self, user: User, except_name: str | None = None) -> None:
        """Keys and tokens each name one user: refuse any that another user holds."""
        for what, held, index in (("key", user.keys, self._by_key),
                                  ("token", user.tokens, self._by_token)):
            for item in held:
                holder = index.get(item)
                if holder is not None and holder.name != except_name:
                    raise AlreadyExistsError(
                        f"{what} {item[:8]}... already belongs to user {holder.name!r}")

    def _put(self, user: User) -> None:
        self._users[user.name] = user
        for key in user.keys:
            self._by_key[key] = user
        for hashed in user.tokens:
            self._by_token[hashed] = user

    def _remove(self, user: User) -> None:
        del self._users[user.name]
        for key in user.keys:
            self._by_key.pop(key, None)
        for hashed in user.tokens:
            self._by_token.pop(hashed, None)

