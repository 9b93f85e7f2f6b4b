"""In-process event listeners (the dashboard's feed, metrics) get each event after its commit."""
from __future__ import annotations

import asyncio

from boruta.server.app import Server
from boruta.server.config import ServerConfig
from boruta.testing.processes import LOOPBACK

SETTINGS = {k: v for k, v in LOOPBACK.items() if k in ("listen", "dryad_listen", "events",
                                                      "http_listen")}


def test_listeners_get_events_after_the_commit_and_can_stop(tmp_path) -> None:
    async def run() -> tuple[list[dict], list[dict], int]:
        server = Server(ServerConfig(insecure=True, state_dir=str(tmp_path / "state"),
                                     **SETTINGS))
        await server.start()
        try:
            seen: list[dict] = []
            committed_when_seen: list[int] = []

            def listener(event: dict) -> None:
                seen.append(event)
                committed_when_seen.append(server.stats.commits)
            stop = server.events.listen(listener)
            before = server.stats.commits
            server.sched.new_request({"a": "b"}, 4, queue_unsatisfiable=True)
            server.after_turn()
            assert seen == []                     # not before the turn is committed
            await asyncio.sleep(0.05)
            first = list(seen)
            stop()
            server.sched.new_request({"a": "b"}, 4, queue_unsatisfiable=True)
            server.after_turn()
            await asyncio.sleep(0.05)
            return first, seen, committed_when_seen[0] - before
        finally:
            await server.close()
    first, seen, commits = asyncio.run(run())
    assert [(e["kind"], e["id"], e["state"]) for e in first] == [("request", 1, "WAITING")]
    assert commits == 1 and len(seen) == 1          # stopped: the second never came


def test_a_listener_of_some_request_states_gets_only_those(tmp_path) -> None:
    async def run() -> tuple[list[str], int]:
        server = Server(ServerConfig(insecure=True, **SETTINGS))
        await server.start()
        try:
            seen: list[str] = []
            server.events.listen(lambda e: seen.append(e["state"]), {"CANCELLED"})
            built = []
            original = server.events._send
            server.events._send = lambda topic, doc: (built.append(doc), original(topic, doc))
            req = server.sched.new_request({"a": "b"}, 4, queue_unsatisfiable=True)
            server.after_turn()
            server.sched.close_request(req)
            server.after_turn()
            await asyncio.sleep(0.05)
            return seen, len(built)
        finally:
            await server.close()
    seen, built = asyncio.run(run())
    assert seen == ["CANCELLED"]
    assert built == 1                # the WAITING event nobody wanted was never built
