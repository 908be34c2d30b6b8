"""The grid operator's limit in closed loop (issue #17): `gridtap daemon` with [inverter] and [iec104] in the
virtual house (tests/support/gridloop.py); the operator's RTU (c104) lowers MINSETP and the metered grid
export comes inside the limit, and comes back inside after a daemon restart (the command persists)."""

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
