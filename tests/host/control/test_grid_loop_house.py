"""The grid operator's limit in closed loop (issue #17): `gridtap daemon` with [inverter] and [iec104] in the
virtual house (tests/support/gridloop.py); the operator's RTU (c104) lowers MINSETP and the metered grid
export comes inside the limit, and comes back inside after a daemon restart (the command persists). The same
for the reactive-power band: Q mode remote with MINSETQ/MAXSETQ brings the grid CT's metered var inside
through the inverter's reactive power; local mode gives the inverter its own setting back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.gridloop import CONTRACT_W, House

c104 = pytest.importorskip("c104", reason="c104 wheels exist for x86-64 only")

from tests.support.iec104 import Rtu  # noqa: E402

MINSETP_PCT = 10.0
SETTLE_GOAL_S = 5.0  # issue #17's goal for iec104.setpoint_settle_s


def test_minsetp_brings_the_metered_export_inside_and_a_restart_keeps_it(short_tmp: Path) -> None:
    limit = CONTRACT_W * MINSETP_PCT / 100.0
    with House(short_tmp) as house:
        with house.daemon() as rig:
            time.sleep(3.0)
            before = [w for _t, w in house.metered[-2:]]
            assert before and max(before) < -limit - 300.0, f"the house exports beyond it first: {before}"
            with Rtu(house.iec104_port) as rtu:
                t = time.time()
                assert rtu.send(1101, MINSETP_PCT)
                settle = house.settled(t, -limit, hold_s=3.0)
            assert settle is not None and settle <= SETTLE_GOAL_S, (settle, house.metered[-15:])
            ctl = next(o for o in rig.daemon.outputs if o.section == "inverter").controller  # type: ignore[attr-defined]
            assert house.inverter.hold[21] & 0x80, "the battery takes the surplus by AC charge"
            assert "grid operator (MINSETP 10 %)" in ctl.status.reason, ctl.status.reason
        # the daemon stopped: the inverter is in its safe state and the house exports again
        time.sleep(2.5)
        assert house.metered[-1][1] < -limit
        with house.daemon():
            t = time.time()
            settle2 = house.settled(t, -limit, hold_s=3.0, timeout=15.0)
            assert settle2 is not None, house.metered[-15:]


MINSETQ_PCT, MAXSETQ_PCT = -2.0, 0.5  # -184 .. +46 var of 9200 VA: the house lags about +95 var
Q_SETTLE_GOAL_S = 10.0


def test_remote_q_mode_keeps_the_metered_var_in_the_band_and_local_restores_the_default(
        short_tmp: Path) -> None:
    low, high = CONTRACT_W * MINSETQ_PCT / 100.0, CONTRACT_W * MAXSETQ_PCT / 100.0
    with House(short_tmp) as house:
        with house.daemon() as rig:
            time.sleep(3.0)
            before = [q for _t, q in house.metered_var[-2:]]
            assert before and min(before) > high + 20.0, f"the house lags above the band first: {before}"
            with Rtu(house.iec104_port) as rtu:
                assert rtu.send(1105, MINSETQ_PCT) and rtu.send(1106, MAXSETQ_PCT)
                time.sleep(2.0)
                assert house.inverter.hold[59] == 0, "a band in local mode changes nothing"
                t = time.time()
                assert rtu.send(1004, c104.Double.ON)  # Q control mode remote
                settle = house.settled_var(t, low, high, hold_s=3.0)
            assert settle is not None and settle <= Q_SETTLE_GOAL_S, (settle, house.metered_var[-15:])
            ctl = next(o for o in rig.daemon.outputs if o.section == "inverter").controller  # type: ignore[attr-defined]
            assert house.inverter.hold[59] == 4, "the inverter supplies var (capacitive)"
            assert "grid operator (Q mode remote, MINSETQ -2 %, MAXSETQ 0.5 %)" in ctl.q.status.reason
        # the daemon stopped: the inverter is back at its own setting (unity PF) and the house lags again
        assert house.inverter.hold[59] == 0
        time.sleep(2.5)
        assert house.metered_var[-1][1] > high
        with house.daemon():  # the remote mode and the band persist: the loop takes the var back inside
            t = time.time()
            settle2 = house.settled_var(t, low, high, hold_s=3.0, timeout=15.0)
            assert settle2 is not None, house.metered_var[-15:]
            with Rtu(house.iec104_port) as rtu:
                t = time.time()
                assert rtu.send(1004, c104.Double.OFF)  # local: the inverter's own setting, at once
                end = time.time() + 3.0
                while house.inverter.hold[59] != 0 and time.time() < end:
                    time.sleep(0.05)
            assert house.inverter.hold[59] == 0
            time.sleep(2.5)
            assert house.metered_var[-1][1] > high, house.metered_var[-5:]
