"""Counter epochs: one monotonic host-side total per sensor series, kept in SQLite.

The board's registers are cumulative, but they start a new *epoch* whenever
the board resets (HELLO carries a new boot count, like Flukso's rid). Within
an epoch the host keeps the highest register value it has seen, so duplicates
and retransmissions are harmless. At the first reading of a new epoch:

* register >= the last value seen in the previous epoch: the board restored
  its registers (EEPROM saved at brownout) and kept counting, so the
  difference is real energy and the previous offset carries on;
* register < the last value seen: the board lost (or restored an older copy
  of) its registers; what happened between the last reading and the reset is
  unknowable, so the host total stays flat and counts only what the new epoch
  adds from here.

The decision waits for a reading stamped after the last one seen: a resent,
older tuple of the new boot says nothing about whether the register fell.

Either way the host total never goes backwards and no Wh is counted twice.
All values are integer thousandths (mWh or mL). Epoch changes are written at
once; ordinary progress is kept in RAM and written every `flush()` (the
daemon calls it every few minutes), so SQLite costs a few pages per flush,
not one per tuple. A crash loses at most that much *progress record*, never
energy: the next reading carries the cumulative register again.

A write that fails (a full disk, an I/O error) is a storage fault
(`gridtap.store.faults`): the state stays in RAM, the write is retried with
backoff, and the daemon ACKs nothing meanwhile. A file SQLite finds corrupt is
moved aside and the store starts empty (`rebuilt`); `seed()` then gives each
series the last total the other stores hold, and the epoch rules above carry
on from the board's registers: a register at or above it continues, a lower
one continues flat, so a rebuilt store never counts a Wh twice.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gridtap.store.faults import StorageHealth, is_corrupt, move_aside, open_checked

log = logging.getLogger("gridtap.store.epochs")
STORE = "counter store"

SCHEMA = """
CREATE TABLE IF NOT EXISTS epoch (
    id INTEGER PRIMARY KEY,
    board_id TEXT NOT NULL,
    boot_count INTEGER NOT NULL,
    reset_cause INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    UNIQUE (board_id, boot_count)
);
CREATE TABLE IF NOT EXISTS series (
    sensor TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL REFERENCES epoch(id),
    offset INTEGER NOT NULL,   -- host total = offset + register, within this epoch
    raw INTEGER NOT NULL,      -- highest register value seen in this epoch
    total INTEGER NOT NULL,    -- host-side cumulative total, never decreases
    floor INTEGER NOT NULL,    -- host total when this epoch began: no reading of it maps lower
    t REAL NOT NULL            -- board time of that register value
);
CREATE TABLE IF NOT EXISTS series_epoch (
    sensor TEXT NOT NULL,
    epoch INTEGER NOT NULL REFERENCES epoch(id),
    offset INTEGER NOT NULL,
    first_raw INTEGER NOT NULL,
    first_t REAL NOT NULL,
    prev_total INTEGER NOT NULL,   -- host total when the epoch began for this series
    continued INTEGER NOT NULL,    -- 1: register carried on from the previous epoch
    PRIMARY KEY (sensor, epoch)
);
"""


@dataclass
class SeriesState:
    epoch: int
    offset: int
    raw: int
    total: int
    floor: int
    t: float


class CounterStore:
    def __init__(self, path: Path, health: StorageHealth | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # Unix time, for the epoch's first_seen
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.health = health if health is not None else StorageHealth()
        self.state: dict[str, SeriesState] = {}
        self.rebuilt = False
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            aside = move_aside(path, time.time())
            log.error("counter store %s is unreadable (%s): moved aside to %s; it is rebuilt from the "
                      "board's registers", path, exc, aside.name)
            self.state.clear()
            self.rebuilt = True
            self.health.rebuilt.append("counters")
            self.db = self._open()
        self.dirty: set[str] = set()
        # Writes that failed (a full disk) and wait for a retry: epoch rows and per-series epoch rows.
        self.new_epochs: dict[int, tuple[str, int, int, float]] = {}
        self.new_series_epochs: dict[tuple[str, int], tuple[int, int, float, int, bool]] = {}

    def _open(self) -> sqlite3.Connection:
        db = open_checked(self.path, "NORMAL")
        try:
            db.executescript(SCHEMA)
            for sensor, epoch, offset, raw, total, floor, t in db.execute(
                "SELECT sensor, epoch, offset, raw, total, floor, t FROM series"
            ):
                self.state[sensor] = SeriesState(epoch, offset, raw, total, floor, t)
        except BaseException:
            db.close()
            raise
        return db

    def begin_epoch(self, board_id: bytes, boot_count: int, reset_cause: int) -> int:
        """The epoch id for this board boot; the same boot seen again is the same epoch."""
        bid = board_id.hex()
        for eid, (b, boot, _cause, _first) in self.new_epochs.items():
            if b == bid and boot == boot_count:
                return eid
        row = self.db.execute(
            "SELECT id FROM epoch WHERE board_id=? AND boot_count=?", (bid, boot_count)
        ).fetchone()
        if row is not None:
            return int(row[0])
        top = self.db.execute("SELECT max(id) FROM epoch").fetchone()[0] or 0
        eid = max([int(top), *self.new_epochs]) + 1
        self.new_epochs[eid] = (bid, boot_count, reset_cause, self.clock())
        self._persist_now()
        return eid

    def seed(self, sensor: str, total: int, t: float) -> None:
        """A rebuilt store: sensor's total was already `total` at t (the newest total another store
        holds). The board's next reading continues from it by the epoch rules; nothing maps lower."""
        if sensor in self.state:
            return
        self.state[sensor] = SeriesState(0, 0, total, total, total, t)
        self.dirty.add(sensor)

    def update(self, sensor: str, epoch: int, raw: int, t: float) -> tuple[int | None, bool]:
        """Record a register reading of the current epoch.

        Return (host total this reading stands for, whether the series advanced).
        A repeated or older reading maps to the total it had, so a resent tuple
        still gives its own (time, total) point. None: that total is not known (an older
        reading before the epoch it belongs to is decided); no point may be made of it.
        """
        st = self.state.get(sensor)
        if st is None:
            st = SeriesState(epoch, 0, raw, raw, 0, t)
            self.state[sensor] = st
            self._begin(sensor, st, raw, t, prev_total=0, continued=False)
            return st.total, True
        if st.epoch != epoch:
            if t < st.t and raw < st.raw:
                # An older reading (a resent tuple, or one stamped before the board clock was
                # set) cannot tell whether the register fell: its lower value may be a tuple of
                # this very boot that was counted before its HELLO was seen (a HELLO lost on the
                # wire). Decide the epoch on the first reading newer than the last one seen.
                # Its total is not st.total either: that is the total at st.t, later than t (after
                # a rebuild, the seed from the RRD's last update). Labelled with t, it would put
                # energy from after t into a point at t (a PVOutput status of an earlier interval).
                return None, False
            continued = raw >= st.raw
            offset = st.offset if continued else st.total - raw
            prev = st.total
            st.epoch, st.offset, st.raw, st.t = epoch, offset, raw, t
            st.total = max(prev, offset + raw)
            st.floor = prev
            self._begin(sensor, st, raw, t, prev_total=prev, continued=continued)
            return st.total, st.total > prev
        if raw <= st.raw:
            if raw == st.raw and t > st.t:
                # The register stood still (0 W, an export series while importing): it still had
                # this value at t. Readings stamped before the newest are judged against the newest
                # reading, not the last that moved the register (board/session.py, `_late`; the step
                # bound). Not written for this alone: a series standing still costs no flush.
                st.t = t
            return max(st.floor, st.offset + raw), False
        st.raw = raw
        st.t = max(st.t, t)
        st.total = st.offset + raw
        self.dirty.add(sensor)
        return st.total, True

    def catch_up(self, sensor: str, total: int, t: float) -> bool:
        """A total of the series made durable elsewhere after this store's last flush (the spool's
        newest point: committed before the board is ACKed, where this store writes its progress only
        every few minutes). A total above the epoch's floor is of the current epoch (every total of
        an earlier one is at most the floor): a higher one is taken with its stamp if that is newer,
        the same one's newer stamp too (the register stood still), so a restart goes on from the
        newest reading. False: nothing to take (this store is as far, the total may be an earlier
        epoch's, or the series has no board epoch yet: new, or seeded after a rebuild)."""
        st = self.state.get(sensor)
        if st is None or st.epoch == 0 or total < st.total or (total == st.total and (
                t <= st.t or total == st.floor)):
            return False
        st.raw = total - st.offset
        st.total = total
        st.t = max(st.t, t)
        self.dirty.add(sensor)
        return True

    def rewind(self, to_ts: int) -> None:
        """The host clock stepped back: no series' reading time stays after to_ts. Otherwise a new
        epoch's lower register would wait for a reading 'newer' than one stamped by a clock that ran
        ahead, and the plausibility bound would measure its interval from that future time."""
        for sensor, st in self.state.items():
            if st.t > to_ts:
                st.t = float(to_ts)
                self.dirty.add(sensor)

    def total(self, sensor: str) -> int | None:
        st = self.state.get(sensor)
        return None if st is None else st.total

    def epochs_of(self, sensor: str) -> list[tuple[int, int, int, bool]]:
        """(epoch id, offset, first register, continued) per epoch, oldest first."""
        return [
            (int(e), int(o), int(r), bool(c))
            for e, o, r, c in self.db.execute(
                "SELECT epoch, offset, first_raw, continued FROM series_epoch WHERE sensor=? ORDER BY epoch",
                (sensor,),
            )
        ]

    def _begin(
        self, sensor: str, st: SeriesState, raw: int, t: float, prev_total: int, continued: bool
    ) -> None:
        self.new_series_epochs[(sensor, st.epoch)] = (st.offset, raw, t, prev_total, continued)
        self.dirty.add(sensor)
        self._persist_now()

    def _persist_now(self) -> None:
        """Epoch changes are written at once, unless the store is failing and waits for its retry."""
        if self.health.ready(STORE):
            self._persist()

    def _write(self, sensor: str, st: SeriesState) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO series (sensor, epoch, offset, raw, total, floor, t)"
            " VALUES (?,?,?,?,?,?,?)",
            (sensor, st.epoch, st.offset, st.raw, st.total, st.floor, st.t),
        )

    def _persist(self) -> bool:
        """Write every pending change in one transaction; a failure is a storage fault (kept, retried)."""
        try:
            with self.db:
                self.db.execute("BEGIN")
                for eid, row in sorted(self.new_epochs.items()):
                    self.db.execute("INSERT INTO epoch (id, board_id, boot_count, reset_cause, first_seen)"
                                    " VALUES (?,?,?,?,?)", (eid, *row))
                for (sensor, epoch), (offset, raw, t, prev, cont) in self.new_series_epochs.items():
                    self.db.execute(
                        "INSERT OR REPLACE INTO series_epoch (sensor, epoch, offset, first_raw, first_t,"
                        " prev_total, continued) VALUES (?,?,?,?,?,?,?)",
                        (sensor, epoch, offset, raw, t, prev, int(cont)),
                    )
                for sensor in sorted(self.dirty):
                    self._write(sensor, self.state[sensor])
        except sqlite3.Error as exc:
            self.health.failed(STORE, exc)
            return False
        self.new_epochs.clear()
        self.new_series_epochs.clear()
        self.dirty.clear()
        self.health.ok(STORE)
        return True

    @property
    def pending(self) -> bool:
        """Changes not on disk yet: progress since the last flush, or writes waiting for a retry."""
        return bool(self.dirty or self.new_epochs or self.new_series_epochs)

    def flush(self) -> int:
        """Write the progress of every series that moved since the last flush; return how many.

        While the store is failing this waits for its retry time (and returns 0).
        """
        if not self.pending or not self.health.ready(STORE):
            return 0
        n = len(self.dirty)
        return n if self._persist() else 0

    def close(self) -> None:
        if self.pending and not self._persist():
            log.error("counter progress of %s not saved (%s): it is taken from the board's registers "
                      "at the next start", ", ".join(sorted(self.dirty)) or "new epochs",
                      self.health.failing.get(STORE, "?"))
        self.db.close()
