"""Sorting and pagination of lists, as upstream's ListRequests and ListWorkers.

A page starts after (or, backward, ends before) a border element named by
the paginator; the border need not match the filter, and never appears on
the page itself.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from boruta.core.errors import BadArgumentError, WrongSortItemError
from boruta.core.types import MAX_PAGE_LIMIT, ListInfo, Paginator, SortInfo

T = TypeVar("T")

REQUEST_SORT_KEYS: dict[str, Callable[[Any], Any]] = {
    "": lambda r: r.id,
    "id": lambda r: r.id,
    "priority": lambda r: (r.priority, r.id),
    "deadline": lambda r: (r.deadline, r.id),
    "validafter": lambda r: (r.valid_after, r.id),
    "state": lambda r: (str(r.state), r.id),
}

WORKER_SORT_KEYS: dict[str, Callable[[Any], Any]] = {
    "": lambda w: w.worker_uuid,
    "uuid": lambda w: w.worker_uuid,
    "state": lambda w: (str(w.state), w.worker_uuid),
    "groups": lambda w: (tuple(w.groups), w.worker_uuid),
}


def sort_key(sorter: SortInfo | None, table: dict[str, Callable[[Any], Any]]) -> tuple[Callable[[Any], Any], bool]:
    if sorter is None:
        return table[""], False
    if not isinstance(sorter, SortInfo) or not isinstance(sorter.item, str):
        raise BadArgumentError("sorter must be a SortInfo")
    key = table.get(sorter.item.lower())
    if key is None:
        valid = ", ".join(name for name in table if name)
        raise WrongSortItemError(f"unknown sort item {sorter.item!r}: use one of {valid}")
    return key, bool(sorter.descending)


def page_limit(paginator: Paginator | None) -> int:
    limit = 0 if paginator is None else paginator.limit
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_PAGE_LIMIT:
        raise BadArgumentError(f"page limit must be an integer from 0 to {MAX_PAGE_LIMIT}")
    return limit or MAX_PAGE_LIMIT


def paginate(items: Sequence[T], border: T | None, border_matches: bool, filtered: bool,
             key: Callable[[T], Any], descending: bool, backward: bool,
             limit: int) -> tuple[list[T], ListInfo]:
    """Upstream's algorithm: the border element joins the candidates, never the page."""
    candidates = list(items)
    if border is not None and not border_matches:
        candidates.append(border)
    if not candidates:
        return [], ListInfo(0, 0)
    candidates.sort(key=key, reverse=descending)
    length = len(candidates)
    idx = candidates.index(border) if border is not None else 0
    if not backward:
        start = idx + 1 if border is not None else 0
        count = min(limit, length - start)
        remaining = length - start - count
        page = candidates[start:start + count]
    else:
        end = idx if border is not None else length
        count = min(limit, end)
        remaining = end - count
        page = candidates[end - count:end]
    total = length - (1 if filtered and border is not None and not border_matches else 0)
    return page, ListInfo(total, remaining)

