"""The daemon's Unix clock, as an object its parts are given (never a patched `time.time`).

`SystemClock` is the host's clock; `gridtap.simclock.ClockReader` (from
`gridtap daemon --clock-file`) is a simulated one with the same `now()`. The
daemon hands `clock.now` to every part that needs Unix time (the board
session, the spool, PVOutput, the REST API, the counter and RRD stores), so a
simulation or a test sets time by passing a clock, and nothing else in the
process sees it. Monotonic time (timeouts, retries) stays `time.monotonic`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    """The host's own clock."""

    def now(self) -> float:
        return time.time()
