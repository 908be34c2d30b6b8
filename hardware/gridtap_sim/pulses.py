"""S0 pulse meters: pulses from an energy (or flow) source, with contact bounce.

An S0 output is an open collector: the board's input idles high (pull-up) and
reads 0 while the pulse is active. Edges are reported as pin levels, so a pulse
is a falling edge then, 30..100 ms later, a rising edge. Each edge may be
followed by a burst of bounce toggles lasting at most `bounce_s` (5 ms).
The ground truth is the pulse start (the first falling edge, before bounce).

Like a real S0 meter (EN 62053-31: pulse at least 30 ms, pause at least
30 ms), the pause between one pulse's end and the next one's start is never
shorter than the shortest pulse width (`width_s[0]`). A pulse the energy asks
for sooner waits for it, and while the meter is behind it sends minimum-width
pulses to catch up: no pulse is lost, some start a little late (the truth
records when they really start). At 30 ms + 30 ms the meter keeps up with up
to 16.7 pulses per second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass
class PulseMeter:
    """`source(k, window_e)` gives the amount counted in each 20 ms window of second k.

    For an electricity meter that is the import energy (J) of a CT channel's
    windows; `unit_per_pulse` is then 3.6e6 / impulses-per-kWh.
    """

    input: int
    unit_per_pulse: float
    source: Callable[[int, F64], F64]
    rng: np.random.Generator
    width_s: tuple[float, float] = (0.030, 0.100)
    bounce_s: float = 0.005
    max_bounces: int = 3
    carry: float = 0.0
    free_t: float = -1.0  # when the pause after the last pulse ends: no pulse starts earlier
    starts: list[float] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)

    def step(self, k: int, window_e: F64) -> list[tuple[float, int, int]]:
        """Pulses that start in second k; returns their edges (t, input, level)."""
        amounts = np.maximum(self.source(k, window_e), 0.0)
        n_win = amounts.size
        cum = self.carry + np.cumsum(amounts)
        total = float(cum[-1])
        n = int(total // self.unit_per_pulse)
        edges: list[tuple[float, int, int]] = []
        if n:
            thr = self.unit_per_pulse * np.arange(1, n + 1)
            idx = np.searchsorted(cum, thr, side="left")
            before = np.where(idx > 0, cum[np.maximum(idx - 1, 0)], self.carry)
            frac = (thr - before) / np.maximum(amounts[idx], 1e-300)
            times = k + (idx + np.clip(frac, 0.0, 1.0)) / n_win
            for t in times.tolist():
                edges += self._edges(float(t))
        self.carry = total - n * self.unit_per_pulse
        return edges

    @property
    def min_width_s(self) -> float:
        """The shortest pulse, and so the shortest pause (bounce settles well inside it)."""
        return max(self.width_s[0], 2.5 * self.bounce_s)

    def _edges(self, t: float) -> list[tuple[float, int, int]]:
        w = max(float(self.rng.uniform(*self.width_s)), self.min_width_s)
        if t < self.free_t:     # still in the last pulse or its pause: wait, and catch up
            t = self.free_t
            w = self.min_width_s
        self.free_t = t + w + self.min_width_s
        self.starts.append(t)
        self.widths.append(w)
        out = [(t, self.input, 0)]
        out += self._bounce(t, 0)
        out.append((t + w, self.input, 1))
        out += self._bounce(t + w, 1)
        return out

    def _bounce(self, t: float, settled: int) -> list[tuple[float, int, int]]:
        nb = int(self.rng.integers(0, self.max_bounces + 1))
        if nb == 0 or self.bounce_s <= 0:
            return []
        ts = np.sort(self.rng.uniform(0.0, self.bounce_s, 2 * nb))
        out = []
        level = 1 - settled
        for x in ts.tolist():
            out.append((t + x, self.input, level))
            level = 1 - level
        return out


def ct_import_source(ct: int) -> Callable[[int, F64], F64]:
    """Import energy (J) per window of CT channel `ct` (0-based)."""
    def src(k: int, window_e: F64) -> F64:
        return np.asarray(window_e[:, ct], dtype=np.float64)
    return src


def ct_export_source(ct: int) -> Callable[[int, F64], F64]:
    def src(k: int, window_e: F64) -> F64:
        return np.asarray(-window_e[:, ct], dtype=np.float64)
    return src


def flow_source(on: Callable[[F64], F64], litres_per_min: float, windows: int = 50
                ) -> Callable[[int, F64], F64]:
    """Litres per window of a water meter whose tap is open when on(t) is 1."""
    def src(k: int, window_e: F64) -> F64:
        t = k + (np.arange(windows) + 0.5) / windows
        return np.asarray(on(t) * litres_per_min / 60.0 / windows, dtype=np.float64)
    return src
