"""Group commit: many requests, one transaction, then every request is answered.

An HTTP handler thread or the MQTT callback hands a ``Request`` in and learns
its fate only after the transaction that holds it committed (or failed as a
whole). Batching is what lets one PostgreSQL connection take thousands of
small POSTs a second: the cost of a commit (a WAL flush) is shared.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import psycopg

from gridtap_hub import db
from gridtap_hub.ingest import Ingest, Request

log = logging.getLogger(__name__)

Done = Callable[[Request, bool], None]  # (request, committed?) -> None


class Committer:
    """One thread and one connection applying batches of at most ``max_batch`` requests."""

    def __init__(self, dsn: str, clock: Callable[[], float] = time.time, max_batch: int = 1000,
                 max_wait: float = 0.0) -> None:
        self.dsn = dsn
        self.clock = clock
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._q: queue.Queue[tuple[Request, Done] | None] = queue.Queue()
        self._ingest: Ingest | None = None
        self._thread = threading.Thread(target=self._run, name="hub-committer", daemon=True)
        self.batches = 0
        self.requests = 0  # in committed batches
        self.failures = 0

    def start(self) -> Committer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)
        if self._ingest is not None:
            self._ingest.conn.close()

    @property
    def backlog(self) -> int:
        return self._q.qsize()

    def submit(self, req: Request, done: Done) -> None:
        self._q.put((req, done))

    def apply(self, req: Request, timeout: float = 30.0) -> bool:
        """Submit and wait; True once committed (``req.error`` says if it was refused)."""
        ev = threading.Event()
        ok: list[bool] = []

        def done(_: Request, committed: bool) -> None:
            ok.append(committed)
            ev.set()

        self.submit(req, done)
        return ev.wait(timeout) and ok[0]

    def _take(self) -> list[tuple[Request, Done]] | None:
        """The next batch: whatever queued up while the last one was committing (no waiting:
        under load batches grow by themselves, idle a lone request goes at once), or ``max_wait``
        for company when set."""
        first = self._q.get()
        if first is None:
            return None
        items = [first]
        deadline = time.monotonic() + self.max_wait
        while len(items) < self.max_batch:
            try:
                wait = deadline - time.monotonic()
                item = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._q.put(None)
                break
            items.append(item)
        return items

    def _run(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            ok = self._apply([r for r, _ in items])
            for r, done in items:
                try:
                    done(r, ok)
                except Exception:  # a caller's callback must not stop the committer
                    log.exception("hub: answering a request failed")

    def _apply(self, reqs: list[Request]) -> bool:
        try:
            if self._ingest is None or self._ingest.conn.closed:
                self._ingest = Ingest(db.connect(self.dsn), self.clock)
            self._ingest.apply(reqs)
            self.batches += 1
            self.requests += len(reqs)
            return True
        except Exception as exc:  # any failure: nothing of the batch was committed
            self.failures += 1
            log.warning("hub: batch of %d requests not stored: %s", len(reqs), str(exc).strip()[:200])
            if self._ingest is not None:
                try:
                    self._ingest.conn.close()
                except psycopg.Error:
                    pass
                self._ingest = None
            return False

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._ingest.counts) if self._ingest is not None else {}
