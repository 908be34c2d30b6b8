"""The Flukso read API's series from the roll-ups (flukso.md §4.3 "GET /sensor/<id>").

A bucket's value is its mean power (Wh/s, energy over the seconds points
cover) times the unit's factor, or ``None`` ("nan" on the wire) where no
point covers it. The interval ends with the bucket holding ``now``, which may
be partly covered: its mean is over what has arrived, so new points show at
once. ``night`` is the mean of the 15-minute values from 02:00 to 05:00 local
time per day (the standby base load), as the Flukso night RRD held.

Instead of an interval, a query may name ``start`` and optionally ``end``
(Unix seconds; ``end`` defaults to now, the resolution to minute), as the
Flukso server's ``check:times`` takes them: start is aligned down to the
resolution and end up to the last bucket that begins before it, so the
answer holds every bucket that overlaps [start, end). An interval together
with start or end, an end without a start, a time that is not decimal
digits, an end not after the start and a span longer than the resolution
serves (minute: a day, 15min: a week, day: a year, week: ten years) are
refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from gridtap_hub import schema

INTERVALS = {  # interval -> (length s, default resolution)
    "15min": (900, "minute"), "hour": (3600, "minute"), "day": (86400, "15min"),
    "week": (604800, "day"), "month": (2419200, "day"), "year": (31536000, "week"),
    "decade": (315360000, "week"), "night": (2419200, "day"),
}
RESOLUTIONS = {  # resolution -> (bucket s, longest interval it serves)
    "minute": (60, 86400), "15min": (900, 604800), "day": (86400, 31536000), "week": (604800, 315360000),
}
UNITS = {  # unit -> factor onto Wh/s (rrd.erl)
    "watt": 3600.0, "kwhperyear": 31536.0, "eurperyear": 5676.0, "audperyear": 5991.0,
    "lpermin": 60.0, "lperday": 86400.0, "m3peryear": 31536.0,
}
_TABLE = {"minute": schema.MINUTE.table, "15min": schema.Q15.table, "day": schema.DAYS.table}


MAX_TIME_DIGITS = 10  # Unix seconds until the year 2286


class BadQuery(ValueError):
    pass


def _seconds(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_TIME_DIGITS):
        raise BadQuery(f"{name} must be Unix seconds, at most {MAX_TIME_DIGITS} decimal digits")
    return int(value)


@dataclass(frozen=True)
class Query:
    interval: str | None  # None: the span is start .. end
    resolution: str
    unit: str
    start: int | None = None
    end: int | None = None  # None with a start: up to now

    @classmethod
    def parse(cls, interval: str | None, resolution: str | None, unit: str | None,
              start: str | None = None, end: str | None = None) -> Query:
        if start is not None or end is not None:
            return cls._parse_span(interval, resolution, unit, start, end)
        if interval not in INTERVALS:
            raise BadQuery(f"interval must be one of {', '.join(INTERVALS)}")
        res = resolution or INTERVALS[interval][1]
        if res not in RESOLUTIONS:
            raise BadQuery(f"resolution must be one of {', '.join(RESOLUTIONS)}")
        if interval != "night" and INTERVALS[interval][0] > RESOLUTIONS[res][1]:
            raise BadQuery(f"resolution {res} serves intervals up to {RESOLUTIONS[res][1]} s")
        if unit not in UNITS:
            raise BadQuery(f"unit must be one of {', '.join(UNITS)}")
        return cls(interval, "day" if interval == "night" else res, unit)

    @classmethod
    def _parse_span(cls, interval: str | None, resolution: str | None, unit: str | None,
                    start: str | None, end: str | None) -> Query:
        if interval is not None:
            raise BadQuery("give either interval or start (and end), not both")
        if start is None:
            raise BadQuery("end needs a start")
        t0 = _seconds("start", start)
        t1 = _seconds("end", end) if end is not None else None
        res = resolution or "minute"
        if res not in RESOLUTIONS:
            raise BadQuery(f"resolution must be one of {', '.join(RESOLUTIONS)}")
        if t1 is not None:
            _check_span(t0, t1, res)
        if unit not in UNITS:
            raise BadQuery(f"unit must be one of {', '.join(UNITS)}")
        return cls(None, res, unit, t0, t1)

    def buckets(self, now: float) -> tuple[int, int, int]:
        """(first bucket start, last bucket start, step) the answer covers; raises BadQuery for a
        start-only query whose span up to ``now`` is not one it may have."""
        step = RESOLUTIONS[self.resolution][0]
        if self.start is None:
            assert self.interval is not None
            last = int(now) // step * step
            return last - (INTERVALS[self.interval][0] // step - 1) * step, last, step
        end = self.end if self.end is not None else int(now)
        _check_span(self.start, end, self.resolution)
        return self.start // step * step, (end - 1) // step * step, step


def _check_span(start: int, end: int, resolution: str) -> None:
    if end <= start:
        raise BadQuery(f"end {end} must be after start {start}")
    longest = RESOLUTIONS[resolution][1]
    if end - start > longest:
        raise BadQuery(f"resolution {resolution} serves spans up to {longest} s, not {end - start}")


def series(conn: psycopg.Connection, sid: int, q: Query, now: float,
           tz: str = "UTC") -> list[tuple[int, float | None]]:
    """[(bucket start, value or None)] over the interval ending now (or start .. end), oldest first."""
    return many(conn, [sid], q, now, tz)[sid]


def many(conn: psycopg.Connection, sids: list[int], q: Query, now: float,
         tz: str = "UTC") -> dict[int, list[tuple[int, float | None]]]:
    """``series`` of several sensors in one statement (the peer page's overlay): sid -> points."""
    if q.interval == "night":
        return _night(conn, sids, q, now, tz)
    first, last, step = q.buckets(now)
    if q.resolution == "week":
        rows = conn.execute(
            "SELECT sid, t / 604800 * 604800 AS w, sum(secs), sum(wh) FROM rollup_day "
            "WHERE sid = ANY(%s) AND t >= %s AND t < %s GROUP BY sid, w",
            (sids, first, last + step)).fetchall()
    else:
        rows = conn.execute(f"SELECT sid, t, secs, wh FROM {_TABLE[q.resolution]} "
                            "WHERE sid = ANY(%s) AND t >= %s AND t <= %s", (sids, first, last)).fetchall()
    factor = UNITS[q.unit]
    have: dict[int, dict[int, float | None]] = {sid: {} for sid in sids}
    for sid, t, secs, wh in rows:
        have[sid][int(t)] = wh / secs * factor if secs > 0 else None
    return {sid: [(t, h.get(t)) for t in range(first, last + step, step)] for sid, h in have.items()}


def _night(conn: psycopg.Connection, sids: list[int], q: Query, now: float,
           tz: str) -> dict[int, list[tuple[int, float | None]]]:
    rows = conn.execute(
        "WITH q AS (SELECT sid, to_timestamp(t) AT TIME ZONE %(tz)s AS lt, secs, wh FROM rollup_q15 "
        "  WHERE sid = ANY(%(sids)s) AND t >= %(since)s) "
        "SELECT sid, extract(epoch FROM date_trunc('day', lt) AT TIME ZONE %(tz)s)::bigint AS d, "
        "       sum(wh) / nullif(sum(secs), 0) "
        "FROM q WHERE extract(hour FROM lt) BETWEEN 2 AND 4 GROUP BY sid, d ORDER BY sid, d",
        {"tz": tz, "sids": sids, "since": int(now) - INTERVALS["night"][0]}).fetchall()
    factor = UNITS[q.unit]
    out: dict[int, list[tuple[int, float | None]]] = {sid: [] for sid in sids}
    for sid, t, v in rows:
        out[sid].append((int(t), v * factor if v is not None else None))
    return out


def to_json(points: list[tuple[int, float | None]]) -> list[list[object]]:
    """Flukso's wire form: [[ts, value], ...] with "nan" for a missing value."""
    return [[t, "nan" if v is None else round(v, 3)] for t, v in points]
