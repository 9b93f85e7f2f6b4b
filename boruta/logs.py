"""Structured logs: one line per event, as text (people) or JSON (machines).

Callers attach fields with `extra={"fields": {...}}`; both formats show them
(text as `key=value`, JSON as members of the line's object).

A record may also carry `runs`: many lines logged at once, in runs of
lines that differ only in their time and a few fields (`Run`). The audit
log writes a turn's calls that way, because one logging call per line
costs more than the call it describes: what a run shares is encoded once,
and each line is still its own line, formatted like any other (its own
fields, then the shared ones).
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

LOGGER_NAME = "boruta"
AUDIT_LOGGER_NAME = "boruta.audit"      # the audit log (boruta.server.audit): route it by name

#: Lines that differ only in their time and a few fields: (message, the fields they share
#: as (key, value) pairs, the names of the fields that vary, rows of (time.time(), *values)).
Run = tuple[str, tuple[tuple[str, Any], ...], tuple[str, ...], list[tuple[Any, ...]]]

_last: tuple[int, str] = (-1, "")


def _iso(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the last one is kept (a turn's lines share it)."""
    global _last
    ms = int(created * 1000)
    last = _last
    if ms == last[0]:
        return last[1]
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
    text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _last = (ms, text)
    return text


def _ts(record: logging.LogRecord) -> str:
    return _iso(record.created)


_MEMO_MAX = 4096          # encoded short strings kept (field names, ops, peers, codes)
_MEMO_CHARS = 64
_json_memo: dict[Any, str] = {}
_text_memo: dict[Any, str] = {}


def _remember(memo: dict[Any, str], value: Any, encoded: str) -> str:
    if type(value) is str and len(value) <= _MEMO_CHARS and len(memo) < _MEMO_MAX:
        memo[value] = encoded
    return encoded


def _text_value(value: Any) -> str:
    """A value as one word: quoted (JSON string) when it is empty, has spaces, quotes,
    `=` or anything unprintable (a line feed from a peer never starts a new line)."""
    if type(value) is int:
        return str(value)
    known = _text_memo.get(value) if type(value) is str else None
    if known is not None:
        return known
    text = str(value)
    if not text or not text.isprintable() or any(c in text for c in ' "='):
        return _remember(_text_memo, value, json.dumps(text))
    return _remember(_text_memo, value, text)


def _json_value(value: Any) -> str:
    if type(value) is int:
        return str(value)
    known = _json_memo.get(value) if type(value) is str else None
    if known is not None:
        return known
    return _remember(_json_memo, value, json.dumps(value, default=str, ensure_ascii=False))


def text_fields(fields: Mapping[str, Any]) -> str:
    """`key=value key=value` (None values left out)."""
    return " ".join([f"{key}={_text_value(value)}" for key, value in fields.items()
                     if value is not None])


def json_members(fields: Mapping[str, Any]) -> str:
    """`"key":value,"key":value` (None values left out)."""
    return ",".join([f"{_json_value(key)}:{_json_value(value)}" for key, value in fields.items()
                     if value is not None])


def _runs(record: logging.LogRecord) -> list[Run] | None:
    return getattr(record, "runs", None)


def _pct(text: str) -> str:
    """Text put into a %-template as it is."""
    return text.replace("%", "%%")


TEMPLATES_MAX = 4096       # run templates kept per formatter (one per distinct run key)


def _run_lines(runs: list[Run], value: Callable[[Any], str], start: str,
               middle: Callable[[str], str], key: Callable[[str], str],
               tail: Callable[[Mapping[str, Any]], str], templates: dict[Any, Any],
               head: tuple[Any, ...]) -> str:
    """Each row of each run as a line: `start` TIME `middle(msg)`, then `key(k)` VALUE for
    its own fields (None ones left out), then `tail(shared fields)`.

    What a run shares is formatted once per distinct run (`templates`, keyed by
    `head`, the message, the shared fields and the row keys), not once per run: a
    busy server's audit has a run per call when peers interleave. A run of one
    field that is never None is then one %-format per line."""
    iso, lines = _iso, []
    for msg, shared, keys, rows in runs:
        cache_key = (head, msg, shared, keys)
        try:
            made = templates.get(cache_key)
        except TypeError:                       # an unhashable shared value: not cached
            cache_key, made = None, None
        if made is None:
            mid, end, prefixes = middle(msg), tail(dict(shared)), [key(k) for k in keys]
            tmpl = (f"{_pct(start)}%s{_pct(mid)}{_pct(prefixes[0])}%s{_pct(end)}"
                    if len(keys) == 1 else None)
            made = (mid, end, prefixes, tmpl)
            if cache_key is not None:
                if len(templates) >= TEMPLATES_MAX:
                    templates.clear()
                templates[cache_key] = made
        mid, end, prefixes, tmpl = made
        if tmpl is not None and not any(row[1] is None for row in rows):
            lines += [tmpl % (iso(at), value(v)) for at, v in rows]     # the audit's case
            continue
        for row in rows:
            own = "".join(p + value(v) for p, v in zip(prefixes, row[1:]) if v is not None)
            lines.append(f"{start}{iso(row[0])}{mid}{own}{end}")
    return "\n".join(lines)


class _Formatter(logging.Formatter):
    """A record with `runs` (the audit's batches) is many lines; any other is one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._templates: dict[Any, Any] = {}     # what each distinct run shares, formatted

    def format(self, record: logging.LogRecord) -> str:
        runs = _runs(record)
        return self._format_runs(record, runs) if runs is not None else self._format_one(record)

    def _format_runs(self, record: logging.LogRecord, runs: list[Run]) -> str:
        raise NotImplementedError

    def _format_one(self, record: logging.LogRecord) -> str:
        raise NotImplementedError


class TextFormatter(_Formatter):
    def _format_runs(self, record: logging.LogRecord, runs: list[Run]) -> str:
        level = record.levelname
        return _run_lines(runs, _text_value, "", lambda msg: f" {level} {msg}",
                          lambda k: f" {k}=",
                          lambda shared: f" {words}" if (words := text_fields(shared)) else "",
                          self._templates, (level,))

    def _format_one(self, record: logging.LogRecord) -> str:
        line = self._line(_ts(record), record.levelname, record.getMessage(),
                          getattr(record, "fields", None) or {})
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    @staticmethod
    def _line(ts: str, level: str, msg: str, fields: Mapping[str, Any]) -> str:
        words = text_fields(fields)
        return f"{ts} {level} {msg} {words}" if words else f"{ts} {level} {msg}"


class JsonFormatter(_Formatter):
    def _format_runs(self, record: logging.LogRecord, runs: list[Run]) -> str:
        value = _json_value
        head = f'","level":{value(record.levelname.lower())},"logger":{value(record.name)}'
        return _run_lines(runs, value, '{"ts":"', lambda msg: f'{head},"msg":{value(msg)}',
                          lambda k: f",{value(k)}:",
                          lambda shared: f",{members}}}" if (members := json_members(shared))
                          else "}", self._templates, (record.levelname, record.name))

    def _format_one(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": _ts(record), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        for key, value in (getattr(record, "fields", None) or {}).items():
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def _handler(path: str | None, fmt: str) -> logging.Handler:
    handler: logging.Handler
    handler = logging.FileHandler(path, encoding="utf-8") if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def _clear(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def setup_logging(level: str = "info", fmt: str = "text", path: str | None = None, *,
                  audit: bool = True, audit_path: str | None = None) -> logging.Logger:
    """Configure the `boruta` logger tree (idempotent: replaces earlier handlers).

    The audit log (`boruta.audit`) is written whatever `level` says (an
    operator who quiets the server still wants to know who did what): with
    the other lines, or to its own file (`audit_path`); `audit=False` turns it off.
    """
    logger = logging.getLogger(LOGGER_NAME)
    _clear(logger)
    logger.addHandler(_handler(path, fmt))
    logger.setLevel(level.upper())
    logger.propagate = False
    audit_logger = logging.getLogger(AUDIT_LOGGER_NAME)
    _clear(audit_logger)
    audit_logger.setLevel(logging.INFO)
    audit_logger.disabled = not audit
    audit_logger.propagate = audit_path is None
    if audit_path is not None:
        audit_logger.addHandler(_handler(audit_path, fmt))
    return logger
