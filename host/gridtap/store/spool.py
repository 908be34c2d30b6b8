"""The durable upload spool: `<timestamp, counter>` per sensor per destination, in SQLite.

Flukso kept its WAN buffer in RAM and lost it on every reboot; emonhub's
buffer is memory-only too. gridtap keeps one SQLite database (WAL mode) that
survives ``kill -9`` and power loss, and ages it while an uplink is down the
way Flukso aged its RAM buffer, so that its size grows with the logarithm of
the outage while the energy per bucket stays exact.

Interface (used by the daemon and by every uploader)::

    spool = Spool(path, ["flukso", "pvoutput"])
    spool.add(sensor_id, ts, counter, token=seq)   # buffered in RAM
    for seq in spool.maybe_commit():                # durable now
        ack_to_board(seq)
    points = spool.pending("flukso", sensor_id, limit=500)   # committed points, oldest first
    spool.ack("flukso", sensor_id, points[-1][0])  # only after the server said ok
    spool.sync()                                    # a reader commits now; the ACKs still go out

**The ACK rule.** The daemon ACKs a tuple to the board only after the spool
commit that holds it. ``add`` takes an opaque ``token`` (the frame's seq);
``commit``/``maybe_commit`` return the tokens whose points that commit made
durable, in the order they were added, and also hand them to the optional
``on_commit`` callback. Everything that is lost by a crash or a power cut
between two commits was therefore never ACKed, so the board still holds it in
its RAM ring and sends it again (flag RETX) when the host is back.

**Durability against flash wear.** A commit is one SQLite transaction: one
append to the write-ahead log and one ``fsync`` (``synchronous=FULL``, so a
commit that returned survives a power cut, not only a crash). Committing every
tuple would mean five ``fsync``\\ s a second for a board with five series; the
spool instead batches and commits when the oldest uncommitted point is
``commit_interval`` seconds old (default 30 s) or ``commit_points`` points are
waiting (default 1000), i.e. two small writes a minute (about 39 MB of WAL
a day for five series at one tuple a second, ``host.spool_wal_bytes_per_day``). The price is latency
and a board ring that must hold ``commit_interval`` seconds of tuples (150 at
five tuples a second); nothing is lost because of the ACK rule above. A torn
WAL tail after a power cut is discarded by SQLite's frame checksums, so the
database always holds whole commits.

**Aging.** Each filter ``(span, offset)`` looks at the points of a series older
than ``now - offset`` and keeps only the first and the last point of every
``floor(ts / span)`` bucket. The counters are cumulative, so the energy of
every bucket (last minus first counter) and between buckets is unchanged; only
the resolution inside a bucket is lost. The default filters are Flukso's:
(60 s, 0), (900 s, 2 h), (86400 s, 48 h): at most two points per minute for the
last two hours, two per quarter hour back to two days, then two per day. A
30-day outage at one tuple every 10 s leaves 668 points per series
instead of 259,200 (``bench/bench_spool.py``). Aging runs inside a commit (at
most every ``age_interval`` seconds) and whenever ``age(now)`` is called.

**Idempotence.** ``ack`` records a high-water mark per destination and sensor;
points at or before it are never stored again, so a board that replays tuples
the server already has does not make them upload twice. Two points with the
same timestamp keep the higher counter (counters never go backwards within an
epoch; the daemon keeps them monotonic across epochs).

Counters are stored exactly as given (``int`` stays ``int``, ``float`` stays
the same double). Timestamps are integer Unix seconds; anything before
2009-02-13 (1234567890) means the board clock was never set and is refused,
as Flukso did.

The object is thread-safe: the ingest loop and the uploader threads share it.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gridtap.store.faults import is_corrupt, move_aside, open_checked

log = logging.getLogger(__name__)

Counter = int | float
Point = tuple[int, Counter]

#: Flukso's aging filters: (bucket span in s, only for points older than now - offset s).
FLUKSO_AGING: tuple[tuple[int, int], ...] = ((60, 0), (900, 7200), (86400, 172800))

#: The oldest timestamp accepted: Flukso's "clock is set" threshold.
MIN_TS = 1234567890

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series(
    id INTEGER PRIMARY KEY,
    dest TEXT NOT NULL,
    sensor TEXT NOT NULL,
    acked_ts INTEGER NOT NULL DEFAULT 0,
    UNIQUE(dest, sensor));
CREATE TABLE IF NOT EXISTS points(
    series INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    counter NOT NULL,
    PRIMARY KEY(series, ts)) WITHOUT ROWID;
"""

_INSERT = ("INSERT INTO points(series, ts, counter) VALUES (?, ?, ?) "
           "ON CONFLICT(series, ts) DO UPDATE SET counter = max(counter, excluded.counter)")

_AGE = """
DELETE FROM points WHERE series = :s AND ts < :cut AND ts NOT IN (
    SELECT min(ts) FROM points WHERE series = :s AND ts < :cut GROUP BY ts / :span
    UNION ALL
    SELECT max(ts) FROM points WHERE series = :s AND ts < :cut GROUP BY ts / :span)
"""


def check_aging(aging: Iterable[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """Validate aging filters: a sequence of (span > 0 s, offset >= 0 s) pairs of integers."""
    out: list[tuple[int, int]] = []
    for i, f in enumerate(aging):
        if len(f) != 2:
            raise ValueError(f"aging filter {i}: expected (span_s, offset_s), got {f!r}")
        span, offset = f
        if not isinstance(span, int) or isinstance(span, bool) or span <= 0:
            raise ValueError(f"aging filter {i}: span must be a whole number of seconds > 0, got {span!r}")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError(f"aging filter {i}: offset must be a whole number of seconds >= 0, "
                             f"got {offset!r}")
        out.append((span, offset))
    return tuple(out)


def _readable_points(db: sqlite3.Connection, series: int) -> list[tuple[Any, Any]]:
    """The points of one series that a damaged database still yields (see Spool._salvage)."""
    out: list[tuple[Any, Any]] = []
    try:
        for row in db.execute("SELECT ts, counter FROM points WHERE series = ? ORDER BY ts", (series,)):
            out.append(row)
        return out
    except sqlite3.Error:  # a damaged page: read the rest from the other end up to it
        pass
    after = out[-1][0] if out else -(2**62)
    try:
        for row in db.execute("SELECT ts, counter FROM points WHERE series = ? AND ts > ? ORDER BY ts DESC",
                              (series, after)):
            out.append(row)
    except sqlite3.Error:
        pass
    return out


def _check_point(sensor_id: str, ts: int, counter: Counter) -> None:
    if not isinstance(sensor_id, str) or not sensor_id:
        raise ValueError(f"spool: sensor id must be a non-empty string, got {sensor_id!r}")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise ValueError(f"spool: timestamp of sensor {sensor_id} must be integer Unix seconds, got {ts!r}")
    if ts <= MIN_TS:
        raise ValueError(f"spool: timestamp {ts} of sensor {sensor_id} is before 2009-02-13: "
                         "the board clock is not set")
    if isinstance(counter, bool) or not isinstance(counter, int | float):
        raise ValueError(f"spool: counter of sensor {sensor_id} must be a number, got {counter!r}")
    if isinstance(counter, float) and not math.isfinite(counter):
        raise ValueError(f"spool: counter of sensor {sensor_id} must be finite, got {counter!r}")


class Spool:
    """A durable, aged, per-destination queue of cumulative counter points.

    ``path``: the SQLite file (created if missing). ``destinations``: the names
    of the uplinks (e.g. ``["flukso", "pvoutput"]``); every added point is
    queued once per destination and cleared per destination by ``ack``.
    ``clock`` is monotonic seconds (commit timing); ``wall_clock`` is Unix
    seconds (aging cutoffs).
    """

    def __init__(self, path: str | os.PathLike[str], destinations: Sequence[str],
                 aging: Iterable[Sequence[int]] = FLUKSO_AGING, commit_interval: float = 30.0,
                 commit_points: int = 1000, age_interval: float = 60.0,
                 on_commit: Callable[[list[Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        dests = list(destinations)
        if not dests:
            raise ValueError("spool: at least one destination is needed")
        for d in dests:
            if not isinstance(d, str) or not d:
                raise ValueError(f"spool: destination names must be non-empty strings, got {d!r}")
        if len(set(dests)) != len(dests):
            raise ValueError(f"spool: duplicate destination in {dests}")
        if commit_interval < 0:
            raise ValueError(f"spool: commit_interval must be >= 0 s, got {commit_interval}")
        if commit_points < 1:
            raise ValueError(f"spool: commit_points must be >= 1, got {commit_points}")
        self.path = Path(path)
        self.destinations = tuple(dests)
        self.aging = check_aging(aging)
        self.commit_interval = float(commit_interval)
        self.commit_points = int(commit_points)
        self.age_interval = float(age_interval)
        self.on_commit = on_commit
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._batch: list[tuple[str, int, Counter, Any]] = []
        self._handed: list[Any] = []  # tokens made durable by sync(), for the next maybe_commit()
        self._first_add: float | None = None
        self._last_age: float | None = None
        self._series: dict[tuple[str, str], int] = {}
        self._acked: dict[int, int] = {}
        #: number of transactions that added points (for tests and benchmarks)
        self.commits = 0
        self._db = self._open()

    # -- opening -------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):  # a full disk or an I/O error: the data is fine, leave it there
                raise
            # A file that is not a database (or is damaged beyond what the WAL
            # protects against) must not stop metering: keep it for inspection,
            # start anew and take over every row that can still be read.
            aside = move_aside(self.path, self._wall())
            db = self._connect()
            kept = self._salvage(db, aside)
            log.error("spool %s is damaged (%s): moved aside to %s; %d points salvaged from it",
                      self.path, exc, aside.name, kept)
            return db

    def _salvage(self, db: sqlite3.Connection, aside: Path) -> int:
        """Copy the readable series and points of a damaged spool into db; return the points kept.

        Each series is read forwards in key order until SQLite hits a damaged
        page, then backwards from its end to the same place, so one bad page
        costs the points on it, not the series.
        """
        try:
            old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
        except sqlite3.Error:
            return 0
        kept = 0
        try:
            try:
                series = old.execute("SELECT id, dest, sensor, acked_ts FROM series").fetchall()
            except sqlite3.Error:
                return 0
            for old_id, dest, sensor, acked in series:
                if dest not in self.destinations or not isinstance(sensor, str):
                    continue
                rows = _readable_points(old, old_id)
                with self._tx_on(db):
                    db.execute("INSERT OR IGNORE INTO series(dest, sensor) VALUES (?, ?)", (dest, sensor))
                    db.execute("UPDATE series SET acked_ts = max(acked_ts, ?) WHERE dest = ? AND sensor = ?",
                               (int(acked or 0), dest, sensor))
                    sid = db.execute("SELECT id FROM series WHERE dest = ? AND sensor = ?",
                                     (dest, sensor)).fetchone()[0]
                    good = [(sid, ts, c) for ts, c in rows
                            if isinstance(ts, int) and ts > max(MIN_TS, int(acked or 0))
                            and isinstance(c, int | float)]
                    db.executemany(_INSERT, good)
                kept += len(good)
        finally:
            old.close()
        self._load_series(db)
        return kept

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = open_checked(self.path, "FULL")
        try:
            db.executescript(_SCHEMA)
            got = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if got is None:
                db.execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif got[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {got[0]}, expected {SCHEMA_VERSION}")
            self._load_series(db)
        except BaseException:
            db.close()
            self._series.clear()
            self._acked.clear()
            raise
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._tx_on(self._db) as db:
            yield db

    @staticmethod
    @contextmanager
    def _tx_on(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # SQLite rolls some failures back itself (SQLITE_FULL may)
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _series_id(self, dest: str, sensor: str) -> int:
        sid = self._series.get((dest, sensor))
        if sid is None:
            cur = self._db.execute("INSERT INTO series(dest, sensor) VALUES (?, ?)", (dest, sensor))
            sid = int(cur.lastrowid or 0)
            self._series[(dest, sensor)] = sid
            self._acked[sid] = 0
        return sid

    def _check_dest(self, dest: str) -> None:
        if dest not in self.destinations:
            raise ValueError(f"spool: unknown destination {dest!r} "
                             f"(configured: {', '.join(self.destinations)})")

    # -- writing -------------------------------------------------------------

    def add(self, sensor_id: str, ts: int, counter: Counter, token: Any = None) -> None:
        """Queue one point for every destination; it is durable after the next commit.

        ``token`` (e.g. the board frame's seq) is returned by the commit that
        makes this point durable; ``None`` is not returned.
        """
        _check_point(sensor_id, ts, counter)
        with self._lock:
            if self._first_add is None:
                self._first_add = self._clock()
            self._batch.append((sensor_id, ts, counter, token))

    def uncommitted(self) -> int:
        """Points added but not yet committed."""
        with self._lock:
            return len(self._batch)

    def commit_due(self) -> bool:
        """True when the batch is old enough or big enough to commit."""
        with self._lock:
            if not self._batch or self._first_add is None:
                return False
            return (len(self._batch) >= self.commit_points
                    or self._clock() - self._first_add >= self.commit_interval)

    def commit_deadline(self) -> float | None:
        """When (``clock`` seconds) the batch will be old enough to commit; None while it is empty.

        The ingest loop sleeps until then instead of asking ``commit_due()`` on a timer.
        """
        with self._lock:
            if self._handed:
                return self._clock()
            if not self._batch or self._first_add is None:
                return None
            if len(self._batch) >= self.commit_points:
                return self._first_add
            return self._first_add + self.commit_interval

    def maybe_commit(self) -> list[Any]:
        """Commit if ``commit_due()``; return the tokens made durable (else ``[]``).

        Tokens that a reader's ``sync()`` made durable since the last call are returned too.
        """
        with self._lock:
            handed, self._handed = self._handed, []
            if not self.commit_due():
                return handed
            return handed + self.commit()

    def sync(self) -> None:
        """Commit now on behalf of a reader (an uploader about to close an interval).

        The tokens are kept for the thread that ACKs the board: its next
        ``maybe_commit()`` returns them, so the ACK rule holds whichever thread committed.
        """
        with self._lock:
            self._handed.extend(self.commit())

    def commit(self) -> list[Any]:
        """Write the batch in one transaction (and age if due); return its tokens.

        If the write fails (disk full, I/O error) the batch is kept for the
        next try and the exception propagates: nothing is ACKed.
        """
        with self._lock:
            batch = self._batch
            if not batch:
                return []
            self._batch = []
            try:
                with self._tx():
                    rows: list[tuple[int, int, Counter]] = []
                    for sensor, ts, counter, _token in batch:
                        for dest in self.destinations:
                            sid = self._series_id(dest, sensor)
                            if ts > self._acked[sid]:
                                rows.append((sid, ts, counter))
                    self._db.executemany(_INSERT, rows)
                    now = self._clock()
                    if self._last_age is None or now - self._last_age >= self.age_interval:
                        self._age_locked(self._wall())
                        self._last_age = now
            except BaseException:
                self._batch = batch + self._batch
                self._load_series(self._db)
                raise
            self._first_add = self._clock() if self._batch else None
            self.commits += 1
            tokens = [t for (_s, _ts, _c, t) in batch if t is not None]
        if self.on_commit is not None:
            self.on_commit(tokens)
        return tokens

    def _load_series(self, db: sqlite3.Connection) -> None:
        """(Re)read the series table: after opening, and after a rolled-back commit."""
        self._series.clear()
        self._acked.clear()
        for sid, dest, sensor, acked in db.execute("SELECT id, dest, sensor, acked_ts FROM series"):
            self._series[(dest, sensor)] = sid
            self._acked[sid] = acked

    # -- aging ---------------------------------------------------------------

    def age(self, now: float | None = None) -> int:
        """Apply the aging filters at Unix time ``now``; return the points removed."""
        with self._lock, self._tx():
            return self._age_locked(self._wall() if now is None else now)

    def _age_locked(self, now: float) -> int:
        removed = 0
        for sid in list(self._acked):
            for span, offset in self.aging:
                cur = self._db.execute(_AGE, {"s": sid, "cut": int(now) - offset, "span": span})
                removed += cur.rowcount
        return removed

    # -- reading and clearing ------------------------------------------------

    def pending(self, dest: str, sensor_id: str, limit: int = 1000, after: int = 0) -> list[Point]:
        """Committed points of one series not yet acknowledged (and newer than ``after``), oldest first."""
        self._check_dest(dest)
        if limit < 1:
            raise ValueError(f"spool: limit must be >= 1, got {limit}")
        with self._lock:
            sid = self._series.get((dest, sensor_id))
            if sid is None:
                return []
            rows = self._db.execute("SELECT ts, counter FROM points WHERE series = ? AND ts > ? "
                                    "ORDER BY ts LIMIT ?", (sid, after, limit)).fetchall()
        return [(int(ts), c) for ts, c in rows]

    def newest(self, sensor_id: str, n: int = 2) -> list[Point]:
        """The newest ``n`` committed points of a sensor still waiting for any destination, newest
        first (a second's highest counter). A restarted daemon takes up its series from them
        (gridtap.board.session): every reading the board was ACKed for was committed here first."""
        best: dict[int, Counter] = {}
        with self._lock:
            for (_dest, sensor), sid in self._series.items():
                if sensor != sensor_id:
                    continue
                for ts, counter in self._db.execute("SELECT ts, counter FROM points WHERE series = ? "
                                                    "ORDER BY ts DESC LIMIT ?", (sid, n)):
                    best[int(ts)] = max(counter, best.get(int(ts), counter))
        return sorted(best.items(), reverse=True)[:n]

    def sensors(self, dest: str) -> list[str]:
        """Sensors with committed points waiting for ``dest``."""
        self._check_dest(dest)
        with self._lock:
            rows = self._db.execute(
                "SELECT sensor FROM series WHERE dest = ? AND EXISTS "
                "(SELECT 1 FROM points WHERE points.series = series.id) ORDER BY sensor", (dest,)).fetchall()
        return [r[0] for r in rows]

    def ack(self, dest: str, sensor_id: str, up_to_ts: int) -> int:
        """``dest`` holds every point of ``sensor_id`` up to ``up_to_ts``: clear them.

        Call it only after the destination confirmed them. Returns the number
        of points removed; later points at or before ``up_to_ts`` are ignored.
        """
        self._check_dest(dest)
        if not isinstance(up_to_ts, int) or isinstance(up_to_ts, bool):
            raise ValueError(f"spool: ack timestamp must be integer Unix seconds, got {up_to_ts!r}")
        with self._lock, self._tx():
            sid = self._series_id(dest, sensor_id)
            cur = self._db.execute("DELETE FROM points WHERE series = ? AND ts <= ?", (sid, up_to_ts))
            if up_to_ts > self._acked[sid]:
                self._db.execute("UPDATE series SET acked_ts = ? WHERE id = ?", (up_to_ts, sid))
                self._acked[sid] = up_to_ts
            return cur.rowcount

    def rewind(self, to_ts: int) -> int:
        """The host clock stepped back behind this spool's marks: drop points stamped after to_ts
        (a clock running ahead stamped them; the counters are cumulative, so later points carry
        their energy) and lower every high-water mark above to_ts to it, so that points stamped
        from now on are kept. Returns the points dropped."""
        with self._lock, self._tx():
            self._batch = [b for b in self._batch if b[1] <= to_ts]
            dropped = self._db.execute("DELETE FROM points WHERE ts > ?", (to_ts,)).rowcount
            self._db.execute("UPDATE series SET acked_ts = ? WHERE acked_ts > ?", (to_ts, to_ts))
            for sid, acked in self._acked.items():
                self._acked[sid] = min(acked, to_ts)
        if dropped:
            log.warning("spool: dropped %d points stamped after %d (the clock stepped back)", dropped, to_ts)
        return dropped

    def acked_ts(self, dest: str, sensor_id: str) -> int:
        """The high-water mark set by ``ack`` (0 if never acknowledged)."""
        self._check_dest(dest)
        with self._lock:
            sid = self._series.get((dest, sensor_id))
            return 0 if sid is None else self._acked[sid]

    def stats(self) -> dict[str, dict[str, dict[str, int | None]]]:
        """``{dest: {sensor: {"points", "oldest", "newest", "acked_ts"}}}`` of committed data."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.dest, s.sensor, s.acked_ts, count(p.ts), min(p.ts), max(p.ts) "
                "FROM series s LEFT JOIN points p ON p.series = s.id GROUP BY s.id ORDER BY s.dest, s.sensor"
            ).fetchall()
        out: dict[str, dict[str, dict[str, int | None]]] = {}
        for dest, sensor, acked, n, oldest, newest in rows:
            out.setdefault(dest, {})[sensor] = {"points": n, "oldest": oldest, "newest": newest,
                                                "acked_ts": acked}
        return out

    # -- closing -------------------------------------------------------------

    def close(self) -> list[Any]:
        """Commit what is buffered and close; returns the tokens of that last commit.

        If that commit fails (a full disk) its points are not ACKed: the board sends them again.
        """
        with self._lock:
            try:
                return self.commit()
            except (sqlite3.Error, OSError) as exc:
                log.error("spool: %d points not committed at close (%s); the board resends them",
                          len(self._batch), exc)
                return []
            finally:
                self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
