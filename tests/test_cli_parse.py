"""The pure parsers behind the `boruta` command line (boruta/cli/parse.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from boruta.cli import parse as p
from boruta.core.types import ReqState, SortInfo, WorkerState
from boruta.transport.addresses import CLIENT_ENDPOINT
from boruta.transport.credentials import load_client_config

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


# ---- times

@pytest.mark.parametrize("text, expected", [
    ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)),
    ("2026-12-01T12:00:00+02:00", datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)),
    ("2026-12-01T10:00:00", datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)),
    ("2026-12-01 10:00", datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)),
    ("2026-12-01", datetime(2026, 12, 1, tzinfo=timezone.utc)),
    ("  2026-12-01T10:00:00.250Z ", datetime(2026, 12, 1, 10, 0, 0, 250000, tzinfo=timezone.utc)),
])
def test_parse_time_iso(text, expected):
    got = p.parse_time(text, now=NOW)
    assert got == expected
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text, delta", [
    ("+90s", timedelta(seconds=90)),
    ("+10m", timedelta(minutes=10)),
    ("+2h", timedelta(hours=2)),
    ("+1d", timedelta(days=1)),
    ("+0s", timedelta(0)),
    ("+1h30m", timedelta(hours=1, minutes=30)),
])
def test_parse_time_relative(text, delta):
    assert p.parse_time(text, now=NOW) == NOW + delta


def test_parse_time_relative_uses_the_clock_by_default():
    before = datetime.now(timezone.utc)
    got = p.parse_time("+10m")
    after = datetime.now(timezone.utc)
    assert before + timedelta(minutes=10) <= got <= after + timedelta(minutes=10)
    assert got.tzinfo is not None


def test_parse_time_relative_with_naive_now_is_utc():
    assert p.parse_time("+1d", now=datetime(2026, 1, 1)) == datetime(2026, 1, 2, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", [
    "", "   ", "tomorrow", "+5", "+5x", "+m", "-10m", "10m", "+1.5h", "2026-13-01",
    "2026-12-01T25:00:00Z", "+99999999999999d", "now",
])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError) as exc:
        p.parse_time(text, now=NOW)
    assert str(exc.value)


def test_parse_time_error_names_the_accepted_forms():
    with pytest.raises(ValueError, match=r"ISO 8601.*\+90s"):
        p.parse_time("soon")


# ---- durations

@pytest.mark.parametrize("text, seconds", [
    ("0.5", 0.5), ("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0),
    ("1d", 86400.0), (".25", 0.25), (" 3 ", 3.0), ("1.5M", 90.0),
])
def test_parse_duration(text, seconds):
    assert p.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-1", "x", "5w", "1e3", "nan", "inf", "1h30m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        p.parse_duration(text)


def test_parse_duration_has_a_most():
    assert p.parse_duration("3650d") == 3650 * 86400
    with pytest.raises(ValueError, match=r"too long; the most is 3650d"):
        p.parse_duration("3651d")
    with pytest.raises(ValueError, match=r"too long"):
        p.parse_duration("99999999999999999999999999")


# ---- integers

@pytest.mark.parametrize("text, value", [("1", 1), (" 42 ", 42), ("+7", 7), ("-3", -3),
                                         ("9223372036854775807", 2 ** 63 - 1)])
def test_parse_integer(text, value):
    assert p.parse_integer(text, -10, 2 ** 63 - 1, "the range") == value


@pytest.mark.parametrize("text, message", [
    ("", "'' is not a whole number"), ("1.5", "'1.5' is not a whole number"),
    ("1e9", "'1e9' is not a whole number"), ("1_000", "'1_000' is not a whole number"),
    ("\u00b2", "'\u00b2' is not a whole number"),
    ("\u0661\u0662", "'\u0661\u0662' is not a whole number"),     # Arabic-Indic digits
    ("-11", "-11 is out of range: the range"),
    ("9223372036854775808", "9223372036854775808 is out of range: the range"),
])
def test_parse_integer_rejects(text, message):
    with pytest.raises(ValueError) as exc:
        p.parse_integer(text, -10, 2 ** 63 - 1, "the range")
    assert str(exc.value) == message


# ---- states

@pytest.mark.parametrize("text, state", [
    ("WAITING", ReqState.WAIT), ("wait", ReqState.WAIT), ("Waiting", ReqState.WAIT),
    ("IN PROGRESS", ReqState.INPROGRESS), ("in  progress", ReqState.INPROGRESS),
    ("inprogress", ReqState.INPROGRESS), ("InProgress", ReqState.INPROGRESS),
    ("cancel", ReqState.CANCEL), ("CANCELLED", ReqState.CANCEL),
    ("timeout", ReqState.TIMEOUT), ("invalid", ReqState.INVALID),
    ("done", ReqState.DONE), ("Failed", ReqState.FAILED),
])
def test_parse_req_state(text, state):
    assert p.parse_req_state(text) is state


@pytest.mark.parametrize("text", ["", "running", "idle", "progress", "wai"])
def test_parse_req_state_rejects(text):
    with pytest.raises(ValueError, match="WAITING"):
        p.parse_req_state(text)


@pytest.mark.parametrize("text, state", [
    ("MAINTENANCE", WorkerState.MAINTENANCE), ("maintenance", WorkerState.MAINTENANCE),
    ("idle", WorkerState.IDLE), ("Running", WorkerState.RUN), ("run", WorkerState.RUN),
    ("fail", WorkerState.FAIL), ("FAILED", WorkerState.FAIL),
    ("prepare", WorkerState.PREPARE), ("BUSY", WorkerState.BUSY),
])
def test_parse_worker_state(text, state):
    assert p.parse_worker_state(text) is state


@pytest.mark.parametrize("text", ["", "waiting", "in progress", "maint"])
def test_parse_worker_state_rejects(text):
    with pytest.raises(ValueError, match="IDLE"):
        p.parse_worker_state(text)


def test_settable_worker_state():
    assert p.parse_settable_worker_state("idle") is WorkerState.IDLE
    assert p.parse_settable_worker_state("MAINTENANCE") is WorkerState.MAINTENANCE
    for text in ("running", "fail", "prepare", "busy"):
        with pytest.raises(ValueError, match="IDLE or MAINTENANCE"):
            p.parse_settable_worker_state(text)
    with pytest.raises(ValueError):
        p.parse_settable_worker_state("bogus")


# ---- caps

@pytest.mark.parametrize("text, pair", [
    ("device_type=rpi4", ("device_type", "rpi4")),
    ("a=b=c", ("a", "b=c")),
    ("a=", ("a", "")),
    (" a =x y", ("a", "x y")),
    ("UUID=4f1a", ("UUID", "4f1a")),
])
def test_parse_cap(text, pair):
    assert p.parse_cap(text) == pair


@pytest.mark.parametrize("text", ["", "a", "=b", " =b", "device_type"])
def test_parse_cap_rejects(text):
    with pytest.raises(ValueError, match="KEY=VALUE|key is empty"):
        p.parse_cap(text)


@pytest.mark.parametrize("text, pair", [
    ("heartbeat_interval=0.5", ("heartbeat_interval", "0.5")),
    (" job_timeout = 60 ", ("job_timeout", "60")),
    ("listen=tcp://*:7175", ("listen", "tcp://*:7175")),
])
def test_parse_setting(text, pair):
    assert p.parse_setting(text) == pair


def test_parse_setting_rejects():
    with pytest.raises(ValueError, match=r"invalid setting 'x'; use KEY=VALUE"):
        p.parse_setting("x")


# ---- sort

@pytest.mark.parametrize("text, sort", [
    ("priority", SortInfo("priority", False)),
    ("priority:desc", SortInfo("priority", True)),
    ("id:ASC", SortInfo("id", False)),
    ("state:descending", SortInfo("state", True)),
])
def test_parse_sort(text, sort):
    assert p.parse_sort(text) == sort


@pytest.mark.parametrize("text", ["", ":desc", "id:up", "id:desc:x", "deadline:"])
def test_parse_sort_rejects(text):
    with pytest.raises(ValueError):
        p.parse_sort(text)


# ---- endpoints and where the server is (the reader: tests/test_credentials.py)

MISSING = "/nonexistent/client.toml"


def server_of(option, env=None, config=MISSING):
    return load_client_config(config, env or {}, server=option).server or CLIENT_ENDPOINT


@pytest.mark.parametrize("text, endpoint", [
    ("tcp://127.0.0.1:7175", "tcp://127.0.0.1:7175"),
    ("boruta.example.com:7175", "tcp://boruta.example.com:7175"),
    (" tcp://h:1 ", "tcp://h:1"),
    ("ipc:///tmp/boruta.sock", "ipc:///tmp/boruta.sock"),
    ("tcp://[::1]:7175", "tcp://[::1]:7175"),
])
def test_server_option_forms(text, endpoint):
    assert server_of(text) == endpoint


@pytest.mark.parametrize("text", ["tcp://h", "tcp://h:", "tcp://:7175", "http://h:80",
                                  "tcp://h:99999", "tcp://h:0", "h:port", "tcp://h:\u00b2"])
def test_server_option_rejects(text):
    with pytest.raises(ValueError, match="invalid endpoint"):
        server_of(text)


def test_config_without_server_key(tmp_path):
    cfg = tmp_path / "client.toml"
    cfg.write_text('timeout = 3\n')
    assert server_of(None, {}, cfg) == CLIENT_ENDPOINT
    cfg.write_text('server = ""\n')
    assert server_of(None, {}, cfg) == CLIENT_ENDPOINT
    assert CLIENT_ENDPOINT == "tcp://127.0.0.1:7175"
