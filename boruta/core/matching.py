"""Chooses the matcher: compiled when built, plain Python otherwise.

As msgpack-python chooses `_cmsgpack` or `fallback`: BORUTA_PUREPYTHON=1
(any non-empty value but "0") forces the plain one.
"""
from __future__ import annotations

import os

from boruta.core.reference import ReferenceMatcher

PURE_FORCED = os.environ.get("BORUTA_PUREPYTHON", "") not in ("", "0")

CompiledMatcher = None
if not PURE_FORCED:
    try:
        from boruta._matcher import CompiledMatcher  # type: ignore[no-redef]
    except ImportError:  # extension not built: the twin serves
        CompiledMatcher = None

DefaultMatcher = CompiledMatcher if CompiledMatcher is not None else ReferenceMatcher


def make_matcher(kind: str | None = None):
    """`kind` is "compiled", "reference" or None for the import-time choice."""
    if kind is None:
        return DefaultMatcher()
    if kind == "reference":
        return ReferenceMatcher()
    if kind == "compiled":
        if CompiledMatcher is None:
            from boruta._matcher import CompiledMatcher as forced  # raises if absent
            return forced()
        return CompiledMatcher()
    raise ValueError(f"unknown matcher kind {kind!r}")
