"""The grid operator's limits in the battery controller (issue #17): `gridlimits.enforce` picks the battery's
power from the metered grid power; the Controller applies it to the simulated LuxPower inverter at once
(over the dwell), keeps dwell for relaxing, holds while the inverter follows, and assumes the worst
without a reading. The house here is linear (grid = house + battery), the inverter the TCP simulator."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.control.controller import Controller, ControllerSettings
from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.gridlimits import GridLimits, Ratings, battery_power, constrain, enforce
from gridtap.control.luxpower import registers as r
from gridtap.control.luxpower.client import LuxClient
from gridtap_sim.luxpower import Datalogger, Inverter

R = Ratings(3000.0, 3000.0)
DISCHARGE = Decision(InverterState(forced_discharge=True, discharge_pct=100), "price high")
IDLE = Decision(InverterState(), "nothing to do")
CHARGE = Decision(InverterState(ac_charge=True, charge_pct=100), "price low")


def grid_after(d: Decision, house_w: float) -> float:
    return house_w + battery_power(d.state, R)


def test_export_limit_lowers_forced_discharge_then_charges() -> None:
    lim = GridLimits(export_limit_w=2000, reason="MINSETP 20 %")
    # house -500 W (PV surplus), discharging 3 kW: grid -3500 W; the loop leaves 1400 W of discharge
    d = enforce(DISCHARGE, lim, -3500.0, DISCHARGE.state, None, R, 100.0)
    assert d.state.forced_discharge and d.state.discharge_pct == 46  # rounded down: never above
    assert grid_after(d, -500.0) >= -2000.0 + 100.0 - 30.0
    assert "grid operator (MINSETP 20 %): grid -3500 W: forced discharge 46 %" in d.reason
    # house -3000 W: not even idle keeps it inside: the battery takes 1100 W by AC charge
    d = enforce(IDLE, lim, -3000.0, IDLE.state, 0.0, R, 100.0)
    assert d.state.ac_charge and not d.state.forced_discharge and d.state.charge_pct == 37
    assert grid_after(d, -3000.0) >= -1900.0
    # beyond what the battery takes: all it can, and said so
    d = enforce(IDLE, lim, -9000.0, IDLE.state, 0.0, R, 100.0)
    assert d.state.ac_charge and d.state.charge_pct == 100 and "more than the battery can correct" in d.reason


def test_import_limit_lowers_ac_charge_and_stops_keep() -> None:
    lim = GridLimits(import_limit_w=2500)
    d = enforce(CHARGE, lim, 4000.0, CHARGE.state, None, R, 100.0)  # house 1000 W + 3000 W charge
    assert d.state.ac_charge and d.state.charge_pct == 46 and grid_after(d, 1000.0) <= 2400.0
    # the house alone above the limit: the battery discharges to cover it ...
    d = enforce(IDLE, lim, 4000.0, IDLE.state, 0.0, R, 100.0)
    assert d.state.forced_discharge and d.state.discharge_pct == 54
    # ... unless production is stopped: then no forced discharge, whatever the import
    d = enforce(IDLE, replace(lim, stop_production=True), 4000.0, IDLE.state, 0.0, R, 100.0)
    assert not d.state.forced_discharge and not d.state.ac_charge


def test_no_reading_assumes_the_worst_and_inside_changes_nothing() -> None:
    lim = GridLimits(export_limit_w=2000)
    d = enforce(DISCHARGE, lim, None, None, None, R, 100.0)
    assert not d.state.forced_discharge and "no fresh grid reading" in d.reason
    assert enforce(DISCHARGE, lim, 1500.0, DISCHARGE.state, None, R, 100.0) is DISCHARGE  # inside
    assert enforce(DISCHARGE, GridLimits(), -9000.0, None, None, R, 100.0) is DISCHARGE  # no bound


def test_reason_99_without_test_acts_computes_and_does_not_act() -> None:
    lim = GridLimits(export_limit_w=0, test_mode=True, dry_run=True, reason="MINSETP 0 %, REDENP 99")
    d = enforce(DISCHARGE, lim, -3500.0, DISCHARGE.state, None, R, 100.0)
    assert d.state == DISCHARGE.state
    assert "test, not applied: would set grid operator (MINSETP 0 %, REDENP 99)" in d.reason


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([DISCHARGE, IDLE, CHARGE]), st.floats(-8000, 8000), st.integers(0, 9000),
       st.one_of(st.none(), st.integers(0, 9000)), st.booleans(), st.booleans(), st.floats(0.7, 1.3))
def test_the_loop_converges_inside_when_the_battery_can(d: Decision, house: float, export: int,
                                                        imp: int | None, stop_p: bool, stop_c: bool,
                                                        gain: float) -> None:
    """Iterated on a linear house whose battery delivers `gain` x its nominal power (wrong ratings), the
    loop ends inside every limit the battery can reach, never breaking a stop on the way."""
    lim = GridLimits(export_limit_w=export, import_limit_w=imp, stop_production=stop_p,
                     stop_consumption=stop_c)
    low, high = lim.grid_bounds()
    real = Ratings(3000.0 * gain, 3000.0 * gain)
    d = constrain(d, lim)  # what the controller hands enforce
    cur = d.state
    for _ in range(30):
        grid = house + battery_power(cur, real)
        out = enforce(d, lim, grid, cur, None, R, 100.0)
        assert not (stop_p and out.state.forced_discharge) and not (stop_c and out.state.ac_charge)
        if out.state == cur:
            break
        cur = out.state
    grid = house + battery_power(cur, real)
    reach_lo = house + (0.0 if stop_c else real.charge_w)  # the most the battery can raise the grid
    reach_hi = house - (0.0 if stop_p else real.discharge_w)  # the most it can lower it
    if low is not None and reach_lo >= low + 100.0 and (high is None or reach_hi <= high - 100.0):
        assert grid >= low - 31.0 * gain, (grid, cur)  # within a 1 % register step of the margin
    if high is not None and low is None and reach_hi <= high - 100.0:
        assert grid <= high + 31.0 * gain, (grid, cur)


# -- the Controller with the simulated inverter ----------------------------------------------------------

class Fixed:
    def __init__(self, d: Decision) -> None:
        self.d = d

    def decide(self, ctx: ControlContext) -> Decision:
        return self.d


class LinearHouse:
    """grid = house + the battery's power as the simulated inverter runs it (the grid CT's reading)."""

    def __init__(self, inv: Inverter, house_w: float) -> None:
        self.inv, self.house_w, self.t = inv, house_w, 0.0

    def reading(self, name: str) -> tuple[float, float] | None:
        assert name == "grid"
        w = self.inv.wanted_w(0.0)  # the inverter's state now (battery far from its SOC limits)
        return self.house_w + w, self.t


@pytest.fixture
def rig(lux: tuple[Inverter, Datalogger], client: LuxClient) -> tuple[Inverter, Controller, LinearHouse,
                                                                       list[GridLimits]]:
    inv, _dl = lux
    house = LinearHouse(inv, -500.0)
    limits = [GridLimits()]
    ctl = Controller(client, Fixed(DISCHARGE), ControllerSettings(min_dwell_s=300, verify_s=1e9),
                     limits=lambda: limits[0], grid=house.reading)
    return inv, ctl, house, limits


def tick(ctl: Controller, house: LinearHouse, now: float, decide: bool = False) -> None:
    house.t = now  # the reading of this second
    ctl.tick(now, decide)


def test_a_limit_overrides_the_dwell_and_relaxing_keeps_it(rig: tuple[Inverter, Controller, LinearHouse,
                                                                      list[GridLimits]]) -> None:
    inv, ctl, house, limits = rig
    tick(ctl, house, 0.0, decide=True)
    assert inv.hold[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE and inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 100
    limits[0] = GridLimits(export_limit_w=1500, reason="MINSETP", meter="grid")
    tick(ctl, house, 10.0)  # 10 s into a 300 s dwell: taken at once
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 30 and house.reading("grid")[0] >= -1500  # type: ignore[index]
    writes = ctl.status.writes
    for now in range(11, 40):  # inside: no more writes, the state holds
        tick(ctl, house, float(now))
    assert ctl.status.writes == writes
    house.house_w = -1000.0  # more PV: out again, corrected at once
    tick(ctl, house, 40.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 13
    house.house_w = 500.0  # a kettle: the loop could allow more discharge, but relaxing waits for the dwell
    tick(ctl, house, 50.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 13
    tick(ctl, house, 341.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 63
    limits[0] = GridLimits()  # lifted: back to the policy's full discharge, after the dwell
    tick(ctl, house, 342.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 63
    tick(ctl, house, 642.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 100


def test_readings_from_before_the_inverter_followed_are_not_used(
        rig: tuple[Inverter, Controller, LinearHouse, list[GridLimits]]) -> None:
    inv, ctl, house, limits = rig
    tick(ctl, house, 0.0, decide=True)
    limits[0] = GridLimits(export_limit_w=1500, meter="grid")
    tick(ctl, house, 10.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 30
    stale = house.reading  # a reading from second 9, before the write, still showing 3 kW discharge
    ctl.grid = lambda name: (-3500.0, 9.0)
    tick(ctl, house, 11.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 30  # held: not pushed further by an old reading
    ctl.grid = stale
    tick(ctl, house, 13.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 30


def test_a_stop_within_the_hold_acts_at_once(rig: tuple[Inverter, Controller, LinearHouse,
                                                        list[GridLimits]]) -> None:
    inv, ctl, house, limits = rig
    tick(ctl, house, 0.0, decide=True)
    limits[0] = GridLimits(export_limit_w=1500, meter="grid")
    tick(ctl, house, 10.0)
    assert inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 30
    limits[0] = GridLimits(export_limit_w=1500, stop_production=True, meter="grid")
    ctl.grid = lambda name: (-1500.0, 11.0)  # the loop holds after the write at 10 ...
    tick(ctl, house, 11.2)
    assert not inv.hold[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE  # ... but not against a stop


def test_stops_act_at_once_and_no_reading_is_the_worst(
        rig: tuple[Inverter, Controller, LinearHouse, list[GridLimits]]) -> None:
    inv, ctl, house, limits = rig
    tick(ctl, house, 0.0, decide=True)
    limits[0] = GridLimits(stop_production=True, meter="grid")
    tick(ctl, house, 5.0)
    assert not inv.hold[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE
    limits[0] = GridLimits(export_limit_w=3000, meter="missing")  # no such reading: no forced discharge
    ctl.grid = lambda name: None
    tick(ctl, house, 400.0)
    assert not inv.hold[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE
    assert "no fresh grid reading" in ctl.status.reason
    ctl.grid = lambda name: (-3500.0, 390.0)  # 10 s old at 400: still stale at 401
    tick(ctl, house, 401.0)
    assert not inv.hold[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE


def test_test_reason_99_touches_nothing(rig: tuple[Inverter, Controller, LinearHouse,
                                                   list[GridLimits]]) -> None:
    inv, ctl, house, limits = rig
    tick(ctl, house, 0.0, decide=True)
    writes = ctl.status.writes
    limits[0] = GridLimits(stop_production=True, stop_consumption=True, export_limit_w=0, test_mode=True,
                           dry_run=True, reason="REDENP 99", meter="grid")
    for now in range(1, 20):
        tick(ctl, house, float(now))
    assert ctl.status.writes == writes and inv.hold[r.REG_FORCED_DISCHARGE_PCT] == 100
    assert inv.hold[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE


def test_ev_charging_pauses_on_a_stop_of_consumption_but_not_on_a_test_one() -> None:
    from gridtap.control.ev.loadmgr import LoadManager

    limits = [GridLimits(stop_consumption=True)]
    mgr = LoadManager(boxes=[], max_total_current_a=25.0, limits=lambda: limits[0])
    assert mgr._emergency()
    limits[0] = GridLimits(stop_consumption=True, test_mode=True, dry_run=True)
    assert not mgr._emergency()
