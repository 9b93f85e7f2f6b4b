"""Start from the state directory: open the store, restore the books, load the history.

The live requests, workers, jobs and timers are restored before the server
answers anything; the finished requests (the history, possibly millions)
follow in the background a chunk per loop iteration. Meanwhile
`list_requests` waits for them (its frames are kept and answered once all is
loaded), and a call that names a request by ID fetches that one at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Iterator

from boruta.core.scheduler import Scheduler
from boruta.server.keys import decode_key
from boruta.server.store import Store, StoreError

if TYPE_CHECKING:
    from boruta.server.app import Server

log = logging.getLogger("boruta.server")

HISTORY_CHUNK = 5_000        # finished requests loaded per loop iteration after a restart
ID_OPS = frozenset({"update_request", "close_request", "get_request_info", "acquire_worker",
                    "prolong_access", "wait_request", "queue_position",
                    "explain_request"})


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """A big restore creates millions of objects at once: with the collector on, its full
    passes over them would double the time. They all live on, so afterwards they are
    frozen out of its way (gc.freeze)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.freeze()
            gc.enable()


class StateLoader:
    def __init__(self, app: "Server") -> None:
        self.app = app
        self.restored = False
        self.history_after: int | None = None   # history loaded up to this request ID
        self._task: asyncio.Task[Any] | None = None
        self._held: list[list[Any]] = []         # list_requests frames waiting for the history

    def open(self) -> Store:
        """Open the store in `state_dir` and restore the books from it (StoreError if unusable)."""
        app = self.app
        assert app.cfg.state_dir is not None
        state_dir = os.path.expanduser(app.cfg.state_dir)
        started = time.monotonic()
        store = Store(state_dir, app.cfg.state_sync.upper(), lock=True)
        try:
            with collector_paused():
                if not store.is_empty():
                    self._restore(store, state_dir, started)
        except BaseException:
            store.close()
            raise
        return store

    def _restore(self, store: Store, state_dir: str, started: float) -> None:
        app = self.app
        snapshot = store.load(history=False)
        for record in snapshot.workers:
            record["key"] = decode_key(record["key"])
        try:
            sched = Scheduler.restore(snapshot, config=app.cfg.scheduler,
                                      matcher=app.cfg.matcher)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"state database {store.path} holds a record this server "
                             f"cannot restore ({type(exc).__name__}: {exc}); restore a "
                             "dump into an empty state directory") from None
        app.sched = sched
        app.jobs.restored_ports = store.tunnel_ports()
        self.restored = True
        self.history_after = 0
        counts = sched.counts()
        log.info("state restored", extra={"fields": {
            "state_dir": state_dir, "requests": counts["requests"],
            "workers": counts["workers"], "ready": counts["ready"],
            "seconds": round(time.monotonic() - started, 3)}})

    def start_background(self) -> None:
        """After the sockets are up: the history, and a full read of the database."""
        if self.history_after is not None:
            self.app.client_endpoint.gate = self.gate      # until the history is in
            self._task = asyncio.create_task(self._load_history())
        if self.restored:
            self.app.spawn(self._check())

    @property
    def loading(self) -> bool:
        return self.history_after is not None

    def gate(self, name: str, args: dict[str, Any], frames: list[Any]) -> bool:
        """While the history loads: hold list_requests back (True); fetch a named request."""
        if self.history_after is None:
            return False
        if name == "list_requests":
            self._held.append(frames)          # answered once all is loaded
            return True
        if name in ID_OPS:
            self._lookup(args.get("id"))
        return False

    def _lookup(self, req_id: Any) -> None:
        app = self.app
        if (self.history_after is None or app.store is None or not isinstance(req_id, int)
                or isinstance(req_id, bool) or req_id <= self.history_after
                or app.sched.has_request(req_id)):
            return
        record = app.store.load_request(req_id)
        if record is not None:
            app.sched.add_history([record])

    async def _load_history(self) -> None:
        """Finished requests from the store into the books, a chunk per loop iteration."""
        app = self.app
        assert app.store is not None
        started = time.monotonic()
        loaded = 0
        try:
            with collector_paused():
                while self.history_after is not None:
                    records = app.store.history(self.history_after, HISTORY_CHUNK)
                    if not records:
                        break
                    self.history_after = records[-1]["id"]
                    loaded += app.sched.add_history(records)
                    await asyncio.sleep(0)
        except StoreError as exc:
            log.error("cannot load the history of finished requests: %s", exc)
        finally:
            self.history_after = None
            self._task = None
            app.client_endpoint.gate = None
        log.info("history loaded", extra={"fields": {
            "requests": loaded, "seconds": round(time.monotonic() - started, 3)}})
        held, self._held = self._held, []
        for frames in held:
            app.client_endpoint.on_frames(frames)

    async def _check(self) -> None:
        """Read every page of the restored database once, off the loop (SQLite works
        without the GIL), so that damage the start-up reads did not touch is reported."""
        assert self.app.store is not None
        path = self.app.store.state_dir

        def check() -> None:
            reader = Store(path, readonly=True)
            try:
                reader.check()
            finally:
                reader.close()
        try:
            await asyncio.to_thread(check)
        except StoreError as exc:
            log.error("the state database is damaged; the server goes on with what it "
                      "loaded, but stop it soon and restore a dump: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._held.clear()
