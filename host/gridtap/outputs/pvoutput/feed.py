"""PVOutput as a destination of the durable spool: counters in from the spool, cleared per closed interval.

The board's counters reach PVOutput only through `gridtap.store.spool` (destination
``pvoutput``), so the board is ACKed only once they are on disk, as for Flukso,
and nothing between the board and PVOutput sits only in RAM:

* each `step`, the points committed since the last read are fed to the uploader;
* before an interval closes, the spool is committed (``Spool.sync``) so the
  samples just after the boundary are there to interpolate it;
* a series' points are cleared from the spool only up to the boundary its
  state was saved at (in the uploader's backlog, in the same transaction as
  the status); after a crash the points after it are read again and the
  uploader resumes its grid from there (finding 13.5).

Gauges (W, V) are not kept by the board either (they are not ACKed), so they
are fed straight to the uploader and only improve a status when present.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from gridtap.outputs.pvoutput.uploader import PVOutputUploader
from gridtap.store.faults import StorageHealth
from gridtap.store.spool import Spool

DEST = "pvoutput"
READ_BATCH = 1000
SPOOL = "spool"  # the store's name in StorageHealth, as the ingest thread's GuardedSpool reports it


class SpoolFeed:
    """Moves committed spool points into the uploader and clears what its saved state covers."""

    def __init__(self, uploader: PVOutputUploader, spool: Spool, series: dict[str, str],
                 health: StorageHealth | None = None) -> None:
        self.up = uploader
        self.spool = spool
        self.series = dict(series)  # spool sensor id -> uploader series name
        self.read_to: dict[str, int] = {}
        self.saved_end = uploader.closed_end
        self.health = health if health is not None else StorageHealth()

    def step(self, now: float | None = None) -> None:
        now = self.up.clock() if now is None else now
        # A spool write that fails (a full disk) is a storage fault like the ingest thread's
        # commits: logged once, counted, retried with backoff. No interval is closed meanwhile
        # (the samples after its boundary are not on disk), and no point is cleared.
        if self.up.due(now) and not self._write(self.spool.sync):
            return
        self._read()
        self.up.tick(now)
        if self.up.closed_end != self.saved_end and self._write(self._clear):
            self.saved_end = self.up.closed_end

    def _write(self, write: Callable[[], object]) -> bool:
        """Run a spool write under the storage-fault rules; False if it failed or its retry is not due."""
        if not self.health.ready(SPOOL):
            return False
        try:
            write()
        except (sqlite3.Error, OSError) as exc:
            self.health.failed(SPOOL, exc)
            return False
        self.health.ok(SPOOL)
        return True

    def _read(self) -> None:
        for sid, name in self.series.items():
            after = self.read_to.get(sid, 0)
            while True:
                points = self.spool.pending(DEST, sid, limit=READ_BATCH, after=after)
                for ts, counter in points:
                    self.up.observe_counter(name, ts, float(counter))
                if points:
                    after = points[-1][0]
                if len(points) < READ_BATCH:
                    break
            self.read_to[sid] = after

    def _clear(self) -> None:
        """Every series' state was just saved at its base: the points up to it are not needed again."""
        for sid, name in self.series.items():
            c = self.up.counters.get(name)
            if c is not None and c.base_ts is not None and int(c.base_ts) > self.spool.acked_ts(DEST, sid):
                self.spool.ack(DEST, sid, int(c.base_ts))
