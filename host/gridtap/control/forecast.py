"""The planner's house forecast, learned from gridtap's own metering (docs/control.md, "Forecast").

`ProfileForecast` keeps, for each quarter hour of the local day, the mean net house load (house
draw minus PV, W: what the battery and the grid together must serve) of each of the last `days`
days. The forecast for a slot is the mean of those days' means over the slot's quarter hours:
an appliance that runs at seven every evening, or the PV's daily bell, shows up where it happens;
the noise of single days averages out.

Bounded memory: `days` x 96 (sum, count) pairs, pure Python. The service feeds it with
`observe(t, net_w)` once a tick (net = the grid sensor's power - the battery's AC power, so
what the controller does is not learned as house load); `save()`/`load()` keep it in the state
directory across restarts (a few hundred bytes of JSON, written rarely).

Nothing from outside is trusted: a sample that is not a finite number within +-MAX_W, or whose
time runs backwards by more than a day, is refused and counted (`rejected`), never stored; a
state file that cannot be read or does not have the expected shape is logged and ignored.
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import datetime, tzinfo
from pathlib import Path

log = logging.getLogger("gridtap.control")

QUARTER_S = 900
PER_DAY = 96
MAX_W = 100_000.0  # a house that draws or exports more than 100 kW is a measurement error


class ProfileForecast:
    """Net house load (W) per quarter hour of the local day, from the last `days` days."""

    def __init__(self, days: int = 14, tz: tzinfo | None = None, fallback_w: float = 300.0) -> None:
        if not 1 <= days <= 60:
            raise ValueError(f"forecast days must be 1..60, got {days}")
        self.days = days
        self.tz = tz
        self.fallback_w = fallback_w
        # one row per local day (ordinal), newest last: [sum W] * 96 and [count] * 96
        self.rows: list[tuple[int, list[float], list[int]]] = []
        self.rejected = 0
        self.last_t: float | None = None

    # -- learning --------------------------------------------------------------
    def _where(self, t: float) -> tuple[int, int]:
        local = datetime.fromtimestamp(t, self.tz)
        q = (local.hour * 3600 + local.minute * 60 + local.second) // QUARTER_S
        return local.toordinal(), min(PER_DAY - 1, q)

    def observe(self, t: float, net_w: float) -> bool:
        """Learn one sample (Unix seconds, W); False (and counted) when it is not plausible."""
        if not (math.isfinite(t) and math.isfinite(net_w) and abs(net_w) <= MAX_W):
            self.rejected += 1
            return False
        if self.last_t is not None and t < self.last_t - 86400:
            self.rejected += 1  # the clock jumped back a day or more: not the same history
            return False
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        day, q = self._where(t)
        row = next((r for r in self.rows if r[0] == day), None)
        if row is None:
            row = (day, [0.0] * PER_DAY, [0] * PER_DAY)
            self.rows = sorted([*self.rows, row])[-self.days:]
            if row not in self.rows:  # older than everything kept
                return True
        row[1][q] += net_w
        row[2][q] += 1
        return True

    # -- forecasting -----------------------------------------------------------
    def quarter_w(self, q: int) -> float | None:
        """The mean over the kept days of quarter hour q's mean; None with no sample for it."""
        means = [r[1][q] / r[2][q] for r in self.rows if r[2][q]]
        return sum(means) / len(means) if means else None

    def __call__(self, start: float, end: float) -> float:
        """Expected mean net house load (W) over [start, end): the `Forecast` the planner calls."""
        vals = []
        t = start
        while True:  # a quarter hour not learned yet counts as the configured house_load_w
            v = self.quarter_w(self._where(t)[1])
            vals.append(self.fallback_w if v is None else v)
            t += QUARTER_S
            if t >= end - 1e-6:
                return sum(vals) / len(vals)

    def samples(self, start: float, end: float) -> list[float]:
        """What the house drew (net W) in each quarter hour of [start, end) on each kept day: the
        spread around the forecast, which the planner weighs (an unlearned quarter hour: the
        forecast alone)."""
        out: list[float] = []
        t = start
        while True:
            q = self._where(t)[1]
            day_w = [r[1][q] / r[2][q] for r in self.rows if r[2][q]]
            out += day_w or [self.fallback_w]
            t += QUARTER_S
            if t >= end - 1e-6:
                return out

    def days_known(self) -> int:
        return sum(1 for r in self.rows if any(r[2]))

    # -- keeping it across restarts --------------------------------------------
    def to_json(self) -> str:
        rows = [[d, [round(s, 1) for s in su], c] for d, su, c in self.rows]
        return json.dumps({"version": 1, "rows": rows}, separators=(",", ":"))

    def load(self, path: Path) -> bool:
        """Read a state file written by `save`; False (logged) when it is missing or not valid."""
        try:
            doc = json.loads(path.read_text())
            rows = []
            for d, su, c in doc["rows"]:
                if not (isinstance(d, int) and len(su) == PER_DAY and len(c) == PER_DAY):
                    raise ValueError("a row does not have 96 quarter hours")
                sums = [float(v) for v in su]
                counts = [int(v) for v in c]
                if any(n < 0 for n in counts) or any(not math.isfinite(s) or abs(s) > MAX_W * max(1, n)
                                                     for s, n in zip(sums, counts, strict=True)):
                    raise ValueError("a value is out of range")
                rows.append((d, sums, counts))
        except FileNotFoundError:
            return False
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("forecast: %s is not a forecast state (%s): starting afresh", path, exc)
            return False
        self.rows = sorted(rows)[-self.days:]
        return True

    def save(self, path: Path) -> bool:
        """Write the state atomically; False (logged) on a storage fault: the forecast goes on."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(self.to_json())
            os.replace(tmp, path)
            return True
        except OSError as exc:
            log.warning("forecast: cannot write %s: %s (kept in memory)", path, exc)
            return False
