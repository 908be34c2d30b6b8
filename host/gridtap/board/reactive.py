"""Reactive power and energy from the board's GAUGEs (protocol 2, issue #17).

Every GAUGE of a CT carries its reactive power (var, + lagging) and its two
reactive energy registers, Q+ and Q- (mvarh). The registers ride on the live
GAUGE, not on an ACKed tuple, and the board keeps them in RAM: they start at 0
at every boot. The host keeps one monotonic total per register in the counter
store (store/epochs.py), under a series id derived from the CT's sensor id
(`reactive_ids`), so a board reset neither counts a varh twice nor makes the
total fall: a register lower than the last one continues flat, by the epoch
rules of the real registers.

Nothing from the board is believed unchecked: a reactive power beyond the
channel's full scale (board.json, as for real power) is dropped and counted
(`Stats.rejected_reactive`), as is a register step larger than the channel
could deliver since its last reading. A refused reading moves no stored state;
the next one carries the cumulative register.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gridtap.board.plausible import SLACK_S, RateLog

log = logging.getLogger("gridtap.board.reactive")


def reactive_ids(sensor_id: str) -> tuple[str, str]:
    """The series ids of a CT's Q+ and Q- registers: 32 hex digits derived from its sensor id,
    so they need no configuration and stay the same across restarts and machines."""
    return tuple(hashlib.sha1(f"gridtap-reactive-{sign}:{sensor_id}".encode()).hexdigest()[:32]
                 for sign in ("q+", "q-"))  # type: ignore[return-value]


class Store(Protocol):
    def update(self, sensor: str, epoch: int, raw: int, t: float) -> tuple[int | None, bool]: ...


class Reactive:
    """Checks a CT's reactive values and hands them to the outputs."""

    def __init__(self, store: Store, max_w: dict[str, float], warn: RateLog) -> None:
        self.store = store
        self.max_w = max_w  # per CT sensor id: its full-scale power (W); none: unbounded
        self.warn = warn
        self.last: dict[str, tuple[int, int, float]] = {}  # series -> (epoch, raw, t) of the last taken
        self.rejected = 0
        self._ids: dict[str, tuple[str, str]] = {}

    def ids(self, sensor: str) -> tuple[str, str]:
        """reactive_ids, remembered (a GAUGE a second per CT)."""
        got = self._ids.get(sensor)
        if got is None:
            got = self._ids[sensor] = reactive_ids(sensor)
        return got

    def power(self, sensor: str, q_mvar: int) -> float | None:
        """The reactive power in var, or None (counted) if the channel cannot measure that much."""
        q = q_mvar / 1000.0
        lim = self.max_w.get(sensor)
        if lim is not None and abs(q) > lim:
            self.rejected += 1
            self.warn.log(logging.WARNING, ("var", sensor), "dropped reactive power of %s: %.1f var is more "
                          "than the channel's full scale (%.1f)", sensor, q, lim)
            return None
        return q

    def energy(self, sensor: str, epoch: int, t: float, raws: tuple[int, int]) -> list[tuple[str, int]]:
        """(series id, host total in mvarh) of the Q+ and Q- registers that are plausible."""
        out = []
        lim = self.max_w.get(sensor)
        for series, raw in zip(self.ids(sensor), raws, strict=True):
            last = self.last.get(series)
            if lim is not None and last is not None and last[0] == epoch:
                step = lim / 3.6 * (max(0.0, t - last[2]) + SLACK_S)  # mvarh the channel can deliver
                if raw - last[1] > step:
                    self.rejected += 1
                    self.warn.log(logging.WARNING, ("varh", series), "dropped reactive register of %s: "
                                  "+%.3f varh in %.1f s is more than the channel can deliver", sensor,
                                  (raw - last[1]) / 1000, t - last[2])
                    continue
            total, _advanced = self.store.update(series, epoch, raw, t)
            if last is None or last[0] != epoch or raw >= last[1]:
                self.last[series] = (epoch, raw, t)
            if total is not None:
                out.append((series, total))
        return out


def fan_out(sinks: Iterable[Any], sensor: str, t: int, t_ms: int, q_var: float | None,
            totals: list[tuple[str, int]]) -> None:
    """The reactive power to every gauge sink (unit "var", on the CT's own sensor id) and the
    register totals to the sinks that store them (`reactive_counter`: the RRDs, MQTT)."""
    for sink in sinks:
        if q_var is not None and math.isfinite(q_var) and getattr(sink, "wants_gauges", True):
            sink.gauge(sensor, "import", t, q_var, "var")
        put: Callable[[str, int, int], None] | None = getattr(sink, "reactive_counter", None)
        if put is not None:
            for series, total in totals:
                put(series, t_ms, total)
