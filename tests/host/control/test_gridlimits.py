"""constrain(): the grid operator's limits bound every battery decision."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gridtap.control import gridlimits
from gridtap.control.decision import Decision, InverterState
from gridtap.control.gridlimits import GridLimits, constrain

DISCHARGE = Decision(InverterState(forced_discharge=True, discharge_pct=80), "price peak")
CHARGE = Decision(InverterState(ac_charge=True, charge_pct=50), "cheap slot")


def test_no_limits_change_nothing() -> None:
    assert constrain(DISCHARGE, GridLimits()) is DISCHARGE


def test_stop_production_stops_discharge_and_export() -> None:
    d = constrain(DISCHARGE, GridLimits(stop_production=True, reason="stop_production"))
    assert not d.state.forced_discharge and d.state.export_limit_w == 0
    assert "grid operator (stop_production)" in d.reason and d.reason.startswith("price peak")


def test_stop_consumption_stops_ac_charge() -> None:
    d = constrain(CHARGE, GridLimits(stop_consumption=True))
    assert not d.state.ac_charge and d.state.charge_pct == 50


def test_minsetp_bounds_the_export_limit() -> None:
    assert constrain(DISCHARGE, GridLimits(export_limit_w=3000)).state.export_limit_w == 3000
    tight = Decision(InverterState(export_limit_w=1000), "x")
    assert constrain(tight, GridLimits(export_limit_w=3000)) is tight  # already inside


def test_maxsetp_zero_stops_ac_charge() -> None:
    assert not constrain(CHARGE, GridLimits(import_limit_w=0)).state.ac_charge
    assert constrain(CHARGE, GridLimits(import_limit_w=2000)).state.ac_charge  # the controller's loop


def test_asset_setpoints_cap_discharge_and_charge_power() -> None:
    d = constrain(DISCHARGE, GridLimits(max_production_pct=37.5))
    assert d.state.discharge_pct == 37 and "discharge 37 %" in d.reason
    c = constrain(CHARGE, GridLimits(max_consumption_pct=20.0))
    assert c.state.charge_pct == 20 and c.state.ac_charge
    assert constrain(CHARGE, GridLimits(max_production_pct=0.0)) is CHARGE  # not discharging: untouched


def test_dry_run_keeps_the_decision_and_says_what_it_would_do() -> None:
    d = constrain(DISCHARGE, GridLimits(stop_production=True, test_mode=True, dry_run=True))
    assert d.state == DISCHARGE.state
    assert "test, not applied: would set" in d.reason and "no forced discharge" in d.reason


@given(st.booleans(), st.booleans(), st.booleans(), st.one_of(st.none(), st.integers(0, 20000)),
       st.one_of(st.none(), st.integers(0, 20000)), st.booleans(), st.booleans())
def test_constrained_decisions_obey(ac: bool, fd: bool, stop_p: bool, lim: int | None, own: int | None,
                                    stop_c: bool, dry: bool) -> None:
    d = Decision(InverterState(ac_charge=ac, forced_discharge=fd, export_limit_w=own), "p")
    out = constrain(d, GridLimits(export_limit_w=lim, stop_production=stop_p, stop_consumption=stop_c,
                                  dry_run=dry))
    if dry:
        assert out.state == d.state
        return
    if stop_p:
        assert not out.state.forced_discharge and out.state.export_limit_w == 0
    if lim is not None:
        assert out.state.export_limit_w is not None and out.state.export_limit_w <= lim
    if stop_c:
        assert not out.state.ac_charge
    assert constrain(out, GridLimits(export_limit_w=lim, stop_production=stop_p,
                                     stop_consumption=stop_c)) == out  # idempotent


def test_published_limits_are_read_back() -> None:
    before = gridlimits.current()
    try:
        gridlimits.publish(GridLimits(stop_production=True))
        assert gridlimits.current().stop_production
    finally:
        gridlimits.publish(before)
