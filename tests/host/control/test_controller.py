"""The controller against the simulated inverter: idempotent, verified, no chatter, safe on failure."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.control.controller import SAFE, Controller, ControllerSettings
from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.luxpower import registers as r
from gridtap.control.luxpower.client import LuxClient
from gridtap.control.override import Override
from gridtap.control.schedule import SchedulePolicy, parse_window
from gridtap_sim.luxpower import Datalogger, Inverter

CHARGE = InverterState(ac_charge=True, charge_pct=80)


class Fixed:
    """A policy that says what the test sets."""

    def __init__(self, state: InverterState, source: str = "policy") -> None:
        self.state, self.source = state, source

    def decide(self, ctx: ControlContext) -> Decision:
        return Decision(self.state, "test", self.source)


def test_applies_then_is_idempotent(lux: tuple[Inverter, Datalogger], client: LuxClient,
                                    caplog: pytest.LogCaptureFixture) -> None:
    inv, dl = lux
    ctl = Controller(client, Fixed(CHARGE), ControllerSettings(min_dwell_s=0, verify_s=60))
    with caplog.at_level(logging.INFO, "gridtap.control"):
        ctl.tick(0.0)
    assert inv.hold[r.REG_FUNCTION] == 62292 | r.BIT_AC_CHARGE  # only bit 7 changed
    assert inv.hold[r.REG_AC_CHARGE_PCT] == 80
    assert "AC charge on at 80 %, forced discharge off (policy: test)" in caplog.text
    writes = dl.writes
    ctl.tick(10.0)  # already there: no read, no write
    ctl.tick(100.0)  # verify: read, still no write
    assert dl.writes == writes == ctl.status.writes


def test_read_back_catches_a_write_that_did_not_stick(lux: tuple[Inverter, Datalogger],
                                                      client: LuxClient) -> None:
    inv, dl = lux
    ctl = Controller(client, Fixed(InverterState(ac_charge=True)), ControllerSettings(min_dwell_s=0))
    dl.not_sticking(1)
    ctl.tick(0.0)
    assert ctl.status.error is not None and "did not stick" in ctl.status.error
    assert not inv.hold[r.REG_FUNCTION] & r.BIT_AC_CHARGE
    ctl.tick(1.0)  # retried on the next tick
    assert inv.hold[r.REG_FUNCTION] & r.BIT_AC_CHARGE and ctl.status.error is None


def test_minimum_dwell_and_hysteresis(lux: tuple[Inverter, Datalogger],
                                      client: LuxClient) -> None:
    inv, dl = lux
    pol = Fixed(CHARGE)
    ctl = Controller(client, pol, ControllerSettings(min_dwell_s=300, verify_s=1e9))
    ctl.tick(0.0)
    pol.state = InverterState(ac_charge=True, charge_pct=82)  # within the hysteresis: no write
    ctl.tick(10.0)
    assert inv.hold[r.REG_AC_CHARGE_PCT] == 80
    pol.state = InverterState()
    ctl.tick(100.0)  # too soon after the last change
    assert inv.hold[r.REG_FUNCTION] & r.BIT_AC_CHARGE
    ctl.tick(301.0)
    assert not inv.hold[r.REG_FUNCTION] & r.BIT_AC_CHARGE
    pol.state, pol.source = CHARGE, "override"  # the user is not kept waiting
    ctl.tick(302.0)
    assert inv.hold[r.REG_FUNCTION] & r.BIT_AC_CHARGE


def test_dry_run_writes_nothing(lux: tuple[Inverter, Datalogger], client: LuxClient,
                                caplog: pytest.LogCaptureFixture) -> None:
    inv, dl = lux
    ctl = Controller(client, Fixed(CHARGE), ControllerSettings(dry_run=True))
    with caplog.at_level(logging.INFO, "gridtap.control"):
        ctl.tick(0.0)
    assert dl.writes == 0 and "[dry run] would write register 66 = 80, register 21 = 62420" in caplog.text


def test_rejected_write_leaves_the_safe_state(lux: tuple[Inverter, Datalogger],
                                              client: LuxClient) -> None:
    inv, dl = lux
    inv.hold[r.REG_FUNCTION] |= r.BIT_FORCED_DISCHARGE  # e.g. left on by the app
    dl.reject(r.REG_AC_CHARGE_PCT)
    ctl = Controller(client, Fixed(CHARGE), ControllerSettings(min_dwell_s=0))
    ctl.tick(0.0)
    assert ctl.status.error is not None and "register 66: exception 3" in ctl.status.error
    assert inv.hold[r.REG_FUNCTION] & (r.BIT_AC_CHARGE | r.BIT_FORCED_DISCHARGE) == 0


def test_policy_failure_and_stop_leave_the_safe_state(lux: tuple[Inverter, Datalogger],
                                                      client: LuxClient) -> None:
    inv, _ = lux

    class Broken:
        def decide(self, ctx: ControlContext) -> Decision:
            raise ZeroDivisionError("boom")

    pol = Fixed(InverterState(forced_discharge=True))
    ctl = Controller(client, pol, ControllerSettings(min_dwell_s=0))
    ctl.tick(0.0)
    assert inv.hold[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE
    ctl.policy = Broken()
    ctl.tick(1.0)
    assert ctl.status.wanted == SAFE and ctl.status.source == "safe" and "boom" in ctl.status.reason
    assert not inv.hold[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE
    ctl.policy = Fixed(CHARGE)
    ctl.tick(2.0)
    assert ctl.stop(3.0)
    assert inv.hold[r.REG_FUNCTION] & (r.BIT_AC_CHARGE | r.BIT_FORCED_DISCHARGE) == 0


def test_wrong_serial_halts_control_with_a_clear_error(lux: tuple[Inverter, Datalogger]) -> None:
    from tests.host.control.conftest import DL, FAST
    from tests.host.control.test_luxpower_client import until
    inv, dl = lux
    c = LuxClient("127.0.0.1", dl.port, DL, "9999999999", FAST).start()
    try:
        assert c.wait_connected(5)
        ctl = Controller(c, Fixed(CHARGE), ControllerSettings(min_dwell_s=0))
        ctl.tick(0.0)  # the request for the configured serial goes unanswered (or the pushes named the other)
        until(lambda: c.wrong_serial is not None)
        ctl.tick(1.0)
        assert ctl.halted and "9999999999" in ctl.halted and inv.serial in ctl.halted
        assert dl.writes == 0
    finally:
        c.close()


def test_override_wraps_a_policy(lux: tuple[Inverter, Datalogger],
                                 client: LuxClient) -> None:
    inv, _ = lux
    ov = Override(Fixed(InverterState()), soc_target=60)
    ctl = Controller(client, ov, ControllerSettings(min_dwell_s=1e9))
    ctl.tick(0.0)
    assert not inv.hold[r.REG_FUNCTION] & r.BIT_AC_CHARGE
    ov.set_charge(True)
    ctl.tick(1.0)  # an override does not wait for the dwell time
    assert inv.hold[r.REG_FUNCTION] & r.BIT_AC_CHARGE
    ctx = ControlContext(now=2.0, soc_pct=61.0, soc_age_s=1.0, battery_w=3000.0, prices=None)
    assert not ov.decide(ctx).state.ac_charge
    with pytest.raises(ValueError, match="SOC target 120"):
        ov.set_soc_target(120)


def test_schedule_windows() -> None:
    pol = SchedulePolicy(["23:30-01:00", "13:00-14:00"], soc_max=90, tz="UTC")
    at = lambda h, m, soc=50.0: pol.decide(ControlContext(now=h * 3600 + m * 60, soc_pct=soc,  # noqa: E731
                                                          soc_age_s=0, battery_w=0, prices=None))
    assert at(0, 30).state.ac_charge and at(23, 45).state.ac_charge and at(13, 0).state.ac_charge
    assert not at(1, 0).state.ac_charge and not at(12, 59).state.ac_charge
    assert not at(0, 30, soc=90).state.ac_charge
    for bad in ("25:00-01:00", "01:00-01:00", "1:00-2:00"):
        with pytest.raises(ValueError, match="window"):
            parse_window(bad)


def test_a_charge_window_that_is_not_the_whole_day_is_named(lux: tuple[Inverter, Datalogger],
                                                            client: LuxClient) -> None:
    inv, _ = lux
    inv.hold[r.REG_AC_CHARGE_WINDOWS:r.REG_AC_CHARGE_WINDOWS + 2] = [r.pack_time(1, 0), r.pack_time(4, 30)]
    ctl = Controller(client, Fixed(CHARGE))
    ctl.tick(0.0)
    assert ctl.status.warning is not None and "AC charge window 1 is 01:00-04:30" in ctl.status.warning
    assert "forced discharge" not in ctl.status.warning


class Registers:
    """The simulated inverter's registers without the network (the Link the controller needs)."""

    def __init__(self, inv: Inverter) -> None:
        self.inv = inv

    def read_hold(self, register: int, count: int = 1) -> tuple[int, ...]:
        return tuple(self.inv.hold[register:register + count])

    def write_single(self, register: int, value: int) -> None:
        self.inv.hold[register] = value

    def soc(self) -> tuple[float | None, float | None]:
        return self.inv.battery.soc_pct, 0.0

    def battery_w(self) -> float | None:
        return self.inv.ac_w


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFF), st.booleans(), st.booleans(), st.integers(0, 100))
def test_only_bits_7_and_10_of_register_21_change(reg21: int, ac: bool, dis: bool, pct: int) -> None:
    inv = Inverter()
    inv.hold[r.REG_FUNCTION] = reg21
    want = InverterState(ac_charge=ac, charge_pct=pct, forced_discharge=dis, discharge_pct=pct)
    ctl = Controller(Registers(inv), Fixed(want), ControllerSettings(min_dwell_s=0))
    ctl.tick(0.0)
    mask = r.BIT_AC_CHARGE | r.BIT_FORCED_DISCHARGE
    got = inv.hold[r.REG_FUNCTION]
    assert got & ~mask == reg21 & ~mask
    assert bool(got & r.BIT_AC_CHARGE) == ac and bool(got & r.BIT_FORCED_DISCHARGE) == dis
    assert ctl.status.error is None and ctl.status.actual is not None
    writes = ctl.status.writes
    ctl.tick(1.0)
    ctl.tick(1000.0)  # verified again: still nothing to write
    assert ctl.status.writes == writes


def test_a_shared_slot_is_carried_out_part_by_part_within_the_dwell() -> None:
    """The planner shares a -5 p slot between exporting and charging (export pays 5 p, the battery
    is nearly full); the controller, ticking every minute with a dwell of 5 minutes, switches the
    simulated inverter at the plan's time, and the battery ends the slot where the plan said."""
    from gridtap.control.planner import Battery as PlanBattery
    from gridtap.control.planner import PlannerPolicy, PlannerSettings
    from gridtap.inputs.prices import PriceSeries, PriceSlot
    from gridtap_sim.luxpower import Battery

    t0 = 1796601600.0
    clock = [t0]
    inv = Inverter(battery=Battery(soc_pct=90.0), clock=lambda: clock[0], house_w=lambda t: 0.0)
    prices = PriceSeries([PriceSlot(t0 + i * 1800, t0 + (i + 1) * 1800, p)
                          for i, p in enumerate([-5.0, 20.0, 20.0])], "p/kWh")
    settings = PlannerSettings(PlanBattery(), export_price=5.0, house_load_w=0.0, min_phase_s=300.0)
    plan = PlannerPolicy(settings).plan(prices.slots, 90.0, t0)
    (first, second) = plan.slots[0].phases
    dwell = ControllerSettings(min_dwell_s=300, verify_s=1e9)
    ctl = Controller(Registers(inv), PlannerPolicy(settings), dwell, context=lambda now: {"prices": prices})
    seen: dict[str, list[float]] = {"export": [], "charge": []}
    for minute in range(30):
        clock[0] = t0 + minute * 60
        inv.advance()
        ctl.tick(clock[0])
        reg = inv.hold[r.REG_FUNCTION]
        if reg & r.BIT_FORCED_DISCHARGE:
            seen["export"].append(clock[0])
        if reg & r.BIT_AC_CHARGE:
            seen["charge"].append(clock[0])
    inv.advance(t0 + 1800)
    assert (first.action, second.action) == ("export", "charge")
    assert seen["export"] == [t0 + m * 60 for m in range(int((first.end - t0) // 60))]
    assert seen["charge"] == [t0 + m * 60 for m in range(int((first.end - t0) // 60), 30)]
    assert inv.battery.soc_pct == pytest.approx(plan.slots[0].soc_end, abs=1.0)
    assert ctl.status.writes <= 4  # register 21 twice, the two power % at most once each
