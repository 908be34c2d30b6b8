"""The grid operator's reactive-power band (issue #17, Q mode remote, MINSETQ/MAXSETQ): `reactive.wanted_pct`
picks the inverter's reactive % from the grid CT's var; the Controller applies it to the simulated LuxPower
inverter (registers 59/61) with read-back, at once when the band is broken and after the dwell when
relaxing, and returns to the inverter's own setting in local mode, without a reading, on a refused
write and at stop. The house here is linear (grid var = house var + the inverter's var)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.control.controller import Controller, ControllerSettings
from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.gridlimits import GridLimits
from gridtap.control.luxpower import registers as r
from gridtap.control.luxpower.client import LuxClient
from gridtap.control.reactive import inverter_var, pct_of, registers_for, wanted_pct
from gridtap.outputs.iec104.netflex import DPI_REMOTE, CommandedState, ModelConfig, limits_of
from gridtap_sim.luxpower import Datalogger, Inverter

RATED = 3600.0
BAND = GridLimits(q_remote=True, q_low_var=-184, q_high_var=46, q_reason="Q mode remote, MINSETQ -2 %",
                  meter="grid")


def test_the_band_from_the_netflex_setpoints_like_the_p_limits() -> None:
    s = CommandedState()
    cfg = ModelConfig(contract_w=9200, grid_sensor="grid")
    assert limits_of(s, cfg).q_bounds() == (None, None)  # local: the inverter's own setting
    s.setpoints |= {"MINSETQ": -2.0, "MAXSETQ": 0.5}
    assert limits_of(s, cfg).q_bounds() == (None, None)  # a band without remote mode binds nothing
    s.q_mode = DPI_REMOTE
    lim = limits_of(s, cfg)
    assert lim.q_bounds() == (-184.0, 46.0) and lim.q_reason == "Q mode remote, MINSETQ -2 %, MAXSETQ 0.5 %"
    assert not lim.dry_run
    s.setpoints |= {"MINSETQ": -100.0, "MAXSETQ": 100.0}
    assert limits_of(s, cfg).q_bounds() == (None, None)  # the whole range: open at both ends
    s.setpoints["REDENQ"] = 99.0
    assert limits_of(s, cfg).dry_run and limits_of(s, ModelConfig(test_acts=True)).test_mode
    assert not limits_of(s, ModelConfig(test_acts=True)).dry_run


def test_wanted_pct_is_the_smallest_that_keeps_the_band() -> None:
    # the house lags 95 var, above the 46 var bound: 3 % capacitive (108 var) puts it at -13 var
    assert wanted_pct(BAND, 95.0, None, RATED, 50.0) == (-3, False)
    assert wanted_pct(BAND, 95.0 - 108.0, -3, RATED, 50.0) == (-3, False)  # there: the same
    assert wanted_pct(BAND, -400.0, None, RATED, 50.0) == (8, False)  # below -184: 288 var inductive
    assert wanted_pct(BAND, -50.0, None, RATED, 50.0) == (0, False)  # inside: unity
    assert wanted_pct(BAND, 5000.0, None, RATED, 50.0) == (-60, True)  # beyond the inverter's 60 %
    narrow = GridLimits(q_remote=True, q_low_var=0, q_high_var=40)  # narrower than the margins: its middle
    assert wanted_pct(narrow, 200.0, None, RATED, 50.0) == (-5, False)
    assert wanted_pct(GridLimits(), 5000.0, None, RATED, 50.0) == (0, False)  # local: nothing


def test_registers_of_a_reactive_pct() -> None:
    own = (2, 7)  # the user's Q(P) curve
    assert registers_for(None, own) == own
    assert registers_for(0, own) == (r.Q_UNITY, 7)
    assert registers_for(12, own) == (r.Q_INDUCTIVE, 12) and registers_for(-12, own) == (r.Q_CAPACITIVE, 12)
    assert pct_of(r.Q_CAPACITIVE, 12) == -12 and pct_of(r.Q_INDUCTIVE, 3) == 3 and pct_of(2, 7) is None


@settings(max_examples=200, deadline=None)
@given(st.floats(-2500, 2500), st.integers(-60, 60), st.integers(0, 60), st.floats(0.7, 1.3))
def test_the_loop_converges_inside_when_the_inverter_can(house: float, low_pct: int, width_pct: int,
                                                         gain: float) -> None:
    """Iterated on a linear house whose inverter delivers `gain` x its rated var (a wrong rating), the loop
    ends inside the band whenever the inverter's 60 % can reach it."""
    low, high = low_pct * 20, low_pct * 20 + width_pct * 20 + 120  # at least 120 var wide
    lim = GridLimits(q_remote=True, q_low_var=low, q_high_var=high)
    cur: int | None = None
    for _ in range(30):
        grid = house + inverter_var(cur, RATED * gain)
        pct, _short = wanted_pct(lim, grid, cur, RATED, 30.0)
        if pct == cur:
            break
        cur = pct
    grid = house + inverter_var(cur, RATED * gain)
    reach = 0.6 * RATED * gain
    if house - reach <= low + 30.0 and house + reach >= high - 30.0:
        assert low - 1.0 <= grid <= high + 1.0, (grid, cur)


# -- the Controller with the simulated inverter ----------------------------------------------------------

class Idle:
    def decide(self, ctx: ControlContext) -> Decision:
        return Decision(InverterState(), "nothing to do")


class LinearHouse:
    """grid var = the house's + the simulated inverter's reactive power (the grid CT's reading)."""

    def __init__(self, inv: Inverter, house_var: float) -> None:
        self.inv, self.house_var, self.t = inv, house_var, 0.0

    def reading(self, name: str) -> tuple[float, float] | None:
        assert name == "grid"
        return self.house_var + self.inv.q_var(), self.t


Rig = tuple[Inverter, Datalogger, Controller, LinearHouse, list[GridLimits]]


@pytest.fixture
def rig(lux: tuple[Inverter, Datalogger], client: LuxClient) -> Rig:
    inv, dl = lux
    house = LinearHouse(inv, 95.0)
    limits = [GridLimits()]
    ctl = Controller(client, Idle(), ControllerSettings(min_dwell_s=300, verify_s=1e9),
                     limits=lambda: limits[0], grid=lambda name: None, grid_var=house.reading)
    return inv, dl, ctl, house, limits


def tick(ctl: Controller, house: LinearHouse, now: float) -> None:
    house.t = now  # the reading of this second
    ctl.tick(now, decide=True)


def test_remote_band_acts_at_once_holds_inside_and_local_restores_the_own_setting(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    inv, dl, ctl, house, limits = rig
    inv.hold[r.REG_REACTIVE_MODE], inv.hold[r.REG_REACTIVE_PCT] = 2, 7  # the user's own Q(P) setting
    tick(ctl, house, 0.0)  # the active-power side reads its registers once (verify_s is long)
    requests = dl.requests
    tick(ctl, house, 1.0)
    assert dl.requests == requests and ctl.q.own is None, "local from the start: 59..61 never read"
    limits[0] = BAND
    with caplog.at_level(logging.INFO, "gridtap.control"):
        tick(ctl, house, 10.0)
    assert (inv.hold[r.REG_REACTIVE_MODE], inv.hold[r.REG_REACTIVE_PCT]) == (r.Q_CAPACITIVE, 3)
    assert -184 <= house.reading("grid")[0] <= 46  # type: ignore[index]
    assert "reactive power 3 % capacitive (grid operator (Q mode remote, MINSETQ -2 %): grid +95 var)" \
        in caplog.text
    writes = ctl.q.status.writes
    assert writes == 2 and ctl.q.own == (2, 7)
    for now in range(11, 40):  # inside: no more writes (and no reads: nothing due)
        tick(ctl, house, float(now))
    assert ctl.q.status.writes == writes
    house.house_var = 120.0  # a little more: still well inside (+12 var), the hysteresis holds
    tick(ctl, house, 39.0)
    assert inv.hold[r.REG_REACTIVE_PCT] == 3
    house.house_var = 160.0  # a motor starts: +52 var, beyond the bound: corrected at once
    tick(ctl, house, 40.0)
    assert inv.hold[r.REG_REACTIVE_PCT] == 5
    house.house_var = 100.0  # it slows: 3 % would do, but relaxing waits for the dwell
    tick(ctl, house, 50.0)
    assert inv.hold[r.REG_REACTIVE_PCT] == 5
    tick(ctl, house, 341.0)
    assert inv.hold[r.REG_REACTIVE_PCT] == 3
    house.house_var = -60.0  # it stops: 3 % capacitive takes the grid below -184 var: unity at once
    tick(ctl, house, 342.0)  # read 1 s after the last write: the inverter may not show it yet, held
    assert inv.hold[r.REG_REACTIVE_PCT] == 3
    tick(ctl, house, 344.0)
    assert inv.hold[r.REG_REACTIVE_MODE] == r.Q_UNITY
    limits[0] = GridLimits(meter="grid")  # Q mode local: the own setting back at once
    tick(ctl, house, 345.0)
    assert (inv.hold[r.REG_REACTIVE_MODE], inv.hold[r.REG_REACTIVE_PCT]) == (2, 7)
    assert ctl.q.own is None  # the registers are the user's again: no more reads
    requests = dl.requests
    tick(ctl, house, 700.0)
    assert dl.requests == requests


def test_no_fresh_var_reading_is_the_own_setting(rig: Rig) -> None:
    inv, _dl, ctl, house, limits = rig
    limits[0] = BAND
    tick(ctl, house, 10.0)
    assert inv.hold[r.REG_REACTIVE_MODE] == r.Q_CAPACITIVE
    ctl.grid_var = lambda name: (95.0, 10.0)  # the board stopped reporting at 10
    tick(ctl, house, 21.0)
    assert inv.hold[r.REG_REACTIVE_MODE] == r.Q_UNITY, "the factory setting, unity power factor"
    assert "no fresh var reading" in ctl.q.status.reason
    ctl.grid_var = house.reading  # it is back: the band again, at once
    tick(ctl, house, 22.0)
    assert inv.hold[r.REG_REACTIVE_MODE] == r.Q_CAPACITIVE


def test_test_reason_99_writes_nothing(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    inv, dl, ctl, house, limits = rig
    limits[0] = GridLimits(q_remote=True, q_low_var=-184, q_high_var=46, test_mode=True, dry_run=True,
                           q_reason="Q mode remote, REDENQ 99", meter="grid")
    with caplog.at_level(logging.INFO, "gridtap.control"):
        for now in range(1, 10):
            tick(ctl, house, float(now))
    assert ctl.q.status.writes == 0 and inv.hold[r.REG_REACTIVE_MODE] == r.Q_UNITY
    assert caplog.text.count("test, not applied: would set reactive power 3 % capacitive") == 1


def test_a_write_that_does_not_stick_is_retried_and_a_refused_one_restores(rig: Rig) -> None:
    inv, dl, ctl, house, limits = rig
    limits[0] = BAND
    dl.not_sticking(1)
    tick(ctl, house, 10.0)
    assert "did not stick" in (ctl.q.status.error or "") and ctl.q.status.failures == 1
    tick(ctl, house, 11.0)  # the next tick tries again
    assert (inv.hold[r.REG_REACTIVE_MODE], inv.hold[r.REG_REACTIVE_PCT]) == (r.Q_CAPACITIVE, 3)
    assert ctl.q.status.error is None
    house.house_var = 300.0
    dl.reject(r.REG_REACTIVE_PCT)  # the inverter refuses the new amount: back to its own setting
    tick(ctl, house, 12.0)
    assert inv.hold[r.REG_REACTIVE_MODE] == r.Q_UNITY and "exception 3" in (ctl.q.status.error or "")


def test_stop_restores_the_own_setting_and_a_leftover_is_taken_as_unity(rig: Rig) -> None:
    inv, _dl, ctl, house, limits = rig
    inv.hold[r.REG_REACTIVE_MODE], inv.hold[r.REG_REACTIVE_PCT] = r.Q_INDUCTIVE, 20  # a killed daemon's
    limits[0] = BAND
    tick(ctl, house, 10.0)
    assert ctl.q.own == (r.Q_UNITY, 20)
    assert inv.hold[r.REG_REACTIVE_MODE] == r.Q_CAPACITIVE
    assert ctl.stop(20.0)
    assert inv.hold[r.REG_REACTIVE_MODE] == r.Q_UNITY


def test_rated_kva_is_checked() -> None:
    from gridtap.control.luxpower.config import parse_config
    from gridtap.errors import UserError

    base = {"host": "127.0.0.1", "datalogger_serial": "2222222222", "inverter_serial": "5555555555"}
    assert parse_config(base).control.rated_va == 3600.0
    assert parse_config({**base, "rated_kva": 5}).control.rated_va == 5000.0
    with pytest.raises(UserError, match="rated_kva"):
        parse_config({**base, "rated_kva": 0})
