"""Battery policies: turn what gridtap knows (prices, SOC, meters, the clock) into a Decision.

Entry points (used by the daemon and gridtap.control.controller):

* `Policy`: the protocol, ``decide(ctx: ControlContext) -> Decision``. A policy never raises for
  bad or missing data: it returns the safe Decision (`safe_decision`) with the reason.
* `FormulaPolicy`: a policy written in the cFos formula dialect (docs/control.md), compiled once;
  a name that is not known (e.g. a sensor that does not exist) is a `UserError` at load time.
* `formula_names(sensors)`: the meter names a policy may read (``M1.power_w``, ``grid.power_w`` ...),
  each mapped to (sensor name, quantity): the daemon fills `ControlContext.meters` with them.

No price for the current slot means the safe state: no AC charge, no forced discharge, no export
limit, reason "no price known".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.errors import UserError
from gridtap.rules.cfos import HostFunction, compile_rules, date_env, parse_file
from gridtap.rules.core import RuleSet, RuleSetError

NO_PRICE = "no price known"
SAFE_STATE = InverterState()  # no AC charge, no forced discharge, no export limit

#: The targets a policy sets; any other target is a helper variable of the policy itself.
ACTIONS = ("ac_charge", "charge_pct", "forced_discharge", "discharge_pct", "export_limit_w")
#: Meter quantities a policy may read for every sensor.
QUANTITIES = ("power_w", "import_wh", "export_wh")
#: Names every policy may read besides the meters.
BASE_NAMES = (
    "price.now",
    "price.next",
    "price.horizon_h",
    "slot.minutes",
    "soc",
    "soc.age_s",
    "battery.power_w",
    "dt",
    *(
        f"date.{k}"
        for k in (
            "year",
            "month",
            "day",
            "weekday",
            "yearday",
            "hour",
            "minute",
            "second",
            "dayminute",
            "daysecond",
            "dst",
        )
    ),
)


class Policy(Protocol):
    """Anything that decides what the inverter should do now."""

    def decide(self, ctx: ControlContext) -> Decision: ...


def safe_decision(reason: str) -> Decision:
    """The documented safe state, with why it was chosen."""
    return Decision(SAFE_STATE, reason, "safe")


def formula_names(sensors: Iterable[object]) -> dict[str, tuple[str, str]]:
    """Formula name -> (sensor name, quantity): ``M<n>.<q>`` by position (1-based) and ``<name>.<q>``."""
    out: dict[str, tuple[str, str]] = {}
    for n, s in enumerate(sensors, start=1):
        name = str(getattr(s, "name", s))
        for q in QUANTITIES:
            out[f"M{n}.{q}"] = (name, q)
            if name.replace("_", "a").isalnum() and not name[0].isdigit():
                out[f"{name}.{q}"] = (name, q)
    return out


def next_deadline(now: float, dayminute: float, tz: tzinfo | None) -> float:
    """The next local time of day `dayminute` (0..1439) strictly after now, in Unix seconds."""
    dt = datetime.fromtimestamp(now, tz)
    base = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    for days in range(3):
        day = base.replace(tzinfo=None) + timedelta(days=days)
        cand = day.replace(hour=int(dayminute) // 60, minute=int(dayminute) % 60).replace(tzinfo=tz)
        t = cand.timestamp()
        if t > now:
            return t
    raise ValueError(f"no deadline at minute {dayminute}")


class _PriceView:
    """The price functions of one decision: what the formulas' host functions read."""

    def __init__(self) -> None:
        self.ctx: ControlContext | None = None
        self.tz: tzinfo | None = None

    def _run(self, until: float | None = None) -> list[float]:
        ctx = self.ctx
        if ctx is None or ctx.prices is None:
            raise ValueError(NO_PRICE)
        return [s.price for s in ctx.prices.ahead(ctx.now, until)]

    def price(self, args: Sequence[float]) -> float:
        k = int(args[0])
        run = self._run()
        if k < 0 or k != args[0] or k >= len(run):
            raise ValueError(f"no price known {args[0]:g} slots ahead")
        return run[k]

    def _before(self, dayminute: float) -> list[float]:
        if not 0 <= dayminute < 1440:
            raise ValueError(f"deadline must be a minute of the day 0..1439, got {dayminute:g}")
        assert self.ctx is not None
        return self._run(next_deadline(self.ctx.now, dayminute, self.tz))

    def cheapest(self, args: Sequence[float]) -> float:
        n, run = int(args[0]), self._before(args[1])
        return 1.0 if run and sorted(run).index(run[0]) < n else 0.0

    def dearest(self, args: Sequence[float]) -> float:
        n, run = int(args[0]), self._before(args[1])
        return 1.0 if run and sorted(run, reverse=True).index(run[0]) < n else 0.0

    def _hours(self, h: float) -> list[float]:
        if not h > 0:
            raise ValueError(f"hours must be > 0, got {h:g}")
        assert self.ctx is not None
        return self._run(self.ctx.now + h * 3600)

    def functions(self) -> dict[str, HostFunction]:
        return {
            "price": HostFunction(1, 1, self.price),
            "cheapest": HostFunction(2, 2, self.cheapest),
            "dearest": HostFunction(2, 2, self.dearest),
            "min_price": HostFunction(1, 1, lambda a: min(self._hours(a[0]))),
            "max_price": HostFunction(1, 1, lambda a: max(self._hours(a[0]))),
            "avg_price": HostFunction(1, 1, lambda a: math.fsum(r := self._hours(a[0])) / len(r)),
        }


@dataclass(frozen=True)
class _Line:
    target: str
    source: str
    line: int


class FormulaPolicy:
    """A policy in the cFos formula dialect: lines ``target = formula``, actions among ACTIONS."""

    def __init__(
        self, text: str, meter_names: Iterable[str], tz: tzinfo | None = None, where: str = "[control] policy"
    ) -> None:
        self.view = _PriceView()
        self.view.tz = tz
        self.tz = tz
        try:
            lines = [_Line(t, s, n) for t, s, n in parse_file(text)]
            self.rules: RuleSet = compile_rules(
                [(ln.target, ln.source) for ln in lines], functions=self.view.functions()
            )
        except RuleSetError as exc:
            raise UserError(f"{where}: {exc}") from None
        if not any(ln.target in ACTIONS for ln in lines):
            raise UserError(f"{where}: sets none of {', '.join(ACTIONS)}")
        self.meter_names = frozenset(meter_names)
        known = set(BASE_NAMES) | self.meter_names
        for step, ln in zip(self.rules.steps, lines, strict=True):
            for name in step.columns:
                if name not in known:
                    builtin = name.split(".")[0] in ("price", "date", "slot", "soc", "battery")
                    hint = " (no such sensor)" if "." in name and not builtin else ""
                    raise UserError(
                        f"{where} line {ln.line}: unknown name {name!r}{hint}; known: {_known_hint(known)}"
                    )
            known.add(ln.target)

    def env(self, ctx: ControlContext) -> dict[str, float]:
        env: dict[str, float] = dict(date_env(ctx.now, self.tz))
        env.update({k: float(v) for k, v in ctx.meters.items() if k in self.meter_names})
        if ctx.soc_pct is not None:
            env["soc"] = float(ctx.soc_pct)
            env["soc.age_s"] = float(ctx.soc_age_s or 0.0)
        if ctx.battery_w is not None:
            env["battery.power_w"] = float(ctx.battery_w)
        run = ctx.prices.ahead(ctx.now) if ctx.prices is not None else []
        if run:
            env["price.now"] = run[0].price
            env["slot.minutes"] = run[0].length_s / 60
            env["price.horizon_h"] = (run[-1].end - ctx.now) / 3600
            if len(run) > 1:
                env["price.next"] = run[1].price
        return env

    def decide(self, ctx: ControlContext) -> Decision:
        if ctx.prices is None or ctx.prices.at(ctx.now) is None:
            return safe_decision(NO_PRICE)
        self.view.ctx = ctx
        try:
            ev = self.rules.evaluate(self.env(ctx))
        finally:
            self.view.ctx = None
        if ev.errors:
            return safe_decision(f"policy failed: {ev.errors[0]}")
        return _decision(ev.values, ctx)


def _known_hint(known: set[str]) -> str:
    shown = sorted(known)
    return ", ".join(shown[:12]) + (f" and {len(shown) - 12} more" if len(shown) > 12 else "")


def _pct(v: float) -> int:
    return int(min(100, max(0, round(v))))


def _decision(values: Mapping[str, float], ctx: ControlContext) -> Decision:
    limit = values.get("export_limit_w")
    state = InverterState(
        ac_charge=bool(values.get("ac_charge", 0.0)),
        charge_pct=_pct(values.get("charge_pct", 100.0)),
        forced_discharge=bool(values.get("forced_discharge", 0.0)),
        discharge_pct=_pct(values.get("discharge_pct", 100.0)),
        export_limit_w=None if limit is None or limit < 0 else int(round(limit)),
    )
    if state.ac_charge and state.forced_discharge:
        return safe_decision("policy asked for AC charge and forced discharge at once")
    price = values.get("price.now")
    parts = [f"price {price:.4g}" if price is not None else "price ?"]
    if ctx.soc_pct is not None:
        parts.append(f"SOC {ctx.soc_pct:.0f} %")
    parts += [f"{k} = {values[k]:g}" for k in ACTIONS if k in values]
    return Decision(state, "policy: " + ", ".join(parts), "policy")
