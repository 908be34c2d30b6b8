"""The durable price cache: SQLite, one row per slot, keyed by the source (tariff/zone/formula).

Written once per successful fetch (a few times a day), in one transaction, so a crash leaves the
last good prices. A storage fault is logged and the cache works from memory; it never stops the
daemon. Slots older than KEEP_S are pruned on each write.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from gridtap.inputs.prices.series import PriceError, PriceSeries, PriceSlot, check_slot

log = logging.getLogger("gridtap.prices")
KEEP_S = 14 * 86400


class PriceCache:
    def __init__(self, path: Path | None, key: str, unit: str = "") -> None:
        self.path = path
        self.key = key
        self.unit = unit
        self.db: sqlite3.Connection | None = None
        self.faults = 0
        self.memory = PriceSeries([], unit)
        if path is not None:
            try:
                self.db = sqlite3.connect(str(path), isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS price (source TEXT NOT NULL, start REAL NOT NULL, "
                    "end REAL NOT NULL, price REAL NOT NULL, PRIMARY KEY (source, start))"
                )
                self.memory = self._load()
            except sqlite3.Error as exc:
                self._fault("open", exc)

    def _fault(self, what: str, exc: Exception) -> None:
        self.faults += 1
        log.error("price cache %s: %s failed (%s); keeping prices in memory", self.path, what, exc)
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
        self.db = None

    def _load(self) -> PriceSeries:
        assert self.db is not None
        rows = self.db.execute(
            "SELECT start, end, price FROM price WHERE source = ? ORDER BY start", (self.key,)
        ).fetchall()
        slots = []
        for start, end, price in rows:
            try:
                slots.append(check_slot(PriceSlot(float(start), float(end), float(price)), "cache"))
            except (PriceError, TypeError, ValueError):
                continue  # a damaged row costs that slot only
        try:
            return PriceSeries(slots, self.unit)
        except PriceError:
            return PriceSeries([], self.unit)

    def series(self) -> PriceSeries:
        return self.memory

    def store(self, slots: Sequence[PriceSlot], now: float) -> None:
        """Merge freshly fetched slots (already validated) and persist them."""
        self.memory = self.memory.merged(slots).window(now - KEEP_S, float("inf"))
        if self.db is None:
            return
        try:
            with self.db:
                self.db.execute("BEGIN")
                for s in slots:
                    self.db.execute(
                        "DELETE FROM price WHERE source = ? AND start < ? AND end > ?",
                        (self.key, s.end, s.start),
                    )
                self.db.executemany(
                    "INSERT INTO price VALUES (?, ?, ?, ?)",
                    [(self.key, s.start, s.end, s.price) for s in slots],
                )
                self.db.execute("DELETE FROM price WHERE end < ?", (now - KEEP_S,))
        except sqlite3.Error as exc:
            self._fault("write", exc)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
