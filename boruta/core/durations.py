"""Durations for people, the same wherever a message names one.

A wait measured by a clock is 0.999999 s, not 1 s; a message that says so
reads as a bug. Parsing (`+10m`, `2h`) is the CLI's; both use UNIT_SECONDS.
"""
from __future__ import annotations

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_UNITS = sorted(UNIT_SECONDS.items(), key=lambda item: -item[1])    # d, h, m, s


def format_duration(seconds: float) -> str:
    """Seconds for people: `1s` (not 0.999999s), `2.5s`, `0.25s`, `10m`, `1h30m`, `2d`.

    Under a minute: two significant decimals below 1s, one below 10s, whole
    seconds above. From a minute on: whole seconds, in d, h, m and s parts.
    """
    value = float(seconds)
    if value < 0:
        return "-" + format_duration(-value)
    digits = 2 if value < 1 else 1 if value < 10 else 0
    rounded = round(value, digits)
    if rounded < 60:
        return f"{rounded:g}s"
    left = round(value)
    parts = []
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
