"""The built-in planner: "battery at X % by HH:MM at the lowest cost" over the known prices.

Dynamic programming over (slot, state of charge in 1 % steps): for every known slot from now to
the end of the price horizon it picks the battery energy change that minimises

    sum over slots of  price * import - export_price * export

where import/export follow from the expected net house load of the slot (`house_load_w`, or a
forecast callable) plus the battery's AC power, with the battery's limits: capacity, charge and
discharge power (AC side), round-trip efficiency (split evenly between charging and discharging),
SOC min/max. Reaching the target SOC at the deadline is a hard goal (each missing % costs far more
than any price), so when it cannot be reached the plan gets as close as the limits allow. Energy
left at the end of the horizon is valued at the cheap quarter of the horizon's prices (what it
would cost to buy again), so the plan neither hoards nor dumps at the horizon's edge. Discharging
beyond the house load (export) happens only when it pays at `export_price`.

The plan's first slot becomes the Decision (LuxPower semantics: without AC charge or forced
discharge the inverter covers the house from the battery and charges it from PV surplus):

* charge from the grid -> AC charge at the planned power (% of charge_kw);
* keep the battery for later while the house draws -> AC charge at 0 % ("hold");
* discharge more than the house draws -> forced discharge at the planned power;
* anything else -> the inverter's own self-consumption (no AC charge, no forced discharge).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo

from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.policy import NO_PRICE, next_deadline, safe_decision
from gridtap.inputs.prices.series import PriceSlot

SHORTFALL_COST = 1e6  # per % below the target at the deadline: dominates any price
Forecast = Callable[[float, float], float]  # (slot start, slot end) -> expected net house load W


@dataclass(frozen=True)
class Battery:
    capacity_kwh: float = 10.0
    charge_kw: float = 3.0
    discharge_kw: float = 3.0
    efficiency: float = 0.9  # round trip
    soc_min: float = 10.0
    soc_max: float = 100.0


@dataclass(frozen=True)
class PlannerSettings:
    battery: Battery
    target_soc: float | None = None  # % by target_dayminute
    target_dayminute: int | None = None  # local minute of the day (0..1439)
    export_price: float = 0.0  # per kWh, in the price source's unit
    house_load_w: float = 300.0  # expected net house load when no forecast is given


@dataclass(frozen=True)
class PlanSlot:
    start: float
    end: float
    price: float
    load_w: float  # expected net house load
    battery_w: float  # planned AC power, + charging, - discharging
    grid_w: float  # expected grid power, + import
    soc_start: float
    soc_end: float
    action: str  # "charge", "hold", "discharge", "export", "idle"


@dataclass(frozen=True)
class Plan:
    slots: tuple[PlanSlot, ...]
    cost: float  # over the plan, in the price unit x kWh
    target_met: bool
    ms: float  # time to compute


class PlannerPolicy:
    """The planner as a `Policy`."""

    def __init__(
        self, settings: PlannerSettings, tz: tzinfo | None = None, forecast: Forecast | None = None
    ) -> None:
        self.s = settings
        self.tz = tz
        self.forecast = forecast

    def decide(self, ctx: ControlContext) -> Decision:
        if ctx.prices is None or ctx.prices.at(ctx.now) is None:
            return safe_decision(NO_PRICE)
        if ctx.soc_pct is None:
            return safe_decision("state of charge unknown")
        plan = self.plan(ctx.prices.ahead(ctx.now), ctx.soc_pct, ctx.now)
        return to_decision(plan, self.s)

    def load_w(self, slot: PriceSlot) -> float:
        return self.forecast(slot.start, slot.end) if self.forecast else self.s.house_load_w

    def deadline_index(self, slots: Sequence[PriceSlot], now: float) -> int | None:
        """Number of slots that end by the next target time (None: no target, or beyond the horizon)."""
        if self.s.target_soc is None or self.s.target_dayminute is None:
            return None
        due = next_deadline(now, self.s.target_dayminute, self.tz)
        for i, sl in enumerate(slots):
            if sl.end >= due:
                return i + 1
        return None

    def plan(self, slots: Sequence[PriceSlot], soc_pct: float, now: float | None = None) -> Plan:
        t0 = time.perf_counter()
        now = slots[0].start if now is None and slots else (now or 0.0)
        b = self.s.battery
        lo, hi = math.ceil(b.soc_min), math.floor(b.soc_max)
        step = b.capacity_kwh / 100.0  # kWh per %
        eta = math.sqrt(b.efficiency)
        loads = [self.load_w(s) for s in slots]
        due = self.deadline_index(slots, now)
        target = None if self.s.target_soc is None else min(hi, max(lo, round(self.s.target_soc)))
        cheap = sorted(s.price for s in slots)[: max(1, len(slots) // 4)]
        v_end = max(0.0, sum(cheap) / len(cheap) / eta) if slots else 0.0
        n_states = hi - lo + 1
        value = [-(lo + i) * step * v_end for i in range(n_states)]  # cost-to-go at the horizon end
        choices: list[list[int]] = []
        for t in range(len(slots) - 1, -1, -1):
            sl, load = slots[t], loads[t]
            hours = sl.length_s / 3600.0
            up = int(b.charge_kw * hours * eta / step + 1e-9)
            down = int(b.discharge_kw * hours / eta / step + 1e-9)
            cost = {
                k: self._slot_cost(k * step, load * hours / 1000.0, sl.price, eta)
                for k in range(-down, up + 1)
            }
            items = list(cost.items())
            nxt = value
            if due is not None and t + 1 == due and target is not None:
                # the state at this slot's end is the state at the deadline: each % short costs
                nxt = [value[j] + max(0, target - (lo + j)) * SHORTFALL_COST for j in range(n_states)]
            new_value, choice = [0.0] * n_states, [0] * n_states
            for i in range(n_states):
                best, best_k = math.inf, 0
                for k, c in items:
                    j = i + k
                    if 0 <= j < n_states:
                        v = c + nxt[j]
                        if v < best:
                            best, best_k = v, k
                new_value[i], choice[i] = best, best_k
            value = new_value
            choices.append(choice)
        choices.reverse()
        return self._rollout(slots, loads, choices, soc_pct, lo, hi, step, eta, due, target, t0)

    def _slot_cost(self, delta_kwh: float, load_kwh: float, price: float, eta: float) -> float:
        grid = load_kwh + (delta_kwh / eta if delta_kwh > 0 else delta_kwh * eta)
        return price * grid if grid > 0 else self.s.export_price * grid

    def _rollout(
        self,
        slots: Sequence[PriceSlot],
        loads: list[float],
        choices: list[list[int]],
        soc_pct: float,
        lo: int,
        hi: int,
        step: float,
        eta: float,
        due: int | None,
        target: int | None,
        t0: float,
    ) -> Plan:
        i = min(hi, max(lo, round(soc_pct))) - lo
        out: list[PlanSlot] = []
        total, met = 0.0, True
        for t, sl in enumerate(slots):
            k = choices[t][i]
            hours = sl.length_s / 3600.0
            delta = k * step
            bat_kwh = delta / eta if delta > 0 else delta * eta
            grid_kwh = loads[t] * hours / 1000.0 + bat_kwh
            total += sl.price * grid_kwh if grid_kwh > 0 else self.s.export_price * grid_kwh
            action = _action(k, loads[t], bat_kwh / hours * 1000.0, lo + i > lo, step / hours * 1000.0)
            out.append(
                PlanSlot(
                    sl.start,
                    sl.end,
                    sl.price,
                    loads[t],
                    bat_kwh / hours * 1000.0,
                    grid_kwh / hours * 1000.0,
                    float(lo + i),
                    float(lo + i + k),
                    action,
                )
            )
            i += k
            if due is not None and target is not None and t + 1 == due and lo + i < target:
                met = False
        return Plan(tuple(out), total, met, (time.perf_counter() - t0) * 1000.0)


def _action(k: int, load_w: float, battery_w: float, above_min: bool, step_w: float) -> str:
    """What the inverter must be told; `step_w` (1 % of the battery in this slot) absorbs the plan's
    rounding to whole percent, so a plan that just covers the house is not read as an export."""
    if k > 0:
        return (
            "charge" if battery_w > max(0.0, -load_w) + step_w / 2 else "idle"
        )  # PV surplus charges by itself
    if k == 0:
        return "hold" if load_w > 0 and above_min else "idle"
    # covering only part of the house is left to the inverter's self-consumption: forcing a fixed
    # power on a forecast load would export (cheaply) whenever the house draws less than forecast
    return "export" if -battery_w > max(0.0, load_w) + step_w else "discharge"


def to_decision(plan: Plan, s: PlannerSettings) -> Decision:
    """The inverter settings for the plan's first slot."""
    if not plan.slots:
        return safe_decision(NO_PRICE)
    first = plan.slots[0]
    b = s.battery
    why = (
        f"planner: price {first.price:.4g}, SOC {first.soc_start:.0f} -> {first.soc_end:.0f} %, "
        f"{first.action}"
    )
    if s.target_soc is not None:
        why += f", target {s.target_soc:.0f} %{'' if plan.target_met else ' (not reachable)'}"
    if first.action == "charge":
        pct = min(100, math.ceil(first.battery_w / (b.charge_kw * 1000.0) * 100 - 1e-6))
        return Decision(InverterState(ac_charge=True, charge_pct=pct), why, "planner")
    if first.action == "hold":
        return Decision(InverterState(ac_charge=True, charge_pct=0), why, "planner")
    if first.action == "export":
        pct = min(100, math.ceil(-first.battery_w / (b.discharge_kw * 1000.0) * 100 - 1e-6))
        return Decision(InverterState(forced_discharge=True, discharge_pct=pct), why, "planner")
    return Decision(InverterState(), why, "planner")
