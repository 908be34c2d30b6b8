"""One control step for all wallboxes: measurements -> rule variables -> rules -> load manager.

Transport-free: the OCPP central system (`gridtap.control.ev.cs`) and the
bench's in-process house model (bench/bench_ev.py) both call `Controller.step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gridtap.control.ev.charging import ChargeRule
from gridtap.control.ev.loadmgr import VOLTS, BoxInput, BoxSpec, Grant, LoadManager


@dataclass
class BoxMeasure:
    """What a wallbox reported (MeterValues, StatusNotification, its transaction)."""

    connected: bool = False          # a vehicle plugged in with a running transaction
    power_w: float = 0.0
    import_wh: float = 0.0
    currents: tuple[float, float, float] = (0.0, 0.0, 0.0)
    txn_start_wh: float = 0.0
    state: int = 0                   # 0 available, 1 plugged/preparing, 2 charging, 3 suspended, 9 fault


@dataclass(frozen=True)
class BoxPlan:
    """A wallbox's configuration as far as the controller needs it."""

    id: str
    index: int
    rule: ChargeRule
    spec: BoxSpec
    target_wh: float = 0.0
    departure_min: int = 7 * 60


@dataclass
class Controller:
    plans: Sequence[BoxPlan]
    max_total_current_a: float
    min_on_s: float = 300.0
    min_off_s: float = 300.0
    hysteresis_a: float = 1.0
    stop_delay_s: float = 300.0
    reserve_a: float = 0.0
    limits: Callable[[], Any] | None = None
    log: Callable[[str], None] = field(default=lambda msg: None)
    rule_errors: int = 0
    manager: LoadManager = field(init=False)

    def __post_init__(self) -> None:
        self.manager = LoadManager([p.spec for p in self.plans], self.max_total_current_a,
                                   hysteresis_a=self.hysteresis_a, min_on_s=self.min_on_s,
                                   min_off_s=self.min_off_s, stop_delay_s=self.stop_delay_s,
                                   reserve_a=self.reserve_a,
                                   limits=self.limits, log=self.log)

    def variables(self, minute_of_day: int, wday: int, grid_w: float,
                  grid_a: tuple[float, float, float], boxes: Mapping[str, BoxMeasure],
                  date: Mapping[str, float] | None = None) -> dict[str, float]:
        """The rules' names; `date`: every cFos date.* name (gridtap.rules.cfos.date_env) when known."""
        env: dict[str, float] = {
            "M1.power_w": grid_w, "M1.current_l1": grid_a[0], "M1.current_l2": grid_a[1],
            "M1.current_l3": grid_a[2],
            # the surplus the surplus-driven wallboxes share: export plus what they draw now (a
            # wallbox whose rule ignores the surplus is consumption like the house)
            "surplus_w": -grid_w + sum(boxes[p.id].power_w for p in self.plans
                                       if p.id in boxes and "surplus_w" in p.rule.names),
            "date.hour": minute_of_day // 60, "date.minute": minute_of_day % 60,
            "date.dayminute": minute_of_day, "date.wday": wday,
        }
        if date is not None:
            env.update(date)
        for p in self.plans:
            env.update({f"E{p.index}.{k}": v for k, v in self._fields(p, minute_of_day,
                                                                       boxes.get(p.id)).items()})
        return env

    def _fields(self, p: BoxPlan, minute_of_day: int, m: BoxMeasure | None) -> dict[str, float]:
        m = m or BoxMeasure()
        left = (p.departure_min - minute_of_day) % 1440
        cphases = sum(1 for c in m.currents if c > 0.5)
        return {
            "power_w": m.power_w, "import_wh": m.import_wh, "current_l1": m.currents[0] * 1000,
            "current_l2": m.currents[1] * 1000, "current_l3": m.currents[2] * 1000, "state": m.state,
            "cphases": cphases, "txn_energy": max(0.0, m.import_wh - m.txn_start_wh) if m.connected else 0.0,
            "phases": p.spec.phases, "max_ma": p.spec.max_a * 1000, "min_ma": p.spec.min_a * 1000,
            "max_w": p.spec.max_a * VOLTS * p.spec.phases, "target_wh": p.target_wh,
            "minutes_left": float(left),
        }

    def step(self, now: float, minute_of_day: int, wday: int, grid_w: float | None,
             grid_a: tuple[float, float, float] | None,
             boxes: Mapping[str, BoxMeasure], standby_a: float = 0.0,
             date: Mapping[str, float] | None = None) -> dict[str, Grant]:
        """Evaluate every rule and grant currents; no grid reading means nothing is granted.

        standby_a: what wallboxes without a grant may start drawing before the next step (a car
        plugged in charges at the safe default profile at once): kept free like the house's draw."""
        if grid_w is None or grid_a is None or not all(map(math.isfinite, (grid_w, *grid_a))):
            self.log("no plausible grid reading: pausing every wallbox")
            house_a = math.inf
            grid_w, grid_a = 0.0, (0.0, 0.0, 0.0)
        else:
            # the house without the EVs, per phase; the worst phase sets the budget
            ev = [sum(boxes[p.id].currents[k] for p in self.plans if p.id in boxes) for k in range(3)]
            house_a = max(grid_a[k] - ev[k] for k in range(3)) + standby_a
        env = self.variables(minute_of_day, wday, grid_w, grid_a, boxes, date)
        # Each surplus-driven wallbox with a car sees its share of the surplus: two rules that each saw
        # all of it would together take twice the surplus, the rest from the grid.
        sharing = sum(1 for p in self.plans if "surplus_w" in p.rule.names
                      and (boxes.get(p.id) or BoxMeasure()).connected)
        inputs: dict[str, BoxInput] = {}
        for p in self.plans:
            m = boxes.get(p.id) or BoxMeasure()
            own = dict(env)
            if sharing > 1:
                own["surplus_w"] = env["surplus_w"] / sharing
            own.update({k.replace(f"E{p.index}.", "E.", 1): v for k, v in env.items()
                        if k.startswith(f"E{p.index}.")})
            wish = math.nan
            if m.connected:
                ma, why = p.rule.milliamps(own)
                if why:
                    self.rule_errors += 1
                    self.log(f"{p.id}: charging rule: {why}; pausing")
                wish = ma / 1000
            inputs[p.id] = BoxInput(m.connected, wish if m.connected else 0.0, max(m.currents))
        return self.manager.step(now, house_a, inputs)
