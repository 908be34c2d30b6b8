"""Status intervals aligned to the local wall clock, and their PVOutput labels.

An interval is ``[start, end)`` in Unix seconds; its end is a local time whose
minute is a multiple of the status interval. The status carries the end:
``d`` = local date, ``t`` = ``HH:MM``. The interval that ends at local
midnight belongs to the day that ends: it is sent as ``23:59`` of that day
(PVOutput has no 24:00, and 00:00 would open the next day with yesterday's
energy; IoTaWatt does the same). During the repeated hour when daylight
saving time ends, two intervals get the same label; PVOutput keeps the
later one (energy-today values stay right, one power value is overwritten).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


def _offset(t: float, tz: ZoneInfo) -> int:
    off = datetime.fromtimestamp(t, tz).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def next_boundary(t: float, interval_s: int, tz: ZoneInfo) -> float:
    """The first interval end strictly after t."""
    best: float | None = None
    for off in {_offset(t, tz), _offset(t + interval_s, tz)}:
        b = ((int(t) + off) // interval_s + 1) * interval_s - off
        if b > t and _offset(b, tz) == off and (best is None or b < best):
            best = float(b)
    if best is None:  # offsets that are not a multiple of the interval: plain local rounding
        best = float(((int(t) // interval_s) + 1) * interval_s)
    return best


def label(end: float, tz: ZoneInfo) -> tuple[str, str, date]:
    """(d "yyyymmdd", t "HH:MM", day) for the interval ending at `end`."""
    local = datetime.fromtimestamp(end, tz)
    if local.hour == 0 and local.minute == 0:
        day = (local - timedelta(days=1)).date()
        return day.strftime("%Y%m%d"), "23:59", day
    return local.strftime("%Y%m%d"), local.strftime("%H:%M"), local.date()


def local_date(t: float, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(t, tz).date()
