"""`[inverter] schedule`: fixed AC-charge windows in local time, like the inverter's own timer.

    schedule = ["00:30-04:30", "13:00-15:00"]   # charge from the grid in these windows
    schedule_soc = 90                           # ... up to this SOC (default 100)

A window may run past midnight ("23:00-02:00"). It is a policy like any other (`decide(ctx)`), so
gridtap's controller applies it with read-back, dwell and the safe state, and the HA override
wraps it.
"""

from __future__ import annotations

import datetime
import re
from zoneinfo import ZoneInfo

from gridtap.control.decision import ControlContext, Decision, InverterState

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_window(text: str) -> tuple[int, int]:
    """"HH:MM-HH:MM" -> (start, end) in minutes of the day; ValueError naming the problem."""
    m = _WINDOW.match(text)
    if m is None:
        raise ValueError(f"window {text!r} is not HH:MM-HH:MM (24 h clock)")
    a, b = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if a == b:
        raise ValueError(f"window {text!r} is empty")
    return a, b


class SchedulePolicy:
    def __init__(self, windows: list[str], soc_max: float = 100.0, tz: str | None = None,
                 charge_pct: int = 100) -> None:
        self.windows = [(w, *parse_window(w)) for w in windows]
        self.soc_max = soc_max
        self.tz = ZoneInfo(tz) if tz else None
        self.charge_pct = charge_pct

    def active(self, now: float) -> str | None:
        local = datetime.datetime.fromtimestamp(now, self.tz)  # tz None: the host's local time
        minute = local.hour * 60 + local.minute
        for text, a, b in self.windows:
            if (a <= minute < b) if a < b else (minute >= a or minute < b):
                return text
        return None

    def decide(self, ctx: ControlContext) -> Decision:
        win = self.active(ctx.now)
        if win is None:
            return Decision(InverterState(), "outside the schedule's AC-charge windows", "policy")
        if ctx.soc_pct is not None and ctx.soc_pct >= self.soc_max:
            return Decision(InverterState(), f"schedule window {win}: SOC {ctx.soc_pct:.0f} % is at "
                            f"schedule_soc {self.soc_max:g} %", "policy")
        return Decision(InverterState(ac_charge=True, charge_pct=self.charge_pct),
                        f"schedule window {win}", "policy")
