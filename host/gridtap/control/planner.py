"""The built-in planner: the lowest-cost use of the battery over the known prices.

Dynamic programming over (slot, state of charge in 1 % steps): for every known slot from now to
the end of the price horizon it picks the battery energy change that minimises

    sum over slots of  price * import - export_price * export

where import/export follow from the net house load of the slot (load - PV, from a `Forecast`,
gridtap.control.forecast, or the flat `house_load_w`) plus the battery's AC power,
within the battery's limits: capacity, charge and discharge power (AC side), round-trip
efficiency (split evenly between charging and discharging), SOC min/max. So it charges in cheap
slots (from the grid or from PV surplus), holds the energy through middling slots and spends it
in the dear ones, and exports only when that pays at `export_price`.

The cost of a move is its expected cost over the house's spread, not its cost at the mean: a
forecast with `samples(start, end)` (ProfileForecast: what the house drew in the slot's quarter
hours on each day learned) is weighed as SPREAD quantile groups. Import and export are priced
apart, so a move that is right for the mean load imports (dear) or exports (cheap) when the
house departs from it; self-consumption, which follows the house, is weighed by each group's own
cost and next SOC. It is better on most houses of the bench's profile and worse on the bench's
own (docs/control.md, "Benchmark": `control.savings_vs_optimum_pct.houses_mean` against
`control.savings_vs_optimum_pct`).

An optional target ("X % by HH:MM") is a hard goal: each missing % costs far more than any
price, so when it cannot be reached the plan gets as close as the limits allow. Energy left at
the end of the horizon is valued at what it saves when it covers the house in a typical slot
later: the median price x the discharge efficiency, the median taken over the known prices from
REF_S (12 h) ago to the horizon's end (`decide`; `plan` without `reference`: the horizon's own).
Before the next day's prices are published the horizon may be a few evening or night slots, whose
median says little about a typical slot: with the last 12 h too, `make bench` measured 94.6 %
against 92.7 % (3 or 6 h: the same; 24 h: 94.4 %). So the plan does not dump energy at
the horizon's edge, and buying to hold it at the edge never pays (the cheap quarter's mean /
efficiency, used before, measured 91.4 % against 92.6 % in `make bench`, area control).

The moves are the inverter's own, so a plan is one it can carry out: self-consumption (the
battery covers the house or takes the PV surplus, exactly: its next state may fall between grid
points, valued by linear interpolation of the value row), AC charge at k % per slot (never less
than the PV surplus, which the inverter takes whole), hold (AC charge at 0 %), keep (forced
discharge at 0 %: the PV surplus goes to the grid, room is kept) and forced discharge at k %,
or two of them shared in time within a slot where that costs less than any one held throughout
(`_time_shares`: a price below export_price or below zero makes a move's cost concave; the DP
takes the hull, and the forward pass picks what the inverter can carry out: each move held
throughout, or a share in parts of whole `min_phase_s`, the controller's dwell).
On those moves with whole-% steps the DP is exact (tests/host/control/test_planner.py checks it
against exhaustive search, and against an LP); pure Python: the backward pass keeps one value row
per slot (slots x states floats) and takes each state's minimum with `min(map(add, ...))` over
the reachable states, the forward pass picks the move from the actual (continuous) SOC. A plan
made within a slot moves only what is left of it.

The plan's first slot becomes the Decision (LuxPower semantics: without AC charge or forced
discharge the inverter covers the house from the battery and charges it from PV surplus):

* charge from the grid -> AC charge at the planned power (% of charge_kw; also where PV would
  do it, when the price is at most export_price);
* keep the battery for later while the house draws -> AC charge at 0 % ("hold");
* keep room while PV exports -> forced discharge at 0 % ("keep");
* discharge more than the house draws, or during PV surplus -> forced discharge at the planned power;
* anything else -> the inverter's own self-consumption (no AC charge, no forced discharge).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from operator import add

from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.policy import NO_PRICE, next_deadline, safe_decision
from gridtap.inputs.prices.series import PriceSlot

SHORTFALL_COST = 1e6  # per % below the target at the deadline: dominates any price
REF_S = 12 * 3600.0  # the prices of this much past (and all known ahead) value the energy left at the end
TIE = 1e-9  # moves whose costs differ by less are equal: the smaller move wins (fewer cycles)
SPREAD = 5  # the house's spread around the forecast is weighed as this many loads (quantile groups)
Forecast = Callable[[float, float], float]  # (slot start, slot end) -> expected net house load W
# per slot: the house loads ((weight, kWh), ...), price, most charge kWh, most discharge kWh
Own = tuple[tuple[tuple[float, float], ...], float, float, float]


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
    min_phase_s: float = 300.0  # the shortest part of a split slot: the controller's min_dwell_s


@dataclass(frozen=True)
class PlanPhase:
    """Part of a split slot: one move held from start to end."""

    start: float
    end: float
    battery_w: float
    action: str


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
    action: str  # "charge", "hold", "discharge", "export", "idle"; a split slot: "charge/export"
    phases: tuple[PlanPhase, ...] = ()  # a split slot's parts, in order (none: one move)


@dataclass(frozen=True)
class Plan:
    slots: tuple[PlanSlot, ...]
    cost: float  # over the plan, in the price unit x kWh
    target_met: bool
    ms: float  # time to compute


@dataclass(frozen=True)
class _Grid:
    """The DP's problem: states lo..hi %, per slot the cost of each move -down..+up states."""

    lo: int
    hi: int
    step: float  # kWh per state
    eta: float  # one-way efficiency
    loads: list[float]  # W per slot
    moves: list[tuple[int, list[float]]]  # per slot: (down, the DP's cost of move k at index k + down)
    plain: list[list[float]]  # per slot: each move's cost held for the whole slot (index k + down)
    shares: list[list[tuple[int, int]]]  # per slot: pairs of moves a time share of which beats both
    own: list[Own]  # per slot: the house's loads (weight, kWh), price, charge kWh, discharge kWh
    export_price: float
    terminal: list[float]  # value of each state at the horizon's end
    due: int | None  # slots that end by the deadline
    target: int | None  # % at the deadline

    @property
    def n(self) -> int:
        return self.hi - self.lo + 1


class PlannerPolicy:
    """The planner as a `Policy`."""

    def __init__(
        self, settings: PlannerSettings, tz: tzinfo | None = None, forecast: Forecast | None = None
    ) -> None:
        self.s = settings
        self.tz = tz
        self.forecast = forecast
        self._kept: tuple[Plan, PlannerSettings] | None = None  # the plan of the slot under way

    def decide(self, ctx: ControlContext) -> Decision:
        if ctx.prices is None or ctx.prices.at(ctx.now) is None:
            return safe_decision(NO_PRICE)
        if ctx.soc_pct is None:
            return safe_decision("state of charge unknown")
        kept = self._kept
        if kept is not None and kept[1] == self.s and kept[0].slots \
                and kept[0].slots[0].start <= ctx.now < kept[0].slots[0].end - 1e-6:
            # within the slot the plan was made for: carry it out rather than plan what is left of
            # it again, which moves a remnant of minutes in coarse whole-% steps (re-planning every
            # quarter hour measured 91.2 % in `make bench`, carrying the plan out 92.7 %)
            return to_decision(kept[0], self.s, ctx.now)
        ref = [sl.price for sl in ctx.prices.window(ctx.now - REF_S, float("inf")).slots]
        plan = self.plan(ctx.prices.ahead(ctx.now), ctx.soc_pct, ctx.now, ref)
        self._kept = (plan, self.s)
        return to_decision(plan, self.s, ctx.now)

    def load_w(self, slot: PriceSlot) -> float:
        return self.forecast(slot.start, slot.end) if self.forecast else self.s.house_load_w

    def spread_w(self, slot: PriceSlot, load_w: float) -> list[tuple[float, float]]:
        """The loads (weight, W) the house may draw in the slot: the forecast's samples (what it drew
        in those quarter hours on the days learned) in SPREAD quantile groups; the forecast alone
        when it has none."""
        samples = getattr(self.forecast, "samples", None)
        vals = sorted(samples(slot.start, slot.end)) if samples is not None else []
        if not vals:
            return [(1.0, load_w)]
        n, k = len(vals), min(SPREAD, len(vals))
        return [((b - a) / n, sum(vals[a:b]) / (b - a))
                for a, b in ((j * n // k, (j + 1) * n // k) for j in range(k))]

    def deadline_index(self, slots: Sequence[PriceSlot], now: float) -> int | None:
        """Number of slots that end by the next target time (None: no target, or beyond the horizon)."""
        if self.s.target_soc is None or self.s.target_dayminute is None:
            return None
        due = next_deadline(now, self.s.target_dayminute, self.tz)
        for i, sl in enumerate(slots):
            if sl.end >= due:
                return i + 1
        return None

    def plan(self, slots: Sequence[PriceSlot], soc_pct: float, now: float | None = None,
             reference: Sequence[float] | None = None) -> Plan:
        t0 = time.perf_counter()
        now = slots[0].start if now is None and slots else (now or 0.0)
        if slots and slots[0].start < now < slots[0].end - 60.0:
            # deciding within a slot: only what is left of it can still be moved
            slots = [PriceSlot(now, slots[0].end, slots[0].price), *slots[1:]]
        grid = self._grid(slots, now, reference)
        values = _backward(grid)
        return self._rollout(slots, grid, values, soc_pct, t0)

    def _grid(self, slots: Sequence[PriceSlot], now: float,
              reference: Sequence[float] | None = None) -> _Grid:
        b = self.s.battery
        lo, hi = math.ceil(b.soc_min), math.floor(b.soc_max)
        step = b.capacity_kwh / 100.0  # kWh per %
        eta = math.sqrt(b.efficiency)
        loads = [self.load_w(s) for s in slots]
        moves = []
        plain: list[list[float]] = []
        shares: list[list[tuple[int, int]]] = []
        own: list[Own] = []
        for sl, load in zip(slots, loads, strict=True):
            hours = sl.length_s / 3600.0
            up = int(b.charge_kw * hours * eta / step + 1e-9)
            down = int(b.discharge_kw * hours / eta / step + 1e-9)
            load_kwh = load * hours / 1000.0
            # the expected cost over the house's spread: import and export are priced apart, so a
            # move that is right for the mean load may import (dear) or export (cheap) when the
            # house draws more or less; the mean alone cannot see that
            spread = tuple((w, x * hours / 1000.0) for w, x in self.spread_w(sl, load))
            # with PV surplus the inverter takes it all (self-consumption, AC charge) or none of it
            # (forced discharge): charging less than the surplus is no move it can make
            least = -load_kwh * eta / step - 0.5 if load_kwh < 0 else 0.0
            costs = [math.inf if 0 < k < least
                     else sum(w * self._slot_cost(k * step, x, sl.price, eta) for w, x in spread)
                     for k in range(-down, up + 1)]
            hull, pairs = _time_shares(costs, down)
            moves.append((down, hull))
            plain.append(costs)
            shares.append(pairs)
            own.append((spread, sl.price, b.charge_kw * hours, b.discharge_kw * hours))
        ordered = sorted(reference or [s.price for s in slots])
        v_end = max(0.0, ordered[len(ordered) // 2] * eta) if slots else 0.0
        terminal = [-(lo + i) * step * v_end for i in range(hi - lo + 1)]
        target = None if self.s.target_soc is None else min(hi, max(lo, round(self.s.target_soc)))
        return _Grid(lo, hi, step, eta, loads, moves, plain, shares, own, self.s.export_price, terminal,
                     self.deadline_index(slots, now), target)

    def _slot_cost(self, delta_kwh: float, load_kwh: float, price: float, eta: float) -> float:
        grid = load_kwh + (delta_kwh / eta if delta_kwh > 0 else delta_kwh * eta)
        return price * grid if grid > 0 else self.s.export_price * grid

    def _rollout(
        self, slots: Sequence[PriceSlot], g: _Grid, values: list[list[float]], soc_pct: float, t0: float
    ) -> Plan:
        x = min(float(g.n - 1), max(0.0, soc_pct - g.lo))  # the state, continuous
        out: list[PlanSlot] = []
        total, met = 0.0, True
        for t, sl in enumerate(slots):
            nxt = _with_target(g, values[t + 1], t)
            # what the inverter can carry out: one move held throughout (the DP's hull costs only
            # differ from those where a share is cheaper), or a share in whole parts
            k, cost, x1, v = _best_move(g, t, nxt, x, g.plain[t])
            parts = [] if k is OWN else [(1.0, k)]
            if g.shares[t]:
                k, cost, x1, parts = self._best_share(g, t, nxt, x, sl.length_s, (k, cost, x1, parts), v)
            hours = sl.length_s / 3600.0
            bat_kwh = _ac_kwh(g, x, x1)
            total += cost
            bat_w = bat_kwh / hours * 1000.0
            step_w = g.step / hours * 1000.0
            cheap = sl.price <= self.s.export_price
            phases = self._phases(g, t, sl, parts, x, step_w, cheap) if len(parts) > 1 else ()
            action = ("/".join(p.action for p in phases) if phases
                      else _action(k, g.loads[t], bat_w, x > 0.5, step_w, cheap))
            out.append(PlanSlot(sl.start, sl.end, sl.price, g.loads[t], bat_w,
                                g.loads[t] + bat_w, g.lo + x, g.lo + x1, action, phases))
            x = x1
            if g.due is not None and g.target is not None and t + 1 == g.due and g.lo + x < g.target - 1e-6:
                met = False
        return Plan(tuple(out), total, met, (time.perf_counter() - t0) * 1000.0)

    @staticmethod
    def _phases(g: _Grid, t: int, sl: PriceSlot, parts: list[tuple[float, int]], x: float, step_w: float,
                cheap: bool) -> tuple[PlanPhase, ...]:
        """A shared slot's parts, each one move held at its own power."""
        hours = sl.length_s / 3600.0
        at, out = sl.start, []
        for i, (a, k) in enumerate(parts):
            w = _ac_kwh(g, 0.0, float(k)) / hours * 1000.0
            end = sl.end if i == len(parts) - 1 else at + a * sl.length_s
            out.append(PlanPhase(at, end, w, _action(k, g.loads[t], w, x > 0.5, step_w, cheap)))
            at, x = end, x + a * k
        return tuple(out)

    def _best_share(self, g: _Grid, t: int, nxt: list[float], x: float, length_s: float,
                    best: tuple[int | None, float, float, list[tuple[float, int]]],
                    best_v: float) -> tuple[int | None, float, float, list[tuple[float, int]]]:
        """`best` (of value `best_v`), or a time share of two moves in slot t that the inverter can
        carry out and that reaches less: parts of whole `min_phase_s` (the DP's hull assumes any
        share), the first part the one that keeps the SOC within its limits. (k, cost, next state,
        parts); k of a share is its larger move (the parts say what to do)."""
        down, plain = g.moves[t][0], g.plain[t]
        top = g.n - 1 + 1e-9
        m = max(1, int(length_s / max(1.0, self.s.min_phase_s) + 1e-9))
        for k1, k2 in g.shares[t]:
            for j in range(1, m):
                a = j / m
                y = x + a * k2 + (1.0 - a) * k1
                if not -1e-9 <= y <= top:
                    continue
                cost = a * plain[k2 + down] + (1.0 - a) * plain[k1 + down]
                v = cost + _at(nxt, y)
                if v < best_v - TIE:
                    parts = [(a, k2), (1.0 - a, k1)] if x + a * k2 <= top else [(1.0 - a, k1), (a, k2)]
                    best, best_v = (k2, cost, min(float(g.n - 1), max(0.0, y)), parts), v
        return best


def _time_shares(costs: list[float], down: int) -> tuple[list[float], list[tuple[int, int]]]:
    """The least cost of each move when the slot may be shared in time between two moves: the lower
    convex hull of (move, cost). Where export earns more than import costs (a price below
    export_price), or import is paid for (a negative price: the battery's losses earn), a move's
    cost is concave, and charging for part of the slot and exporting for the rest beats holding one
    power; the perfect-foresight LP of `make bench` does the same within its steps. Returns the
    hull's costs and the pairs of moves (hull vertices) between which it lies below the moves' own."""
    pts = [(k - down, c) for k, c in enumerate(costs) if c < math.inf]
    hull: list[tuple[int, float]] = []
    for p in pts:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
    out, pairs = list(costs), []
    for (k1, c1), (k2, c2) in zip(hull, hull[1:], strict=False):
        below = False
        for k in range(k1 + 1, k2):
            c = c1 + (c2 - c1) * (k - k1) / (k2 - k1)
            if c < costs[k + down] - 1e-12:
                out[k + down], below = c, True
        if below:
            pairs.append((k1, k2))
    return out, pairs


def _cross(o: tuple[int, float], a: tuple[int, float], b: tuple[int, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _with_target(g: _Grid, row: list[float], t: int) -> list[float]:
    """The value of each state at the end of slot t (`row`), with the deadline's shortfall cost."""
    if g.due is not None and g.target is not None and t + 1 == g.due:
        return [v + max(0, g.target - (g.lo + j)) * SHORTFALL_COST for j, v in enumerate(row)]
    return row


def _ac_kwh(g: _Grid, x0: float, x1: float) -> float:
    """The battery's AC energy (+ charging) that moves it from state x0 to x1."""
    d = (x1 - x0) * g.step
    return d / g.eta if d > 0 else d * g.eta


def _own(g: _Grid, t: int, x: float, nxt: list[float]) -> tuple[float, float, float]:
    """The inverter's self-consumption from state x in slot t, over the house's spread: (expected
    cost, expected next state, expected cost-to-go with `nxt`)."""
    spread, price, cmax, dmax = g.own[t]
    cost = x1 = v = 0.0
    for w, load in spread:
        c, y = _own_one(g, load, price, cmax, dmax, x)
        cost, x1, v = cost + w * c, x1 + w * y, v + w * (c + _at(nxt, y))
    return cost, x1, v


def _own_one(g: _Grid, load: float, price: float, cmax: float, dmax: float, x: float) -> tuple[float, float]:
    """Self-consumption from state x for one house load (kWh): (cost, next state). The battery
    covers the house's draw or takes the PV surplus, as far as its power and room allow: exact, so
    the plan does not pay for rounding the house load to whole percent."""
    if load > 0:
        ac = -min(load, dmax, x * g.step * g.eta)
        x1 = x + ac / g.eta / g.step
    else:
        ac = min(-load, cmax, (g.n - 1 - x) * g.step / g.eta)
        x1 = x + ac * g.eta / g.step
    grid = load + ac
    return (price * grid if grid > 0 else g.export_price * grid), min(float(g.n - 1), max(0.0, x1))


def _at(row: list[float], x: float) -> float:
    """The value row at a state between grid points (linear)."""
    j = min(int(x), len(row) - 2)
    if j < 0:
        return row[0]
    f = x - j
    return row[j] * (1.0 - f) + row[j + 1] * f


def _backward(g: _Grid) -> list[list[float]]:
    """values[t][i]: the least cost from the start of slot t in state i to the horizon's end."""
    n = g.n
    values: list[list[float]] = [g.terminal]  # from the horizon's end backwards
    for t in range(len(g.moves) - 1, -1, -1):
        down, costs = g.moves[t]
        up = len(costs) - 1 - down
        nxt = _with_target(g, values[-1], t)
        row = []
        for i in range(n):
            kmin, kmax = max(-down, -i), min(up, n - 1 - i)
            row.append(min(map(add, costs[kmin + down:kmax + down + 1], nxt[i + kmin:i + kmax + 1])))
        values.append(list(map(min, row, _own_row(g, t, nxt))))
    values.reverse()
    return values


def _own_row(g: _Grid, t: int, nxt: list[float]) -> list[float]:
    """Self-consumption's expected cost-to-go from every state, over the house's spread."""
    spread, price, cmax, dmax = g.own[t]
    if len(spread) == 1:  # a forecast without samples: the mean alone
        return _own_row_one(g, spread[0][1], price, cmax, dmax, nxt)
    out = [0.0] * g.n
    for w, load in spread:
        row = _own_row_one(g, load, price, cmax, dmax, nxt)
        out = [a + w * r for a, r in zip(out, row, strict=True)]
    return out


def _own_row_one(g: _Grid, load: float, price: float, cmax: float, dmax: float,
                 nxt: list[float]) -> list[float]:
    """Self-consumption's cost-to-go from every state for one house load (what `_own_one` + `_at`
    give, state by state): away from the SOC limits the battery moves by the same `shift` states
    from each, so one list comprehension interpolates them all."""
    n = g.n
    if load > 0:
        ac = min(load, dmax)
        shift = -ac / g.eta / g.step
        first, last = math.ceil(-shift - 1e-9), n - 1  # states with the full ac available
    else:
        ac = -min(-load, cmax)
        shift = -ac * g.eta / g.step
        first, last = 0, math.floor(n - 1 - shift + 1e-9)
    grid = load - ac
    cost = price * grid if grid > 0 else g.export_price * grid
    fl = math.floor(shift)
    f = shift - fl
    first, last = max(first, -fl), min(last, n - 1 - fl - (1 if f >= 1e-12 else 0))  # inside the row
    out = [0.0] * n
    if first <= last:
        a, b = first + fl, last + fl + 1
        if f < 1e-12:
            out[first:last + 1] = [cost + v for v in nxt[a:b]]
        else:
            out[first:last + 1] = [cost + v * (1.0 - f) + w * f for v, w in zip(nxt[a:b], nxt[a + 1:b + 1],
                                                                            strict=True)]
    for i in (*range(0, min(first, n)), *range(max(last + 1, first), n)):  # near a limit
        c, x1 = _own_one(g, load, price, cmax, dmax, float(i))
        out[i] = c + _at(nxt, x1)
    return out


OWN = None  # _best_move's answer for the inverter's self-consumption


def _best_move(g: _Grid, t: int, nxt: list[float], x: float,
               costs: list[float]) -> tuple[int | None, float, float, float]:
    """The move from state x held for all of slot t (`costs`: each one's, index k + down) that
    reaches the least cost: (k or OWN, the slot's cost, next state, cost with the rest).
    Self-consumption wins a tie, then the smallest move (fewer writes, fewer cycles)."""
    down = g.moves[t][0]
    up = len(costs) - 1 - down
    c, x1, best_v = _own(g, t, x, nxt)
    best: tuple[int | None, float, float] = (OWN, c, x1)
    for k in sorted(range(-down, up + 1), key=abs):
        if not 0.0 <= x + k <= g.n - 1 + 1e-9:
            continue
        v = costs[k + down] + _at(nxt, x + k)
        if v < best_v - TIE:
            best, best_v = (k, costs[k + down], min(float(g.n - 1), x + k)), v
    return (*best, best_v)


def _action(k: int | None, load_w: float, battery_w: float, above_min: bool, step_w: float,
            cheap: bool = False) -> str:
    """What the inverter must be told; `step_w` (1 % of the battery in this slot) absorbs the plan's
    rounding to whole percent, so a plan that just covers the house is not read as an export.
    `cheap`: the price is at most what export earns, so charging is told as AC charge even where
    the PV surplus would do it: if the sun falls short of the forecast, the grid makes up for it."""
    if k is OWN:
        if battery_w > step_w / 2 and cheap:
            return "charge"
        return "discharge" if battery_w < 0 else "idle"
    if k > 0:
        # PV surplus charges by itself
        return "charge" if battery_w > max(0.0, -load_w) + step_w / 2 or cheap else "idle"
    if k == 0:
        if load_w < -step_w / 2:
            return "keep"  # leave the PV surplus to the grid: room for a cheaper (negative) slot
        return "hold" if load_w > 0 and above_min else "idle"
    # covering only part of the house is left to the inverter's self-consumption: forcing a fixed
    # power on a forecast load would export (cheaply) whenever the house draws less than forecast.
    # With PV surplus self-consumption would charge: any discharge there is a forced one.
    if load_w < -step_w / 2 or -battery_w > max(0.0, load_w) + step_w:
        return "export"
    return "discharge"


def to_decision(plan: Plan, s: PlannerSettings, now: float | None = None) -> Decision:
    """The inverter settings for the plan's first slot (for a split slot: the part under way at `now`)."""
    if not plan.slots:
        return safe_decision(NO_PRICE)
    first = plan.slots[0]
    action, battery_w = first.action, first.battery_w
    if first.phases:
        at = first.start if now is None else now
        ph = next((p for p in first.phases if at < p.end - 1e-6), first.phases[-1])
        action, battery_w = ph.action, ph.battery_w
    b = s.battery
    why = (
        f"price {first.price:.4g}, house {first.load_w:.0f} W expected, SOC {first.soc_start:.0f} -> "
        f"{first.soc_end:.0f} %, {first.action}"
    )
    if first.phases:
        why += f" (now {action})"
    if s.target_soc is not None:
        why += f", target {s.target_soc:.0f} %{'' if plan.target_met else ' (not reachable)'}"
    step_w = b.capacity_kwh * 10.0 / ((first.end - first.start) / 3600.0)  # 1 % of the battery, W
    if action == "charge":
        # within 1 % of the battery of full power is full power (the plan moves in whole %)
        full = battery_w >= b.charge_kw * 1000.0 - step_w
        pct = 100 if full else min(100, math.ceil(battery_w / (b.charge_kw * 1000.0) * 100 - 1e-6))
        return Decision(InverterState(ac_charge=True, charge_pct=pct), why, "planner")
    if action == "hold":
        return Decision(InverterState(ac_charge=True, charge_pct=0), why, "planner")
    if action == "keep":
        return Decision(InverterState(forced_discharge=True, discharge_pct=0), why, "planner")
    if action == "export":
        pct = min(100, math.ceil(-battery_w / (b.discharge_kw * 1000.0) * 100 - 1e-6))
        return Decision(InverterState(forced_discharge=True, discharge_pct=pct), why, "planner")
    return Decision(InverterState(), why, "planner")
