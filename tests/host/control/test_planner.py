"""The planner's DP against exhaustive search and a linear program, and its limits (issue #16)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.control.decision import ControlContext
from gridtap.control.planner import Battery, Plan, PlannerPolicy, PlannerSettings
from gridtap.inputs.prices import PriceSeries, PriceSlot

T0 = 1796601600.0  # 2026-12-07 00:00 UTC


def slots_of(prices: list[float], slot_s: int = 1800) -> list[PriceSlot]:
    return [PriceSlot(T0 + i * slot_s, T0 + (i + 1) * slot_s, p) for i, p in enumerate(prices)]


def by_slot(loads: list[float], slot_s: int = 1800):  # type: ignore[no-untyped-def]
    """A forecast that gives each slot (and each piece of it) its own load."""
    return lambda s, e: loads[int((s - T0) // slot_s)]


def v_end(prices: list[float], eta: float) -> float:
    """The planner's value of a kWh left at the horizon's end (the median price x eta)."""
    return max(0.0, sorted(prices)[len(prices) // 2] * eta)


def objective(plan: Plan, prices: list[float], b: Battery) -> float:
    eta = math.sqrt(b.efficiency)
    return plan.cost - plan.slots[-1].soc_end * b.capacity_kwh / 100.0 * v_end(prices, eta)


def brute_force(prices: list[float], loads_steps: list[int], b: Battery, soc0: int, export: float) -> float:
    """Every sequence of the inverter's moves, SOC in whole %, efficiency 1: the least objective.

    Per slot (the battery's 1 % = `step` kWh, loads in whole steps): any change of -down..+up %,
    except taking only part of a PV surplus (the inverter takes all of it or, in forced discharge
    at 0 %, none), or any time share of two such moves (part of the slot one, the rest the other)
    whose net change is whole %; and the inverter's own self-consumption."""
    step = b.capacity_kwh / 100.0
    up = int(b.charge_kw * 0.25 / step + 1e-9)
    down = int(b.discharge_kw * 0.25 / step + 1e-9)
    lo, hi = math.ceil(b.soc_min), math.floor(b.soc_max)

    def options(p: float, load: int, soc: int) -> dict[int, float]:
        def cost(k: float) -> float:
            grid = (load + k) * step
            return p * grid if grid > 0 else export * grid

        surplus = -load if load < 0 else 0
        valid = [k for k in range(-down, up + 1) if not 0 < k < surplus]
        out = {k: cost(k) for k in valid}
        for k1, k2 in itertools.combinations(valid, 2):
            for k in range(k1 + 1, k2):
                a = (k - k1) / (k2 - k1)
                out[k] = min(out.get(k, math.inf), a * cost(k2) + (1 - a) * cost(k1))
        own = max(-min(load, down, soc - lo), 0) if load > 0 else min(surplus, up, hi - soc)
        out[own] = min(out.get(own, math.inf), cost(own))
        return {k: c for k, c in out.items() if lo <= soc + k <= hi}

    best = math.inf
    stack = [(0, soc0, 0.0)]
    while stack:  # depth first over every sequence
        t, soc, total = stack.pop()
        if t == len(prices):
            best = min(best, total - soc * step * v_end(prices, 1.0))
            continue
        for k, c in options(prices[t], loads_steps[t], soc).items():
            stack.append((t + 1, soc + k, total + c))
    return best


@settings(max_examples=100, deadline=None)
@given(
    prices=st.lists(st.sampled_from([-8.0, -1.0, 0.0, 3.0, 7.5, 12.0, 20.0, 35.0]), min_size=1, max_size=4),
    loads=st.lists(st.integers(-3, 3), min_size=4, max_size=4),
    soc0=st.integers(0, 10),
    export=st.sampled_from([0.0, 2.0, 5.0]),
)
def test_dp_equals_exhaustive_search(prices: list[float], loads: list[int], soc0: int, export: float) -> None:
    # 1.2 kW for a quarter hour = 3 % of a 10 kWh battery per slot, SOC 0..10 %, loads in 1 % steps
    b = Battery(capacity_kwh=10.0, charge_kw=1.2, discharge_kw=1.2, efficiency=1.0, soc_min=0.0,
                soc_max=10.0)
    loads = loads[: len(prices)]
    step_w = 0.1 / 0.25 * 1000.0  # 1 % of the battery in a quarter hour, W
    fc = by_slot([x * step_w for x in loads], 900)
    # parts of 15 s: a quarter hour shared between two moves of -3..3 % is carried out exactly
    pl = PlannerPolicy(PlannerSettings(b, export_price=export, min_phase_s=15.0), forecast=fc)
    plan = pl.plan(slots_of(prices, 900), float(soc0), T0)
    assert objective(plan, prices, b) == pytest.approx(brute_force(prices, loads, b, soc0, export), abs=1e-9)


def lp_bound(prices: list[float], loads_w: list[float], b: Battery, soc0: float, export: float) -> float:
    """The same problem as a linear program with continuous SOC (scipy HiGHS): a lower bound."""
    from scipy.optimize import linprog

    n, h, eta = len(prices), 0.5, math.sqrt(b.efficiency)
    cap, ve = b.capacity_kwh, v_end(prices, eta)
    # variables per slot: c, d (AC kWh in/out), imp, exp, e (kWh at the slot's end)
    nv = 5 * n
    cost = [0.0] * nv
    a_eq, b_eq = [], []
    for t in range(n):
        cost[2 * n + t], cost[3 * n + t] = prices[t], -export
        row = [0.0] * nv
        row[2 * n + t], row[3 * n + t], row[t], row[n + t] = 1.0, -1.0, -1.0, 1.0
        a_eq.append(row)
        b_eq.append(loads_w[t] * h / 1000.0)
        row = [0.0] * nv
        row[4 * n + t], row[t], row[n + t] = 1.0, -eta, 1.0 / eta
        if t:
            row[4 * n + t - 1] = -1.0
        a_eq.append(row)
        b_eq.append(cap * soc0 / 100.0 if t == 0 else 0.0)
    cost[5 * n - 1] -= ve
    bounds = ([(0, b.charge_kw * h)] * n + [(0, b.discharge_kw * h)] * n + [(0, None)] * 2 * n
              + [(cap * b.soc_min / 100.0, cap * b.soc_max / 100.0)] * n)
    res = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    assert res.status == 0
    return float(res.fun)


@settings(max_examples=15, deadline=None)
@given(
    prices=st.lists(st.floats(0, 60), min_size=2, max_size=8),
    loads=st.lists(st.floats(0, 2500), min_size=8, max_size=8),
    soc0=st.floats(10, 100),
    eff=st.floats(0.7, 1.0),
)
def test_dp_is_close_to_the_lp_and_never_beats_it(prices: list[float], loads: list[float], soc0: float,
                                                  eff: float) -> None:
    """House draw only and export paid at 0: the inverter's moves span the LP's, so the DP is the
    LP up to its 1 % grid (at most one step's worth of the dearest price per slot)."""
    b = Battery(capacity_kwh=10.0, charge_kw=3.0, discharge_kw=3.0, efficiency=eff, soc_min=10.0,
                soc_max=100.0)
    loads = loads[: len(prices)]
    plan = PlannerPolicy(PlannerSettings(b), forecast=by_slot(loads)).plan(slots_of(prices), soc0, T0)
    got = objective(plan, prices, b)
    lp = lp_bound(prices, loads, b, soc0, 0.0)
    slack = len(prices) * max(abs(p) for p in prices) * 0.1 / math.sqrt(eff) + 1e-6
    assert lp - 1e-6 <= got <= lp + slack


def test_negative_prices_charge_at_full_power_and_pv_surplus_is_kept_for_them() -> None:
    b = Battery(capacity_kwh=10.0, charge_kw=3.0, discharge_kw=3.0, efficiency=0.9, soc_min=10.0,
                soc_max=100.0)
    # four slots of PV surplus at 10 p (export 5 p), then four at -5 p: fill the battery from the
    # grid when it pays to, not from the sun beforehand
    prices = [10.0] * 4 + [-5.0] * 4 + [30.0] * 4
    loads = [-2000.0] * 4 + [400.0] * 4 + [800.0] * 4
    plan = PlannerPolicy(PlannerSettings(b, export_price=5.0), forecast=by_slot(loads)).plan(
        slots_of(prices), 90.0, T0)
    neg = [s for s in plan.slots if s.price < 0]
    assert {s.action for s in neg} == {"charge"} and neg[0].battery_w == pytest.approx(3000.0, abs=60)
    assert plan.slots[0].action in ("keep", "export")  # room for the negative slots: PV goes out
    assert plan.slots[8].battery_w < 0  # and spent when it is dear (exported too: 5 p beats -5 p)


def test_soc_limits_hold_in_every_slot() -> None:
    b = Battery(capacity_kwh=5.0, charge_kw=4.0, discharge_kw=4.0, efficiency=0.85, soc_min=20.0,
                soc_max=80.0)
    prices = [(-1) ** i * 30.0 + 5 for i in range(24)]
    for load in (-3000.0, 0.0, 2500.0):
        plan = PlannerPolicy(PlannerSettings(b, export_price=10.0, house_load_w=load)).plan(
            slots_of(prices), 50.0, T0)
        for s in plan.slots:
            assert 20.0 - 1e-6 <= s.soc_end <= 80.0 + 1e-6
            assert -4000.0 - 1e-6 <= s.battery_w <= 4000.0 + 1e-6


@pytest.mark.parametrize(("eff", "dear", "cycles"),
                         [(0.5, 15.0, False), (0.5, 25.0, True), (0.95, 11.5, True)])
def test_efficiency_decides_whether_a_cycle_pays(eff: float, dear: float, cycles: bool) -> None:
    b = Battery(capacity_kwh=10.0, charge_kw=3.0, discharge_kw=3.0, efficiency=eff, soc_min=10.0,
                soc_max=100.0)
    prices = [10.0] * 4 + [dear] * 4
    plan = PlannerPolicy(PlannerSettings(b, house_load_w=1500.0)).plan(slots_of(prices), 10.0, T0)
    charged = any(s.action == "charge" for s in plan.slots[:4])
    assert charged is cycles


class Spread:
    """A forecast with the days it learned from: the mean, and what the house drew on each day."""

    def __init__(self, days_w: list[float]) -> None:
        self.days_w = days_w

    def __call__(self, start: float, end: float) -> float:
        return sum(self.days_w) / len(self.days_w)

    def samples(self, start: float, end: float) -> list[float]:
        return self.days_w


def test_the_cost_is_expected_over_the_house_spread_not_taken_at_its_mean() -> None:
    """Import is dear and export cheap: a house that exports 1 kW on one day and draws 3 kW on the
    other costs more than one that draws their mean, 1 kW, every day."""
    still = Battery(charge_kw=0.0, discharge_kw=0.0)  # the battery cannot move: only the house counts
    prices = slots_of([20.0])
    spread = PlannerPolicy(PlannerSettings(still, export_price=5.0), forecast=Spread([-1000.0, 3000.0]))
    mean = PlannerPolicy(PlannerSettings(still, export_price=5.0), forecast=lambda s, e: 1000.0)
    assert mean.plan(prices, 50.0).cost == pytest.approx(0.5 * 1.0 * 20.0)
    assert spread.plan(prices, 50.0).cost == pytest.approx(0.5 * (0.5 * -1.0 * 5.0 + 0.5 * 3.0 * 20.0))
    assert spread.plan(prices, 50.0).slots[0].load_w == pytest.approx(1000.0)


def test_self_consumption_is_weighed_over_the_spread() -> None:
    """The battery covers what the house draws, whatever it is, up to its power: with 1 kW of
    discharge, a day of 3 kW still imports 2 kW at 40, where the mean (1.5 kW) would import 0.5."""
    b = Battery(charge_kw=1.0, discharge_kw=1.0, efficiency=1.0)
    prices = slots_of([40.0])
    plan = PlannerPolicy(PlannerSettings(b, export_price=5.0), forecast=Spread([0.0, 3000.0])).plan(
        prices, 50.0, reference=[20.0])  # what is left is worth 20: nothing is exported at 5
    first = plan.slots[0]
    assert first.action == "discharge"
    assert plan.cost == pytest.approx(0.5 * 0.5 * 2.0 * 40.0)  # half the days import 2 kW for 30 min
    assert first.soc_end == pytest.approx(50.0 - 0.5 * 5.0)  # 0.5 kWh on the day it draws


def test_the_first_slot_is_the_decision_and_keep_is_forced_discharge_at_zero() -> None:
    b = Battery()
    prices = [10.0] * 2 + [-5.0] * 6
    s = PriceSeries(slots_of(prices), "p/kWh")
    pl = PlannerPolicy(PlannerSettings(b, export_price=5.0),
                       forecast=lambda a, e: -2000.0 if a < T0 + 3600 else 0)
    d = pl.decide(ControlContext(now=T0 + 10, soc_pct=10.0, soc_age_s=1.0, battery_w=0.0, prices=s))
    assert d.source == "planner" and "keep" in d.reason
    assert d.state.forced_discharge and d.state.discharge_pct == 0 and not d.state.ac_charge


def test_deciding_within_a_slot_plans_only_what_is_left_of_it() -> None:
    """20 minutes into a 30-minute slot, 3 kW can move 1 kWh at most before the slot ends."""
    b = Battery(capacity_kwh=10.0, charge_kw=3.0, discharge_kw=3.0, efficiency=1.0, soc_min=10.0,
                soc_max=100.0)
    plan = PlannerPolicy(PlannerSettings(b, house_load_w=0.0)).plan(slots_of([-5.0, 40.0]), 10.0, T0 + 1200)
    first = plan.slots[0]
    assert first.start == T0 + 1200 and first.action == "charge"
    assert first.soc_end - first.soc_start == pytest.approx(5.0)  # 3 kW x 10 min = 0.5 kWh = 5 %
    assert first.battery_w == pytest.approx(3000.0)


def test_within_a_slot_the_plan_made_for_it_is_carried_out() -> None:
    """The daemon decides every minute: the plan made when a slot begins is carried out for the
    rest of it (no plan of a remnant of minutes); a new slot, or new settings, plan again."""
    b = Battery(efficiency=1.0)
    s = PriceSeries(slots_of([-5.0, 40.0, 40.0]), "p/kWh")
    asked: list[float] = []

    def forecast(a: float, e: float) -> float:
        asked.append(a)
        return 500.0

    pl = PlannerPolicy(PlannerSettings(b), forecast=forecast)

    def at(t: float, soc: float) -> str:
        d = pl.decide(ControlContext(now=t, soc_pct=soc, soc_age_s=1.0, battery_w=0.0, prices=s))
        assert d.source == "planner"
        return d.reason
    first = at(T0 + 10, 30.0)
    assert "charge" in first and asked
    n = len(asked)
    # 25 minutes on, with 3 minutes left: the same decision, nothing planned again
    assert at(T0 + 1620, 38.0) == first and len(asked) == n
    assert "discharge" in at(T0 + 1800, 90.0) and len(asked) > n  # the next slot: a new plan
    n = len(asked)
    pl.s = PlannerSettings(b, target_soc=95.0, target_dayminute=23 * 60)
    at(T0 + 1900, 90.0)
    assert len(asked) > n  # the user changed the target: planned again at once


def test_a_slot_where_export_earns_more_than_import_costs_is_shared_in_time() -> None:
    """At -5 p import and 5 p export, a nearly full battery earns on both sides: it exports for part
    of the slot and charges for the rest, ending about as full (what the month's LP does within its
    steps). The parts are whole `min_phase_s` (the controller's dwell), the first one the part that
    keeps the SOC within its limits, and the daemon carries out the part under way."""
    b = Battery()
    prices = PriceSeries(slots_of([-5.0, 20.0, 20.0]), "p/kWh")
    pl = PlannerPolicy(PlannerSettings(b, export_price=5.0, house_load_w=0.0))
    plan = pl.plan(prices.slots, 90.0, T0)
    first = plan.slots[0]
    assert first.action == "export/charge" and [p.action for p in first.phases] == ["export", "charge"]
    assert first.phases[0].start == T0 and first.phases[-1].end == T0 + 1800
    assert first.phases[0].end == first.phases[1].start
    assert all((p.end - p.start) % 300 == 0 and p.end - p.start >= 300 for p in first.phases)
    assert first.soc_end <= 100.0 + 1e-9
    # the shared slot earns more than charging to full alone: 1 kWh stored costs 1 / 0.949 kWh at -5 p
    assert plan.cost < -7.0 < 1.0 / math.sqrt(0.9) * -5.0
    at = pl.decide(ControlContext(now=T0, soc_pct=90.0, soc_age_s=1.0, battery_w=0.0, prices=prices))
    assert at.state.forced_discharge and not at.state.ac_charge and "now export" in at.reason
    then = pl.decide(ControlContext(now=T0 + 900, soc_pct=89.0, soc_age_s=1.0,
                                    battery_w=0.0, prices=prices))
    assert then.state.ac_charge and then.state.charge_pct == 100 and "now charge" in then.reason
    # where export earns no more than import costs and import is not paid, a move's cost is convex:
    # nothing is shared (at a negative price the battery's losses are paid for: even then it shares)
    dear = slots_of([2.0, 20.0, 20.0])
    flat = PlannerPolicy(PlannerSettings(b, export_price=2.0, house_load_w=0.0)).plan(dear, 90.0, T0)
    assert all(not s.phases for s in flat.slots)
    # a dwell of 15 minutes: the slot is shared at its middle, or not at all
    slow = PlannerPolicy(PlannerSettings(b, export_price=5.0, house_load_w=0.0, min_phase_s=900.0))
    parts = slow.plan(prices.slots, 90.0, T0).slots[0].phases
    assert all(p.end - p.start == 900 for p in parts)
