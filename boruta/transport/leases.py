"""Leases held by a client: its requests live while it renews them.

A request filed with a lease (its grace, in seconds) is closed by the server
once the grace passes without a renewal: a CI job killed mid-test, or a
laptop gone to sleep, frees its board after the grace instead of after the
job timeout. The clients renew their leases in the background, twice per
the shortest grace they hold, each round resent as reads are (the ZeroMQ
guide's Lazy Pirate), so only a whole failed round counts. One
`renew_leases` call renews up to MAX_RENEWALS requests, so a client holding
many requests costs the server one call per period, not one per request.

`LeaseBook` is the bookkeeping (which requests, which were lost, what to
send), without I/O; `LeaseKeeper` (blocking client: a thread with its own
socket, as ZeroMQ sockets are not thread-safe) and `AsyncLeaseKeeper`
(asyncio client: a task on the client's own socket) do the renewing.

A new_request whose reply is lost leaves a request the client does not know
of; with a lease, nobody renews it and it closes after the grace.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Iterator

from boruta.core.errors import BorutaError

if TYPE_CHECKING:
    from boruta.transport.async_client import AsyncClient
    from boruta.transport.client import Client

log = logging.getLogger("boruta.leases")

#: Renewals sent per grace. Each round is itself resent on a fresh socket (up to
#: the client's `retries`, as reads are), so a lease is lost only when a whole
#: round fails: the server or the network gone for a renewal period.
RENEWALS_PER_GRACE = 2
#: How often a client renews by default. Every renewal is one call, and an
#: isolated call costs the server about 450 us of CPU (the wake-up, not the
#: renewal): 10,000 CI jobs holding one board each cost it 83 calls/s at this
#: period, 3.6% of a core (docs/benchmarks.md, "Leases"); a minute would cost 8%.
DEFAULT_RENEWAL_PERIOD = 120.0
#: A client's default grace: a dead holder's board is free four minutes later.
DEFAULT_LEASE = RENEWALS_PER_GRACE * DEFAULT_RENEWAL_PERIOD
#: Request IDs one renew_leases call may carry (its frame stays small: ~90 KB).
MAX_RENEWALS = 10_000


def renewal_period(grace: float) -> float:
    """How often a lease of this grace is renewed."""
    return grace / RENEWALS_PER_GRACE


class LeaseBook:
    """Which requests a client holds by lease, and which the server let go (no I/O)."""

    def __init__(self) -> None:
        self._held: dict[int, float] = {}        # request ID -> grace
        self._lost: dict[int, str] = {}
        self._lock = threading.Lock()            # the blocking client's keeper is a thread

    def hold(self, req_id: int, grace: float) -> None:
        with self._lock:
            self._held[req_id] = float(grace)
            self._lost.pop(req_id, None)

    def release(self, req_id: int) -> None:
        """Stop renewing this request (closed by its owner, or kept on purpose)."""
        with self._lock:
            self._held.pop(req_id, None)

    def held(self) -> set[int]:
        with self._lock:
            return set(self._held)

    def lost(self) -> dict[int, str]:
        """Requests whose lease the server no longer holds, and why the client thinks so."""
        with self._lock:
            return dict(self._lost)

    def period(self) -> float | None:
        """Seconds until the next renewal is due (None: nothing held)."""
        with self._lock:
            return renewal_period(min(self._held.values())) if self._held else None

    def batches(self) -> Iterator[list[int]]:
        with self._lock:
            ids = sorted(self._held)
        for start in range(0, len(ids), MAX_RENEWALS):
            yield ids[start:start + MAX_RENEWALS]

    def settle(self, result: Any) -> None:
        """Take a renew_leases answer: the lost requests are no longer renewed."""
        lost = result.get("lost") if isinstance(result, dict) else None
        if not isinstance(lost, list):
            return
        with self._lock:
            for req_id in lost:
                if self._held.pop(req_id, None) is not None:
                    self._lost[req_id] = ("the server holds no lease for it (it ended, or the "
                                          "grace passed without a renewal)")

    def track(self, op_name: str, wire: dict[str, Any], result: Any) -> None:
        """After a call: a new leased request is held; a closed one is no longer renewed."""
        if op_name == "new_request" and wire.get("lease") is not None:
            self.hold(int(result), wire["lease"])
        elif op_name == "close_request":
            self.release(wire["id"])


class _Keeper:
    """What both keepers show their client's user."""

    def __init__(self) -> None:
        self.book = LeaseBook()

    def held(self) -> set[int]:
        """The requests being renewed."""
        return self.book.held()

    def lost(self) -> dict[int, str]:
        """The requests whose lease the server let go, and why."""
        return self.book.lost()

    def release(self, req_id: int) -> None:
        """Stop renewing this request: it closes after its grace unless closed first."""
        self.book.release(req_id)


class LeaseKeeper(_Keeper):
    """Renews a blocking client's leases from a thread, on a socket of its own.

    The thread starts with the first lease and stops with the client (`stop`),
    or when the client is garbage-collected. Renewal failures are logged and
    retried at the next period; the grace covers two of them.
    """

    def __init__(self, client: "Client") -> None:
        super().__init__()
        self._owner = weakref.ref(client)
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def track(self, op_name: str, wire: dict[str, Any], result: Any) -> None:
        self.book.track(op_name, wire, result)
        if op_name == "new_request" and wire.get("lease") is not None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="boruta-leases",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """No more renewals (the server closes the requests after their grace)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)

    def _renewer(self) -> "Client | None":
        owner = self._owner()
        if owner is None:
            return None
        from boruta.transport.client import Client
        return Client(owner.endpoint, owner.timeout, owner.retries, owner.events_endpoint,
                      credentials=owner.credentials, context=owner._ctx)

    def _run(self) -> None:
        renewer = self._renewer()
        if renewer is None:
            return
        try:
            while not self._stopped:
                period = self.book.period()
                self._wake.wait(period if period is not None else 1.0)
                if self._stopped or self._owner() is None:
                    return
                if period is not None:
                    renew_all(renewer, self.book)
        finally:
            renewer.close()


def renew_all(client: "Client", book: LeaseBook) -> None:
    """One round of renewals with a blocking client; failures wait for the next round."""
    for batch in book.batches():
        try:
            book.settle(client.renew_leases(batch))
        except BorutaError as exc:
            _renewal_failed(batch, exc)
            return


def _renewal_failed(batch: list[int], exc: BorutaError) -> None:
    log.warning("lease renewal of %d request(s) failed (retried next period): %s",
                len(batch), exc)


class AsyncLeaseKeeper(_Keeper):
    """Renews an asyncio client's leases from a task on the client's own socket."""

    def __init__(self, client: "AsyncClient") -> None:
        super().__init__()
        self._client = weakref.ref(client)
        self._task: asyncio.Task[None] | None = None

    def track(self, op_name: str, wire: dict[str, Any], result: Any) -> None:
        self.book.track(op_name, wire, result)
        if self._task is None and self.book.period() is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        while True:
            period = self.book.period()
            await asyncio.sleep(period if period is not None else 1.0)
            client = self._client()
            if client is None:
                return
            for batch in self.book.batches():
                try:
                    self.book.settle(await client.renew_leases(batch))
                except BorutaError as exc:
                    _renewal_failed(batch, exc)
                    break
            del client
