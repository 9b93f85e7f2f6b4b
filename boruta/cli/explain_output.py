"""`boruta request explain ID` for people: why a request waits, in a few lines.

Reads the `explain_request` document (boruta.core.explain.to_doc); every field
it uses may be missing (an older server) and then the line is left out.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from boruta.core.durations import format_duration

STATE_ORDER = ("IDLE", "RUNNING", "PREPARE", "BUSY", "MAINTENANCE", "FAILED")


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def start_phrase(doc: Mapping[str, Any], now: datetime | None = None) -> str | None:
    """`expected to start in about 5m (08:06:40Z)`, with a warning when the deadline is
    unlikely to be met; None when the document has no estimate."""
    start = _parse(doc.get("expected_start"))
    if start is None:
        return None
    now = now or datetime.now(timezone.utc)
    wait = (start - now).total_seconds()
    when = start.strftime("%Y-%m-%d %H:%M:%SZ")
    phrase = (f"expected to start in about {format_duration(wait)} ({when})" if wait > 1
              else f"expected to start now ({when})")
    if doc.get("late"):
        phrase += f"; WARNING: its deadline ({doc.get('deadline')}) is unlikely to be met"
    return phrase


def _states(counts: Mapping[str, int]) -> str:
    known = [s for s in STATE_ORDER if counts.get(s)]
    known += sorted(s for s in counts if s not in STATE_ORDER and counts[s])
    return ", ".join(f"{counts[s]} {s}" for s in known) or "none"


def format_explanation(doc: Mapping[str, Any], now: datetime | None = None) -> str:
    """The explanation as lines of text (no trailing newline)."""
    req_id, state = doc.get("id", "?"), doc.get("state", "?")
    lines = [f"Request {req_id}: {state}, priority {doc.get('priority', '?')}."]
    if state != "WAITING":
        return lines[0]
    held = doc.get("held_by_text")
    if held:
        lines.append(f"Held because {held}.")
    count = doc.get("candidates", 0)
    lines.append(f"Candidate workers: {count}"
                 + (f" ({_states(doc.get('candidate_states') or {})})." if count else "."))
    ahead = doc.get("ahead")
    if ahead is not None:
        lines.append(f"Ahead of it on those workers: {ahead} ready request"
                     f"{'' if ahead == 1 else 's'}.")
    if doc.get("held_by") == "valid_after" and doc.get("valid_after"):
        lines.append(f"Ready from {doc['valid_after']} (its ValidAfter).")
    misses = doc.get("misses") or []
    if misses:
        lines.append("Nearest misses (workers that fail on this one term only):")
        for miss in misses:
            examples = ", ".join(miss.get("examples") or [])
            more = miss.get("workers", 0) - len(miss.get("examples") or [])
            lines.append(f"  {miss.get('term')}: {miss.get('workers')} worker"
                         f"{'' if miss.get('workers') == 1 else 's'}"
                         + (f" (e.g. {examples}{', ...' if more > 0 else ''})" if examples else ""))
    phrase = start_phrase(doc, now)
    if phrase:
        lines.append(f"Estimate: {phrase}; {doc.get('estimate_basis')}.")
    elif doc.get("estimate_basis"):
        lines.append(f"Estimate: none ({doc['estimate_basis']}).")
    return "\n".join(lines)
