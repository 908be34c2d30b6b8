"""When to fetch prices, and what to do when a fetch fails.

Prices for the next day are published once a day (Octopus Agile about 16:00 UK time, the EU
day-ahead auction about 13:00 CET). The feed fetches

* at once when the cache does not cover the rest of today (first start, a long outage);
* from the publication time on, until tomorrow is covered, retrying with exponential backoff
  (first retry after `retry_s`, capped at `retry_cap_s`; a 429 waits at least its Retry-After);
* otherwise not at all until the next publication time.

A failed fetch or a malformed answer changes nothing in the cache: the last good prices stay,
and `status()` says how far ahead they reach.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from gridtap.backoff import Backoff
from gridtap.inputs.prices.cache import PriceCache
from gridtap.inputs.prices.http import RateLimited
from gridtap.inputs.prices.series import PriceError, PriceSeries, PriceSlot

log = logging.getLogger("gridtap.prices")


class PriceSource(Protocol):
    name: str
    unit: str

    @property
    def key(self) -> str: ...

    def fetch(self, start: float, end: float) -> list[PriceSlot]: ...


@dataclass(frozen=True)
class Publication:
    """Next-day prices appear daily at `hour`:`minute` local time in `zone`."""

    zone: str
    hour: int
    minute: int = 0

    def time_on(self, t: float) -> float:
        """The publication instant on the local day of t."""
        tz = ZoneInfo(self.zone)
        d = datetime.fromtimestamp(t, tz)
        return d.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0).timestamp()


def day_end(t: float, tz: tzinfo, days: int = 0) -> float:
    """Local midnight at the end of the day of t (+ days), DST-correct."""
    d = datetime.fromtimestamp(t, tz).date() + timedelta(days=days + 1)
    return datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()


@dataclass
class FeedStatus:
    ok: bool  # a price is known for now
    horizon_end: float | None  # prices known (contiguously) until then
    ahead_h: float  # hours of prices ahead of now
    last_ok: float | None
    last_error: str | None
    next_fetch: float
    failures: int

    def describe(self) -> str:
        if not self.ok:
            state = "no price known for the current slot"
        else:
            state = f"prices known {self.ahead_h:.1f} h ahead"
        if self.last_error:
            state += f"; last fetch failed: {self.last_error}"
        return state


class PriceFeed:
    """A price source, its cache and its fetch schedule. Call `poll(now)` every few seconds."""

    def __init__(
        self,
        source: PriceSource,
        cache_path: Path | None,
        publication: Publication,
        retry_s: float = 120.0,
        retry_cap_s: float = 1800.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.publication = publication
        self.tz = ZoneInfo(publication.zone)
        self.cache = PriceCache(cache_path, source.key, source.unit)
        self.backoff = Backoff(retry_s, retry_cap_s)
        self.clock = clock
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.fetches = 0
        self.errors = 0

    def series(self) -> PriceSeries:
        return self.cache.series()

    def wanted_end(self, now: float) -> float:
        """How far ahead prices should reach now: end of today, or end of tomorrow once published."""
        if now >= self.publication.time_on(now):
            return day_end(now, self.tz, 1)
        return day_end(now, self.tz, 0)

    def due(self, now: float) -> bool:
        if not self.backoff.ready(now):
            return False
        end = self.series().horizon_end(now)
        return end is None or end < self.wanted_end(now)

    def next_fetch(self, now: float) -> float:
        if not self.backoff.ready(now):
            return self.backoff.not_before
        if self.due(now):
            return now
        pub = self.publication.time_on(now)
        return pub if pub > now else self.publication.time_on(day_end(now, self.tz) + 3600)

    def poll(self, now: float | None = None) -> bool:
        """Fetch if due; True when new prices were stored."""
        now = self.clock() if now is None else now
        if not self.due(now):
            return False
        return self.fetch(now)

    def fetch(self, now: float) -> bool:
        start = now - now % 900
        end = day_end(now, self.tz, 1)
        self.fetches += 1
        try:
            slots = self.source.fetch(start, end)
            if not slots:
                raise PriceError(
                    f"{self.source.name}: no prices for the requested period (not published yet?)"
                )
        except PriceError as exc:
            self._failed(now, exc)
            return False
        before = self.series().horizon_end(now)
        self.cache.store(slots, now)
        after = self.series().horizon_end(now)
        self.last_ok = now
        self.last_error = None
        if after is not None and after >= self.wanted_end(now):
            self.backoff.success()
        else:
            # Published prices not there yet (Octopus is sometimes late): ask again, backing off.
            self.backoff.failure(now)
        if after != before:
            log.info(
                "prices: %d slots from %s, known until %s", len(slots), self.source.name, _fmt(after, self.tz)
            )
        return True

    def _failed(self, now: float, exc: PriceError) -> None:
        self.errors += 1
        self.last_error = str(exc)
        delay = self.backoff.failure(now)
        if isinstance(exc, RateLimited):
            self.backoff.not_before = max(self.backoff.not_before, now + exc.retry_after_s)
            delay = self.backoff.not_before - now
        st = self.status(now)
        log.warning(
            "prices: %s; retry in %.0f s; %s",
            exc,
            delay,
            f"last good prices reach {_fmt(st.horizon_end, self.tz)}" if st.ok else "no price is known now",
        )

    def status(self, now: float | None = None) -> FeedStatus:
        now = self.clock() if now is None else now
        end = self.series().horizon_end(now)
        return FeedStatus(
            ok=end is not None,
            horizon_end=end,
            ahead_h=0.0 if end is None else (end - now) / 3600,
            last_ok=self.last_ok,
            last_error=self.last_error,
            next_fetch=self.next_fetch(now),
            failures=self.backoff.failures,
        )

    def close(self) -> None:
        self.cache.close()


def _fmt(t: float | None, tz: tzinfo) -> str:
    return "nowhere" if t is None else datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M %Z")
