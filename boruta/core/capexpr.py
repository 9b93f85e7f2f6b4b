"""Capability expressions: what a request may ask of a worker beyond `key=value`.

    serial in 57600,115200     any of these values
    voltage 2.9..3.6           a number in this range (both ends included)
    hdmi != yes                not this value (a worker without `hdmi` passes)
    sdmux?                     the key is present, whatever its value
    !sdmux                     the key is absent

A worker offers several values for a key by listing them with commas
(`serial=57600,115200`): every expression looks at each listed value. The
exact form `key=value` keeps comparing the whole text, as it always did.

How they are matched. Each distinct term in use is a *term cap*: a cap the
scheduler gives every worker whose own caps satisfy the term (key
TERM_PREFIX + the term's canonical text, value "1"), and a request asks for
the term caps of its terms. So both matchers decide on exact caps only, with
the same bitsets, trie and differential test as before; a term is evaluated
once per worker when it comes into use or the worker's caps change, never per
match. Term caps do not count in a worker's penalty (the least-capable
worker rule looks at its real caps).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from boruta.core.errors import BadArgumentError

#: Keys of term caps start with this; no real cap key may (check_caps refuses it).
TERM_PREFIX = "\x00"
TERM_VALUE = "1"

_KEY = r"[^\s=!?]+"
_FORMS = [
    ("absent", re.compile(rf"^!\s*(?P<key>{_KEY})$")),
    ("present", re.compile(rf"^(?P<key>{_KEY})\s*\?$")),
    ("not", re.compile(rf"^(?P<key>{_KEY})\s*!=\s*(?P<value>\S.*)$")),
    ("anyof", re.compile(rf"^(?P<key>{_KEY})\s+in\s+(?P<value>\S.*)$")),
    ("range", re.compile(rf"^(?P<key>{_KEY})\s+(?P<low>\S*?)\.\.(?P<high>\S*)$")),
]


def worker_values(caps: Mapping[str, str], key: str) -> tuple[str, ...]:
    """The values a worker offers for `key`: its value's comma-separated items."""
    value = caps.get(key)
    if value is None:
        return ()
    return tuple(item.strip() for item in value.split(","))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Term:
    """One expression term. `kind`: anyof, range, not, present or absent."""

    kind: str
    key: str
    values: tuple[str, ...] = ()         # anyof: the values; not: the one value
    low: float | None = None             # range: the ends (None: open)
    high: float | None = None

    @property
    def text(self) -> str:
        """The canonical form, as people write it (and as its term cap is named)."""
        if self.kind == "anyof":
            return f"{self.key} in {','.join(self.values)}"
        if self.kind == "range":
            return f"{self.key} {_num(self.low)}..{_num(self.high)}"
        if self.kind == "not":
            return f"{self.key} != {self.values[0]}"
        if self.kind == "present":
            return f"{self.key}?"
        return f"!{self.key}"

    @property
    def cap_key(self) -> str:
        return TERM_PREFIX + self.text

    def holds(self, caps: Mapping[str, str]) -> bool:
        """Does a worker with these caps satisfy the term?"""
        if self.kind == "present":
            return self.key in caps
        if self.kind == "absent":
            return self.key not in caps
        offered = worker_values(caps, self.key)
        if self.kind == "anyof":
            return any(value in self.values for value in offered)
        if self.kind == "not":
            return self.values[0] not in offered
        for value in offered:
            number = _number(value)
            if number is not None and (self.low is None or number >= self.low) \
                    and (self.high is None or number <= self.high):
                return True
        return False


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def parse_term(text: Any, limits: Any = None) -> Term:
    """One term from its text; BadArgumentError naming what is wrong."""
    if not isinstance(text, str):
        raise BadArgumentError(f"a capability expression must be a string, not "
                               f"{type(text).__name__}")
    stripped = text.strip()
    for kind, pattern in _FORMS:
        found = pattern.match(stripped)
        if found is None:
            continue
        key = found.group("key")
        term = _build(kind, key, found, text)
        _check_sizes(term, text, limits)
        return term
    raise BadArgumentError(
        f"capability expression {text!r} is not one of: KEY=VALUE, KEY in V1,V2, "
        "KEY LOW..HIGH, KEY != VALUE, KEY?, !KEY")


def _build(kind: str, key: str, found: re.Match[str], text: str) -> Term:
    if kind in ("present", "absent"):
        return Term(kind, key)
    if kind == "not":
        return Term(kind, key, (found.group("value").strip(),))
    if kind == "anyof":
        values = tuple(sorted({v.strip() for v in found.group("value").split(",")}))
        if not all(values):
            raise BadArgumentError(f"capability expression {text!r}: an empty value in the list")
        return Term(kind, key, values)
    low_text, high_text = found.group("low"), found.group("high")
    low = _number(low_text) if low_text else None
    high = _number(high_text) if high_text else None
    if (low_text and low is None) or (high_text and high is None):
        raise BadArgumentError(f"capability expression {text!r}: the range's ends must be "
                               "finite numbers")
    if low is None and high is None:
        raise BadArgumentError(f"capability expression {text!r}: a range needs at least one end")
    if low is not None and high is not None and low > high:
        raise BadArgumentError(f"capability expression {text!r}: the range is empty "
                               f"({_num(low)} > {_num(high)})")
    return Term(kind, key, (), low, high)


def _check_sizes(term: Term, text: str, limits: Any) -> None:
    if limits is None:
        return
    if len(term.key) > limits.max_cap_key_length:
        raise BadArgumentError(f"capability expression {text[:80]!r}: its key is longer than "
                               f"{limits.max_cap_key_length} characters")
    if len(term.text) > limits.max_cap_value_length + limits.max_cap_key_length + 8:
        raise BadArgumentError(f"capability expression {text[:80]!r} is longer than "
                               f"{limits.max_cap_value_length + limits.max_cap_key_length} "
                               "characters")


def parse_terms(texts: Any, limits: Any = None) -> tuple[Term, ...]:
    """A request's terms: distinct, in canonical order."""
    if texts is None:
        return ()
    if not isinstance(texts, (list, tuple)):
        raise BadArgumentError("expressions must be a list of strings")
    terms = {term.text: term for term in (parse_term(t, limits) for t in texts)}
    return tuple(terms[text] for text in sorted(terms))


def term_caps(terms: Iterable[Term]) -> dict[str, str]:
    """The term caps a request asks for."""
    return {term.cap_key: TERM_VALUE for term in terms}


def is_term_key(key: Any) -> bool:
    return isinstance(key, str) and key.startswith(TERM_PREFIX)


def real_caps_count(caps: Mapping[Any, Any]) -> int:
    """A worker's caps without its term caps: what its penalty counts."""
    return sum(1 for key in caps if not is_term_key(key))


class TermBook:
    """The terms in use, by canonical text, with how many open requests use each.

    A term comes into use with its first request and goes with its last, so a
    term nobody asks for any more costs the workers nothing. At most
    `max_terms` are in use at once: each costs a pass over the workers when it
    comes, and a bit on every worker that satisfies it.
    """

    def __init__(self, max_terms: int) -> None:
        self.max_terms = max_terms
        self._terms: dict[str, Term] = {}
        self._uses: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._terms)

    def terms(self) -> Iterable[Term]:
        return self._terms.values()

    def new_terms(self, terms: Iterable[Term]) -> list[Term]:
        """Which of these are not in use yet (refused if they would exceed the bound)."""
        fresh = [t for t in terms if t.text not in self._terms]
        if fresh and len(self._terms) + len(fresh) > self.max_terms:
            raise BadArgumentError(
                f"{len(self._terms)} distinct capability expressions are in use, the most the "
                f"server allows ({self.max_terms}); use one of them, or wait")
        return fresh

    def use(self, terms: Iterable[Term]) -> list[Term]:
        """Count a request's terms in; returns those that came into use."""
        fresh = []
        for term in terms:
            uses = self._uses.get(term.text, 0)
            if uses == 0:
                self._terms[term.text] = term
                fresh.append(term)
            self._uses[term.text] = uses + 1
        return fresh

    def release(self, terms: Iterable[Term]) -> list[Term]:
        """Count a request's terms out; returns those nobody uses any more."""
        gone = []
        for term in terms:
            uses = self._uses.get(term.text, 0) - 1
            if uses > 0:
                self._uses[term.text] = uses
            else:
                self._uses.pop(term.text, None)
                self._terms.pop(term.text, None)
                gone.append(term)
        return gone

    def caps_for(self, caps: Mapping[str, str]) -> dict[str, str]:
        """A worker's caps as the matcher sees them: its own, and the term caps it earns."""
        out = dict(caps)
        for term in self._terms.values():
            if term.holds(caps):
                out[term.cap_key] = TERM_VALUE
        return out
