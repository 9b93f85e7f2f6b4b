"""Capability expressions: their syntax, their meaning, and the book of terms in use."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boruta.core.capexpr import (TERM_PREFIX, TermBook, parse_term, parse_terms, real_caps_count,
                                 worker_values)
from boruta.core.config import SchedulerConfig
from boruta.core.errors import BadArgumentError

BOARD = {"serial": "57600, 9600", "voltage": "3.3", "hdmi": "no", "device_type": "rpi4"}


@pytest.mark.parametrize("text, kind, canonical, holds", [
    ("serial in 57600,115200", "anyof", "serial in 115200,57600", True),
    ("serial in 115200", "anyof", "serial in 115200", False),
    ("voltage 2.9..3.6", "range", "voltage 2.9..3.6", True),
    ("voltage 3.4..3.6", "range", "voltage 3.4..3.6", False),
    ("voltage ..3.3", "range", "voltage ..3.3", True),        # both ends included
    ("voltage 3.3..", "range", "voltage 3.3..", True),
    ("serial 0..10000", "range", "serial 0..10000", True),    # any listed value in range
    ("hdmi != yes", "not", "hdmi != yes", True),
    ("hdmi != no", "not", "hdmi != no", False),
    ("usb != yes", "not", "usb != yes", True),                # absent: not yes
    ("hdmi?", "present", "hdmi?", True),
    ("sdmux?", "present", "sdmux?", False),
    ("!sdmux", "absent", "!sdmux", True),
    ("! hdmi", "absent", "!hdmi", False),
    ("device_type in odroid , rpi4", "anyof", "device_type in odroid,rpi4", True),
])
def test_each_form_parses_to_its_canonical_text_and_meaning(text, kind, canonical, holds):
    term = parse_term(text)
    assert (term.kind, term.text, term.holds(BOARD)) == (kind, canonical, holds)
    assert parse_term(term.text) == term                      # the canonical text reads back
    assert term.cap_key == TERM_PREFIX + canonical


@pytest.mark.parametrize("text, message", [
    ("a=b", "is not one of"), ("x in", "is not one of"), ("x in a,,b", "an empty value"),
    ("v 3..1", "the range is empty"), ("v a..b", "finite numbers"), ("v ..", "at least one end"),
    ("v nan..1", "finite numbers"), ("!", "is not one of"), ("?", "is not one of"), ("", "is not"),
    (7, "must be a string"),
])
def test_a_bad_expression_is_refused_naming_the_problem(text, message):
    with pytest.raises(BadArgumentError, match=message):
        parse_term(text)


def test_sizes_are_bounded_like_caps():
    limits = SchedulerConfig()
    with pytest.raises(BadArgumentError, match="key is longer"):
        parse_term("k" * 65 + "?", limits)
    with pytest.raises(BadArgumentError, match="is longer than"):
        parse_term("k in " + ",".join(str(n) for n in range(200)), limits)
    with pytest.raises(BadArgumentError, match="must be a list"):
        parse_terms("sdmux?")


def test_a_request_s_terms_are_distinct_and_ordered():
    terms = parse_terms(["!b", "a?", "a?", "x in 2,1", "x in 1,2"])
    assert [t.text for t in terms] == ["!b", "a?", "x in 1,2"]


def test_worker_values_split_on_commas_and_exact_caps_do_not():
    assert worker_values(BOARD, "serial") == ("57600", "9600")
    assert worker_values(BOARD, "nothing") == ()
    assert real_caps_count({"a": "1", TERM_PREFIX + "a?": "1", "UUID": "u"}) == 2


@given(values=st.lists(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), min_size=1, max_size=4),
       offered=st.lists(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), max_size=4))
def test_any_of_holds_exactly_when_the_lists_meet(values, offered):
    term = parse_term("k in " + ",".join(values))
    caps = {"k": ",".join(offered)} if offered else {}
    assert term.holds(caps) == bool(set(values) & set(offered))
    assert parse_term(term.text) == term


@given(low=st.floats(-1e6, 1e6), high=st.floats(-1e6, 1e6), value=st.floats(-2e6, 2e6))
def test_a_range_holds_for_the_numbers_inside_it(low, high, value):
    low, high = min(low, high), max(low, high)
    term = parse_term(f"v {low!r}..{high!r}")
    assert term.holds({"v": repr(value)}) == (low <= value <= high)
    assert parse_term(term.text) == term


def test_the_term_book_counts_uses_and_bounds_the_terms_in_use():
    book = TermBook(max_terms=2)
    a, b, c = parse_term("a?"), parse_term("!b"), parse_term("c in 1")
    assert book.use([a, b]) == [a, b]
    assert book.use([a]) == []                               # in use already
    assert book.caps_for({"a": "x"}) == {"a": "x", a.cap_key: "1", b.cap_key: "1"}
    with pytest.raises(BadArgumentError, match="2 distinct capability expressions are in use"):
        book.new_terms([c])
    assert book.new_terms([a, b]) == []                      # those in use are always fine
    assert book.release([a]) == []
    assert book.release([a, b]) == [a, b]                    # the last uses: gone
    assert len(book) == 0 and book.new_terms([c]) == [c]
