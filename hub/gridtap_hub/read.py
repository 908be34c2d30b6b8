"""The Flukso read API's series from the roll-ups (flukso.md §4.3 "GET /sensor/<id>").

A bucket's value is its mean power (Wh/s, energy over the seconds points
cover) times the unit's factor, or ``None`` ("nan" on the wire) where no
point covers it. The interval ends with the bucket holding ``now``, which may
be partly covered: its mean is over what has arrived, so new points show at
once. ``night`` is the mean of the 15-minute values from 02:00 to 05:00 local
time per day (the standby base load), as the Flukso night RRD held.
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


class BadQuery(ValueError):
    pass


@dataclass(frozen=True)
class Query:
    interval: str
    resolution: str
    unit: str

    @classmethod
    def parse(cls, interval: str | None, resolution: str | None, unit: str | None) -> Query:
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


def series(conn: psycopg.Connection, sid: int, q: Query, now: float,
           tz: str = "UTC") -> list[tuple[int, float | None]]:
    """[(bucket start, value or None)] over the interval ending now, oldest first."""
    if q.interval == "night":
        return _night(conn, sid, q, now, tz)
    length = INTERVALS[q.interval][0]
    step = RESOLUTIONS[q.resolution][0]
    last = int(now) // step * step
    first = last - (length // step - 1) * step
    if q.resolution == "week":
        rows = conn.execute(
            "SELECT t / 604800 * 604800 AS w, sum(secs), sum(wh) FROM rollup_day "
            "WHERE sid = %s AND t >= %s AND t < %s GROUP BY w", (sid, first, last + step)).fetchall()
    else:
        rows = conn.execute(f"SELECT t, secs, wh FROM {_TABLE[q.resolution]} "
                            "WHERE sid = %s AND t >= %s AND t <= %s", (sid, first, last)).fetchall()
    factor = UNITS[q.unit]
    have = {int(t): (wh / secs * factor if secs > 0 else None) for t, secs, wh in rows}
    return [(t, have.get(t)) for t in range(first, last + step, step)]


def _night(conn: psycopg.Connection, sid: int, q: Query, now: float,
           tz: str) -> list[tuple[int, float | None]]:
    rows = conn.execute(
        "WITH q AS (SELECT to_timestamp(t) AT TIME ZONE %(tz)s AS lt, secs, wh FROM rollup_q15 "
        "  WHERE sid = %(sid)s AND t >= %(since)s) "
        "SELECT extract(epoch FROM date_trunc('day', lt) AT TIME ZONE %(tz)s)::bigint, "
        "       sum(wh) / nullif(sum(secs), 0) "
        "FROM q WHERE extract(hour FROM lt) BETWEEN 2 AND 4 GROUP BY 1 ORDER BY 1",
        {"tz": tz, "sid": sid, "since": int(now) - INTERVALS["night"][0]}).fetchall()
    factor = UNITS[q.unit]
    return [(int(t), v * factor if v is not None else None) for t, v in rows]


def to_json(points: list[tuple[int, float | None]]) -> list[list[object]]:
    """Flukso's wire form: [[ts, value], ...] with "nan" for a missing value."""
    return [[t, "nan" if v is None else round(v, 3)] for t, v in points]
