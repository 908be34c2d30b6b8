"""Formula policies (cFos dialect with price functions), the planner, and the [control] section."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.config import parse_config
from gridtap.control.decision import ControlContext, InverterState
from gridtap.control.planner import Battery, PlannerPolicy, PlannerSettings
from gridtap.control.policy import NO_PRICE, FormulaPolicy, formula_names
from gridtap.errors import UserError
from gridtap.inputs.prices import PriceSeries, PriceSlot
from gridtap.rules.cfos import HostFunction, compile_expression
from gridtap.rules.core import RuleSyntaxError

T0 = 1796601600.0  # 2026-12-07 00:00 UTC (= London local time in winter)
BASE = """\
[board]
port = "/dev/ttyUSB0"

[[sensor]]
name = "grid"
id = "0123456789abcdef0123456789abcdef"
kind = "ct"
channel = 0

[[sensor]]
name = "solar"
id = "1123456789abcdef0123456789abcdef"
kind = "ct"
channel = 1
"""


def series(prices: list[float], slot_s: float = 1800.0, start: float = T0) -> PriceSeries:
    return PriceSeries(
        [PriceSlot(start + i * slot_s, start + (i + 1) * slot_s, p) for i, p in enumerate(prices)]
    )


def ctx(prices: PriceSeries | None, now: float = T0 + 60, soc: float | None = 50.0) -> ControlContext:
    return ControlContext(
        now=now,
        soc_pct=soc,
        soc_age_s=3.0,
        battery_w=0.0,
        prices=prices,
        meters={"M1.power_w": 800.0, "grid.power_w": 800.0, "M2.power_w": -1500.0, "solar.power_w": -1500.0},
    )


def policy(text: str) -> FormulaPolicy:
    return FormulaPolicy(text, formula_names(["grid", "solar"]), None)


def test_no_price_means_the_safe_state() -> None:
    p = policy("ac_charge = price.now < 5")
    for prices in (None, series([]), series([3.0], start=T0 + 3600)):
        d = p.decide(ctx(prices))
        assert d.state == InverterState() and d.reason == NO_PRICE and d.source == "safe"
    planner = PlannerPolicy(PlannerSettings(Battery()))
    assert planner.decide(ctx(None)).reason == NO_PRICE


def test_octolux_rule_and_meters() -> None:
    p = policy("ac_charge = price.now <= 5\nforced_discharge = price.now > 30 && M1.power_w > 500")
    assert p.decide(ctx(series([4.0, 9.0]))).state == InverterState(ac_charge=True)
    assert p.decide(ctx(series([5.5]))).state == InverterState()
    d = p.decide(ctx(series([31.0])))
    assert d.state.forced_discharge and not d.state.ac_charge and "forced_discharge = 1" in d.reason


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-20, 60), min_size=2, max_size=48),
    st.integers(1, 6),
    st.integers(0, 1439),
)
def test_cheapest_matches_brute_force(prices: list[int], n: int, deadline: int) -> None:
    s = series([float(p) for p in prices])
    c = ctx(s)
    got = policy(f"ac_charge = cheapest({n}, {deadline})").decide(c).state.ac_charge
    end = T0 + deadline * 60 if deadline * 60 > 60 else T0 + 86400 + deadline * 60
    window = [sl.price for sl in s.slots if sl.start < end]
    rank = sorted(window).index(window[0])
    assert got == (rank < n)


def test_price_functions_and_runtime_errors_are_safe() -> None:
    s = series([10.0, 2.0, 30.0, -4.0])
    p = policy(
        "x = price(1) + price(3)\nac_charge = x < 0 && min_price(2) == -4 && max_price(0.5) == 10\n"
        "charge_pct = avg_price(2) * 2"
    )
    d = p.decide(ctx(s))
    assert d.state == InverterState(ac_charge=True, charge_pct=19)  # avg 9.5 * 2
    d = policy("ac_charge = price(9) < 0").decide(ctx(s))
    assert d.source == "safe" and "no price known 9 slots ahead" in d.reason
    d = policy("ac_charge = soc < 50").decide(ctx(s, soc=None))
    assert d.source == "safe" and "soc has no value" in d.reason
    d = policy("ac_charge = 1\nforced_discharge = 1").decide(ctx(s))
    assert d.source == "safe" and "at once" in d.reason
    d = policy("export_limit_w = price.now < 0 ? 0 : -1").decide(ctx(series([-1.0])))
    assert d.state.export_limit_w == 0


def test_unknown_names_are_load_errors() -> None:
    with pytest.raises(UserError, match=r"line 2: unknown name 'M3.power_w' \(no such sensor\)"):
        policy("cheap = price.now < 5\nac_charge = cheap && M3.power_w > 0")
    with pytest.raises(UserError, match="unknown function 'cheapst'"):
        policy("ac_charge = cheapst(2, 420)")
    with pytest.raises(UserError, match="sets none of"):
        policy("x = 1")


def test_policy_with_unknown_sensor_names_its_gridtap_toml_line() -> None:
    text = (
        BASE
        + '\n[control]\nmode = "policy"\npolicy = """\ncheap = price.now < 5\n'
        + 'ac_charge = house.power_w > 0\n"""\n'
    )
    line = text.splitlines().index("ac_charge = house.power_w > 0") + 1
    with pytest.raises(
        UserError, match=rf"gridtap.toml line {line}: \[control\] policy: unknown name 'house.power_w'"
    ):
        parse_config(text)
    ok = parse_config(text.replace("house.power_w", "solar.power_w"))
    assert ok.sections["control"].mode == "policy"


@pytest.mark.parametrize(
    "section, why",
    [
        ('[control]\nmode = "magic"\n', "key 'mode': must be one of planner, policy"),
        ("[control]\ntarget_soc = 80\n", "target_soc and target_time go together"),
        ('[control]\ntarget_soc = 80\ntarget_time = "7:61"\n', "key 'target_time': expected HH:MM"),
        ("[control.battery]\nefficiency = 1.5\n", "key 'battery.efficiency': expected a number 0.5..1"),
        ('[prices]\ntariff = "E-1R-AGILE-24-10-01-Z"\n', "key 'tariff': unknown Octopus tariff code"),
        ('[prices]\nsource = "entsoe"\nzone = "BE"\n', "key 'zone': expected a bidding zone"),
        ('[prices]\nsource = "entsoe"\nzone = "10YBE----------2"\nformula = "price *"\n', "key 'formula'"),
    ],
)
def test_section_errors_name_key_and_line(section: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDTAP_ENTSOE_TOKEN", "t0ken")
    with pytest.raises(UserError, match=r"gridtap.toml line \d+: ") as exc:
        parse_config(BASE + "\n" + section)
    assert why in str(exc.value)


def test_host_function_arity_is_checked_when_compiling() -> None:
    fns = {"f": HostFunction(2, 2, lambda a: a[0] - a[1])}
    fn, _ = compile_expression("f(5, 2) * 2", fns)
    assert fn({}) == 6.0
    with pytest.raises(RuleSyntaxError, match=r"f\(\) takes 2 arguments, got 1"):
        compile_expression("f(1)", fns)
    with pytest.raises(RuleSyntaxError, match="unknown function 'f'"):
        compile_expression("f(1, 2)")


# ---- the planner -------------------------------------------------------------------------------

BATT = Battery(
    capacity_kwh=10.0, charge_kw=3.0, discharge_kw=3.0, efficiency=0.9, soc_min=10.0, soc_max=100.0
)


def test_planner_reaches_target_in_the_cheapest_slots_within_limits() -> None:
    prices = [20.0] * 14 + [3.0, 2.0, 1.0, 4.0] + [25.0] * 6  # 00:00..12:00, deadline 07:00 = slot 14
    s = series(prices)
    pl = PlannerPolicy(PlannerSettings(BATT, target_soc=60.0, target_dayminute=9 * 60, house_load_w=0.0))
    plan = pl.plan(s.ahead(T0), 20.0, T0)
    assert plan.target_met
    at_deadline = plan.slots[17].soc_end
    assert at_deadline >= 60.0
    charged = [i for i, sl in enumerate(plan.slots) if sl.battery_w > 0]
    assert set(charged) <= {14, 15, 16, 17}
    for sl in plan.slots:
        assert 10.0 <= sl.soc_end <= 100.0
        assert -3000.0 - 1e-6 <= sl.battery_w <= 3000.0 + 1e-6
    d = pl.decide(ctx(s, now=T0 + 14 * 1800 + 5, soc=plan.slots[14].soc_start))
    assert d.state.ac_charge and d.state.charge_pct > 50 and d.source == "planner"


def test_planner_target_unreachable_gets_as_close_as_it_can() -> None:
    s = series([10.0] * 4)
    plan = PlannerPolicy(
        PlannerSettings(BATT, target_soc=100.0, target_dayminute=120, house_load_w=0.0)
    ).plan(s.ahead(T0), 10.0, T0)
    assert not plan.target_met and plan.slots[3].soc_end == pytest.approx(10 + 4 * 14)


def test_planner_arbitrage_exports_only_when_it_pays() -> None:
    s = series([5.0] * 4 + [40.0] * 2 + [20.0] * 4)
    pays = PlannerPolicy(PlannerSettings(BATT, export_price=30.0, house_load_w=500.0)).plan(
        s.ahead(T0), 10.0, T0
    )
    assert [sl.action for sl in pays.slots[:4]] == ["charge"] * 4
    assert pays.slots[4].action == "export" and pays.slots[5].action == "export"
    nope = PlannerPolicy(PlannerSettings(BATT, export_price=0.0, house_load_w=500.0)).plan(
        s.ahead(T0), 10.0, T0
    )
    assert all(sl.action != "export" for sl in nope.slots)
    assert nope.slots[4].action == "discharge"  # covers the house in the dear slot


def test_planner_matches_exhaustive_search_on_small_cases() -> None:
    small = Battery(
        capacity_kwh=10.0, charge_kw=1.2, discharge_kw=1.2, efficiency=1.0, soc_min=0.0, soc_max=10.0
    )
    prices = [7.0, -2.0, 12.0, 3.0, 15.0]
    s = series(prices)
    pl = PlannerPolicy(PlannerSettings(small, export_price=1.0, house_load_w=400.0))
    plan = pl.plan(s.ahead(T0), 0.0, T0)
    best = math.inf
    # each slot may move SOC by -6..+6 % (1.2 kW for 0.5 h of a 10 kWh battery), SOC 0..10 %
    v_end = sorted(prices)[len(prices) // 2]  # the planner's value of energy left at the end (median)
    for ks in itertools.product(range(-6, 7), repeat=len(prices)):
        soc, cost = 0, 0.0
        for k, p in zip(ks, prices, strict=True):
            soc += k
            if not 0 <= soc <= 10:
                break
            grid = 0.2 + k * 0.1
            cost += p * grid if grid > 0 else 1.0 * grid
        else:
            best = min(best, cost - max(0.0, v_end) * soc * 0.1)
    got = plan.cost - max(0.0, v_end) * plan.slots[-1].soc_end * 0.1
    assert got == pytest.approx(best, abs=1e-9)


def test_plan_96_quarter_hours_is_fast() -> None:
    s = series([20 + 15 * math.sin(i / 8) for i in range(96)], slot_s=900)
    pl = PlannerPolicy(PlannerSettings(BATT, target_soc=90.0, target_dayminute=7 * 60))
    t = time.perf_counter()
    plan = pl.plan(s.ahead(T0), 30.0, T0)
    assert len(plan.slots) == 96 and (time.perf_counter() - t) < 2.0
