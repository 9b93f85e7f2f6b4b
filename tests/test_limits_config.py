"""The limits' settings: documented defaults, and a clear error for a bad value."""
from __future__ import annotations

from pathlib import Path

import pytest

from boruta.core.errors import ConfigError
from boruta.server.config import ServerConfig, load_server_config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
LIMITS = ("max_parked_per_peer", "max_park_seconds", "max_reply_bytes", "max_peer_buffer_bytes")


@pytest.mark.parametrize("name", LIMITS)
def test_each_limit_is_documented_with_its_default(name: str) -> None:
    default = getattr(ServerConfig(), name)
    assert f"\n{name} = {default!r} " in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("name, value", [
    ("max_parked_per_peer", 0), ("max_park_seconds", 0), ("max_park_seconds", "nan"),
    ("max_reply_bytes", 100), ("max_peer_buffer_bytes", 1023)])
def test_a_bad_limit_is_refused_by_name(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        load_server_config(overrides={name: value})
