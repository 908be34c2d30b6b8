"""What the battery controller wants of the inverter, and what it knows when it decides (issue #16).

gridtap.control.policy/planner (prices side) produce a Decision from a ControlContext;
gridtap.control.controller (inverter side) applies it to the inverter with read-back,
hysteresis and dwell times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InverterState:
    """The inverter settings the controller owns."""

    ac_charge: bool = False  # charge the battery from the grid
    charge_pct: int = 100  # AC charge power, % of the inverter's maximum (0..100)
    forced_discharge: bool = False  # discharge the battery into the house/grid
    discharge_pct: int = 100  # forced discharge power, % of maximum (0..100)
    export_limit_w: int | None = None  # None: no export limit


@dataclass(frozen=True)
class Decision:
    state: InverterState
    reason: str  # logged with every write, e.g. "price 4.2 p/kWh in the 3 cheapest slots before 07:00"
    source: str = "policy"  # "policy", "planner", "override" (MQTT/HA), "safe" (a failure)


@dataclass(frozen=True)
class ControlContext:
    now: float  # Unix seconds (the daemon's clock)
    soc_pct: float | None  # battery state of charge; None: unknown
    soc_age_s: float | None  # how old soc_pct is
    battery_w: float | None  # battery AC power, + charging, - discharging
    prices: Any  # gridtap.inputs.prices PriceSeries, or None when no price is known
    meters: Mapping[str, float] = field(default_factory=dict)  # formula names -> values ("M1.power_w", ...)
