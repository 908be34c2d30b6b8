"""Storage faults: a failing store degrades the daemon, it never kills it.

Three stores hold what the board sends: the counter epochs (SQLite), the
upload spool (SQLite) and the RRDs (rrdtool/rrdcached). Each can fail: a full
disk, an I/O error, a file garbled by a power cut. The rules:

* A write that fails is logged once when the store starts failing (with the
  reason, e.g. "database or disk is full") and once when it works again, is
  counted, and is retried with exponential backoff (1 s ... 60 s).
* While any store fails the daemon is *degraded*: it ACKs no tuple, so the
  board keeps them in its ring and resends them; once the stores work again
  the resent tuples are stored and ACKed. Nothing the board still holds is
  dropped.
* A store that cannot be read (SQLite reports it corrupt, or it is not a
  database) is moved aside as `<name>.corrupt-<unix time>` for inspection and
  started anew: the counter store is rebuilt from the board's registers, the
  spool from the rows of the old file that can still be read.

A full disk or an I/O error is not corruption: such a store is never moved
aside, its data stays where it is.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("gridtap.store.faults")

RETRY_BASE_S = 1.0
RETRY_CAP_S = 60.0
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def is_corrupt(exc: BaseException) -> bool:
    """True if SQLite says the file is damaged or not a database (not: full, locked, I/O error)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    return not isinstance(exc, sqlite3.OperationalError)  # a check of our own (quick_check, schema)


def move_aside(path: Path, now: float) -> Path:
    """Rename a damaged SQLite file (and its -wal/-shm) to `<name>.corrupt-<now>`; return the new path."""
    aside = path.with_name(f"{path.name}.corrupt-{int(now)}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{int(now)}.{n}")
        n += 1
    path.rename(aside)
    for suffix in ("-wal", "-shm"):
        extra = Path(str(path) + suffix)
        if extra.exists():
            extra.rename(Path(str(aside) + suffix))
    return aside


def open_checked(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open an SQLite file in WAL mode and have SQLite check it (quick_check); a damaged file raises
    sqlite3.DatabaseError, which is_corrupt() recognises. The caller adds its schema."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        row = db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
    except BaseException:
        db.close()
        raise
    return db


class StorageHealth:
    """Which stores are failing, since when and why; when each may be tried again.

    Thread-safe: the ingest loop and the uploader threads report to it.
    """

    def __init__(self, mono: Callable[[], float] = time.monotonic) -> None:
        self.mono = mono
        self.failing: dict[str, str] = {}  # store -> the reason of its last failure
        self.since: dict[str, float] = {}
        self.backoff: dict[str, Any] = {}  # store -> gridtap.backoff.Backoff, made at its first fault
        self.faults = 0  # failed writes, all stores, since the start
        self.recoveries = 0
        self.rebuilt: list[str] = []  # stores found corrupt at the start and begun anew
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        return bool(self.failing)

    def failed(self, store: str, exc: BaseException | str) -> float:
        """A write to store failed: count it, log it if it is news; return the seconds until a retry."""
        reason = str(exc) or type(exc).__name__
        now = self.mono()
        with self._lock:
            self.faults += 1
            b = self.backoff.get(store)
            if b is None:
                # Loaded at the first fault: a healthy daemon never needs it.
                from gridtap.backoff import Backoff

                b = self.backoff[store] = Backoff(RETRY_BASE_S, RETRY_CAP_S)
            delay = b.failure(now)
            if store not in self.failing:
                self.since[store] = now
                log.error("storage fault in the %s: %s; nothing is ACKed to the board until it is "
                          "written (retrying, at most every %.0f s)", store, reason, RETRY_CAP_S)
            self.failing[store] = reason
        return delay

    def ok(self, store: str) -> None:
        """A write to store worked: if it had been failing, the fault is over."""
        with self._lock:
            if store not in self.failing:
                return
            del self.failing[store]
            self.backoff[store].success()
            self.recoveries += 1
            log.warning("storage fault in the %s is over after %.0f s", store,
                        self.mono() - self.since.pop(store))

    def ready(self, store: str) -> bool:
        """True if store is healthy or its retry pause is over."""
        with self._lock:
            b = self.backoff.get(store)
            return store not in self.failing or b is None or b.ready(self.mono())

    def retry_at(self, store: str) -> float | None:
        """When (monotonic s) the failing store is due for a retry; None while it is healthy."""
        with self._lock:
            if store not in self.failing:
                return None
            return self.backoff[store].not_before

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"degraded": bool(self.failing), "failing": dict(self.failing), "faults": self.faults,
                    "recoveries": self.recoveries, "rebuilt": list(self.rebuilt)}


class GuardedSpool:
    """The spool as the board session sees it: a failed commit is a storage fault, not an exception.

    The spool keeps a batch whose commit failed and returns its tokens once a
    retry succeeds; retries follow the backoff, not every pass of the loop.
    """

    def __init__(self, spool: Any, health: StorageHealth) -> None:
        self.spool = spool
        self.health = health

    def add(self, sensor_id: str, ts: int, counter: int | float, token: Any = None) -> None:
        self.spool.add(sensor_id, ts, counter, token)

    def maybe_commit(self) -> list[Any]:
        if not self.health.ready("spool"):
            return []
        try:
            tokens: list[Any] = (self.spool.commit() if self.health.retry_at("spool") is not None
                                 else self.spool.maybe_commit())
        except (sqlite3.Error, OSError) as exc:
            self.health.failed("spool", exc)
            return []
        self.health.ok("spool")
        return tokens

    def commit_deadline(self) -> float | None:
        retry = self.health.retry_at("spool")
        return retry if retry is not None else self.spool.commit_deadline()

    def newest(self, sensor_id: str, n: int = 2) -> list[tuple[int, int | float]]:
        """The spool's newest points of a series (Spool.newest); a read that fails is a storage fault,
        and the session then starts from the counter store alone."""
        try:
            points: list[tuple[int, int | float]] = self.spool.newest(sensor_id, n)
        except (sqlite3.Error, OSError) as exc:
            self.health.failed("spool", exc)
            return []
        return points

    def rewind(self, to_ts: int) -> int:
        """The host clock stepped back (gridtap.board.session): a failure is a storage fault, and the
        spool's marks then stay ahead until a later rewind succeeds."""
        try:
            dropped: int = self.spool.rewind(to_ts)
        except (sqlite3.Error, OSError) as exc:
            self.health.failed("spool", exc)
            return 0
        return dropped
