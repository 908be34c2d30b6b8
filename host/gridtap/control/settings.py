"""The ``[control]`` section of gridtap.toml: which policy decides, the battery, and the safety values.

.. code-block:: toml

    [control]
    mode = "planner"            # or "policy" (a formula policy, below)
    dry_run = true              # decide and log, never write to the inverter
    target_soc = 90             # planner: % ...
    target_time = "07:00"       # ... by this local time (both or neither)
    export_price = 0.0          # planner: what exported energy earns, per kWh in the price unit
    house_load_w = 300          # planner: expected net house load until the forecast has learned
    grid_sensor = "grid"        # planner: the [[sensor]] on the grid connection: learn the house from it
    forecast_days = 14          # planner: days of history the house forecast averages
    timezone = "Europe/London"  # for target_time and date.* (default: this machine's zone)
    interval_s = 60             # decide this often
    min_dwell_s = 300           # controller: keep a state at least this long
    hysteresis_pct = 2          # controller: SOC band before a SOC-driven change flips back
    policy = '''
    cheap = price.now <= 5 || cheapest(6, 7*60)
    ac_charge = cheap && soc < 95
    '''

    [control.battery]
    capacity_kwh = 10
    charge_kw = 3
    discharge_kw = 3
    efficiency = 0.9            # round trip
    soc_min = 10
    soc_max = 100

Entry point: `parse_config(section) -> ControlSettings`; `ControlSettings.build_policy(sensors, forecast)`
gives the `Policy` (a `UserError` names a sensor a formula policy reads that does not exist).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gridtap.control.planner import Battery, Forecast, PlannerPolicy, PlannerSettings
from gridtap.control.policy import FormulaPolicy, Policy, formula_names
from gridtap.errors import UserError

MODES = ("planner", "policy")
KNOWN = {
    "mode",
    "dry_run",
    "target_soc",
    "target_time",
    "export_price",
    "house_load_w",
    "timezone",
    "interval_s",
    "min_dwell_s",
    "hysteresis_pct",
    "policy",
    "battery",
    "grid_sensor",
    "forecast_days",
}
BATTERY_KEYS = {"capacity_kwh", "charge_kw", "discharge_kw", "efficiency", "soc_min", "soc_max"}


@dataclass(frozen=True)
class ControlSettings:
    mode: str
    planner: PlannerSettings
    policy_text: str | None = None
    timezone: str | None = None
    dry_run: bool = False
    interval_s: float = 60.0
    min_dwell_s: float = 300.0
    hysteresis_pct: float = 2.0
    grid_sensor: str | None = None  # the sensor whose power (- the battery's) the forecast learns
    forecast_days: int = 14
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tz(self) -> ZoneInfo | None:
        return ZoneInfo(self.timezone) if self.timezone else None

    @property
    def battery(self) -> Battery:
        return self.planner.battery

    def build_policy(self, sensors: Iterable[object] = (), forecast: Forecast | None = None) -> Policy:
        """The configured Policy; UserError when a formula policy reads an unknown name."""
        if self.mode == "planner":
            names = [str(getattr(s, "name", s)) for s in sensors]
            if self.grid_sensor is not None and sensors and self.grid_sensor not in names:
                raise _fail("grid_sensor", f"no [[sensor]] is named {self.grid_sensor!r}; known: "
                            f"{', '.join(names)}")
            return PlannerPolicy(self.planner, self.tz, forecast)
        assert self.policy_text is not None
        return FormulaPolicy(self.policy_text, formula_names(sensors), self.tz)


def _fail(key: str, why: str) -> UserError:
    return UserError(f"[control] key '{key}': {why}")


def _num(
    d: dict[str, Any], key: str, default: float | None, lo: float, hi: float, prefix: str = ""
) -> float | None:
    v = d.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise _fail(prefix + key, f"expected a number {lo:g}..{hi:g}, got {v!r}")
    return float(v)


def _req(v: float | None) -> float:
    assert v is not None
    return v


def _battery(d: Any) -> Battery:
    if not isinstance(d, dict):
        raise _fail("battery", "must be a table, written [control.battery]")
    for k in d:
        if k not in BATTERY_KEYS:
            raise _fail(f"battery.{k}", f"unknown key (known here: {', '.join(sorted(BATTERY_KEYS))})")
    p = "battery."
    b = Battery(
        capacity_kwh=_req(_num(d, "capacity_kwh", 10.0, 0.1, 1000, p)),
        charge_kw=_req(_num(d, "charge_kw", 3.0, 0.1, 100, p)),
        discharge_kw=_req(_num(d, "discharge_kw", 3.0, 0.1, 100, p)),
        efficiency=_req(_num(d, "efficiency", 0.9, 0.5, 1.0, p)),
        soc_min=_req(_num(d, "soc_min", 10.0, 0, 100, p)),
        soc_max=_req(_num(d, "soc_max", 100.0, 0, 100, p)),
    )
    if b.soc_max - b.soc_min < 1:
        raise _fail("battery.soc_max", f"must be at least 1 above soc_min ({b.soc_min:g})")
    return b


def parse_config(section: Any) -> ControlSettings:
    if not isinstance(section, dict):
        raise UserError("[control] must be a table")
    for k in section:
        if k not in KNOWN:
            raise _fail(k, f"unknown key (known here: {', '.join(sorted(KNOWN))})")
    mode = section.get("mode", "planner")
    if mode not in MODES:
        raise _fail("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    dry_run = section.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise _fail("dry_run", f"expected true/false, got {dry_run!r}")
    tzname = section.get("timezone")
    if tzname is not None:
        try:
            ZoneInfo(tzname)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise _fail("timezone", f"unknown time zone {tzname!r}") from None
    battery = _battery(section.get("battery", {}))
    target = _num(section, "target_soc", None, 0, 100)
    when = section.get("target_time")
    minute = None
    if when is not None:
        m = re.match(r"^([01]?\d|2[0-3]):([0-5]\d)$", when) if isinstance(when, str) else None
        if m is None:
            raise _fail("target_time", f"expected HH:MM, got {when!r}")
        minute = int(m.group(1)) * 60 + int(m.group(2))
    if (target is None) != (minute is None):
        raise _fail(
            "target_soc" if target is None else "target_time", "target_soc and target_time go together"
        )
    if target is not None and not battery.soc_min <= target <= battery.soc_max:
        raise _fail(
            "target_soc",
            f"must be within battery soc_min..soc_max ({battery.soc_min:g}..{battery.soc_max:g})",
        )
    dwell = _req(_num(section, "min_dwell_s", 300, 0, 86400))
    interval = _req(_num(section, "interval_s", 60, 5, 3600))
    planner = PlannerSettings(
        battery,
        target,
        minute,
        _req(_num(section, "export_price", 0.0, -1e4, 1e4)),
        _req(_num(section, "house_load_w", 300.0, -1e5, 1e5)),
        # a slot shared between two moves: each part lasts at least the controller's dwell and tick
        min_phase_s=max(dwell, interval),
    )
    grid = section.get("grid_sensor")
    if grid is not None and (not isinstance(grid, str) or not grid):
        raise _fail("grid_sensor", f"expected a sensor name, got {grid!r}")
    days = section.get("forecast_days", 14)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 60:
        raise _fail("forecast_days", f"expected a whole number 1..60, got {days!r}")
    text = section.get("policy")
    if mode == "policy":
        if not isinstance(text, str) or not text.strip():
            raise _fail("policy", "mode = \"policy\" needs a policy (lines 'target = formula')")
    elif text is not None:
        raise _fail("policy", 'is only used with mode = "policy"')
    return ControlSettings(
        mode=mode,
        planner=planner,
        policy_text=text,
        timezone=tzname,
        dry_run=dry_run,
        interval_s=interval,
        min_dwell_s=dwell,
        hysteresis_pct=_req(_num(section, "hysteresis_pct", 2, 0, 50)),
        grid_sensor=grid,
        forecast_days=days,
    )
