"""The last couple of minutes of per-second rates, for the REST `minute` interval and MQTT.

Rates are kept in the RRD's base unit: thousandths (mWh or mL) per second.
Thread-safe: the ingest loop writes, API threads read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

KEEP_S = 120
RING_S = 128  # slots per series: a little over KEEP_S


@dataclass
class Gauge:
    t: int
    power_w: float
    va: float
    vrms: float
    irms: float
    pf: float
    hz: float


class LiveStore:
    """Per series a ring of RING_S one-second slots, each (second, rate); a slot is valid only
    if its second matches, so old values need no trimming. Writes replace one list item (atomic
    in CPython), so readers need no lock for the rings."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rings: dict[str, list[tuple[int, float]]] = {}
        self.gauges: dict[str, Gauge] = {}
        self.reactive: dict[str, tuple[int, float | None]] = {}  # CT sensor id -> (t, var or None)
        self._pulse_last: dict[str, tuple[float, int]] = {}
        self._pulse_step: dict[str, tuple[float, int]] = {}  # per pulse series its last (rate, step)
        self.newest = -1  # the newest second any series has a value for: the board's present

    def rewind(self, to_ts: int) -> None:
        """The host clock stepped back: forget pulse marks after to_ts (they would hold back rates)."""
        with self.lock:
            for sensor, (t_ms, _total) in list(self._pulse_last.items()):
                if t_ms > to_ts * 1000:
                    del self._pulse_last[sensor]
                    self._pulse_step.pop(sensor, None)
            self.newest = min(self.newest, to_ts)

    def put(self, sensor: str, t: int, rate_milli_per_s: float) -> None:
        ring = self.rings.get(sensor)
        if ring is None:
            with self.lock:
                ring = self.rings.setdefault(sensor, [(-1, 0.0)] * RING_S)
        ring[t % RING_S] = (t, rate_milli_per_s)
        if t > self.newest:
            self.newest = t

    def put_gauge(self, imp: str, exp: str | None, g: Gauge) -> None:
        """A CT gauge: positive power is import, negative is export, each its own series."""
        p = g.power_w
        self._put_second(imp, g.t, p / 3.6 if p > 0.0 else 0.0)
        if exp is not None:
            self._put_second(exp, g.t, -p / 3.6 if p < 0.0 else 0.0)
        self.gauges[imp] = g  # one dict store: atomic in CPython, readers see the old or the new

    def put_reactive(self, sensor: str, t: int, var: float | None) -> None:
        """A CT's reactive power of second t (None: the board's value was refused)."""
        self.reactive[sensor] = (t, var)  # one dict store: atomic in CPython

    def _put_second(self, sensor: str, t: int, rate: float) -> None:
        """A gauge's second. The board sends one a little more than once a second (about every
        1.02 s in the demo), stamped with its whole second, so now and then (every ~47 s there) a
        second gets none: it is given the mean of its neighbours
        instead of staying unknown ("nan" in the REST API's minute series)."""
        ring = self.rings.get(sensor)
        if ring is not None:
            before, gap = ring[(t - 2) % RING_S], ring[(t - 1) % RING_S]
            if before[0] == t - 2 and gap[0] != t - 1:
                ring[(t - 1) % RING_S] = (t - 1, (before[1] + rate) / 2.0)
        self.put(sensor, t, rate)

    def put_pulse(self, sensor: str, t_ms: float, total_milli: int) -> float | None:
        """A pulse total: the rate since the previous one fills every second in between; return it."""
        with self.lock:
            last = self._pulse_last.get(sensor)
            if last is not None and t_ms <= last[0]:
                return None
            self._pulse_last[sensor] = (t_ms, total_milli)
            if last is not None:
                rate = (total_milli - last[1]) * 1000.0 / (t_ms - last[0])
                self._pulse_step[sensor] = (rate, total_milli - last[1])
        if last is None:
            return None
        lo = int(last[0] // 1000) + 1
        hi = int(t_ms // 1000)
        for s in range(max(lo, hi - KEEP_S), hi + 1):
            self.put(sensor, s, rate)
        return rate

    def window(self, sensor: str, end: int, seconds: int = 60) -> list[tuple[int, float | None]]:
        ring = self.rings.get(sensor)
        out: list[tuple[int, float | None]] = []
        after = self._since_pulse(sensor)
        for t in range(end - seconds + 1, end + 1):
            slot = ring[t % RING_S] if ring is not None else (-1, 0.0)
            out.append((t, slot[1] if slot[0] == t else after(t)))
        return out

    def _since_pulse(self, sensor: str) -> Callable[[int], float | None]:
        """For a pulse series, the rate of a second after its last pulse up to the board's present:
        the last interval's rate while no later pulse contradicts it, then falling as one more step
        over the time since (an S0 meter pulses once every few minutes at low power: between its
        pulses its power is not unknown). No pulse interval yet: 0 (it has not moved)."""
        with self.lock:
            last = self._pulse_last.get(sensor)
            step = self._pulse_step.get(sensor)
        newest = self.newest

        def after(t: int) -> float | None:
            if last is None or t * 1000 <= last[0] or t > newest:
                return None
            if step is None:
                return 0.0
            return min(step[0], step[1] * 1000.0 / (t * 1000 - last[0]))

        return after

    def has(self, sensor: str) -> bool:
        ring = self.rings.get(sensor)
        return sensor in self._pulse_last or (ring is not None and any(t >= 0 for t, _ in ring))

    def gauge(self, sensor: str) -> Gauge | None:
        with self.lock:
            return self.gauges.get(sensor)
