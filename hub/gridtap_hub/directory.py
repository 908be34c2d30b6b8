"""Which sensor a Flukso sensor id is, and its device's key: looked up once, then cached.

A sensor's row, once there, does not change (a device keeps its key: a claim
with another key is refused, and a sensor cannot move to another device), so
a found sensor is cached for an hour: without that, a Fluksometer posting each
sensor once a minute would cost a query per POST. A sensor not found is
cached only ``miss_ttl`` seconds, so a new claim shows within that.
``preload`` reads every sensor in one query (at start, and again before the
entries age out), so a hub (re)started under load does not send a query per
sensor as the homes' first POSTs arrive.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from gridtap_hub.db import Pool


class SensorInfo(NamedTuple):
    sid: int
    key: str
    device: str


class Directory:
    """sensor id -> (sid, device key, device): found ones kept ``ttl`` s, unknown ones ``miss_ttl`` s."""

    def __init__(self, pool: Pool, ttl: float = 3600.0, miss_ttl: float = 30.0,
                 max_entries: int = 1_000_000) -> None:
        self.pool = pool
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, SensorInfo | None]] = {}
        self._lock = threading.Lock()
        self.queries = 0

    def lookup(self, sensor: str) -> SensorInfo | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(sensor)
        if hit is not None and now - hit[0] < (self.ttl if hit[1] is not None else self.miss_ttl):
            return hit[1]
        with self.pool.connection() as conn:
            row = conn.execute("SELECT s.sid, d.key, d.id FROM sensor s JOIN device d ON d.id = s.device "
                               "WHERE s.id = %s", (sensor,)).fetchone()
        found = SensorInfo(int(row[0]), str(row[1]), str(row[2])) if row else None
        with self._lock:
            self.queries += 1
            if len(self._cache) >= self.max_entries:
                self._cache.clear()  # bounded memory; refilled one query per sensor
            self._cache[sensor] = (now, found)
        return found

    def preload(self) -> int:
        """Cache every sensor (up to ``max_entries``) in one query; returns how many."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT s.id, s.sid, d.key, d.id FROM sensor s "
                                "JOIN device d ON d.id = s.device LIMIT %s", (self.max_entries,)).fetchall()
        now = time.monotonic()
        fresh: dict[str, tuple[float, SensorInfo | None]] = {
            str(r[0]): (now, SensorInfo(int(r[1]), str(r[2]), str(r[3]))) for r in rows}
        with self._lock:
            self.queries += 1
            self._cache = fresh
        return len(fresh)

    def forget(self, sensor: str) -> None:
        """Drop a cached entry (its sensor vanished from the database)."""
        with self._lock:
            self._cache.pop(sensor, None)
