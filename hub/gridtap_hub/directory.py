"""Which sensor a Flukso sensor id is, and its device's key: looked up once, then cached."""

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
    """sensor id -> (sid, device key), cached for ``ttl`` seconds (a claim shows within it)."""

    def __init__(self, pool: Pool, ttl: float = 30.0) -> None:
        self.pool = pool
        self.ttl = ttl
        self._cache: dict[str, tuple[float, SensorInfo | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, sensor: str) -> SensorInfo | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(sensor)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        with self.pool.connection() as conn:
            row = conn.execute("SELECT s.sid, d.key, d.id FROM sensor s JOIN device d ON d.id = s.device "
                               "WHERE s.id = %s", (sensor,)).fetchone()
        found = SensorInfo(int(row[0]), str(row[1]), str(row[2])) if row else None
        with self._lock:
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[sensor] = (now, found)
        return found
