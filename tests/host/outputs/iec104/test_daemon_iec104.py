"""`gridtap daemon` with [iec104]: the operator's RTU (c104) sees the site's power and commands it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from gridtap.control import gridlimits
from tests.support.daemon import config_text, running_daemon
from tests.support.fakeboard import FakeBoard

c104 = pytest.importorskip("c104", reason="c104 wheels exist for x86-64 only")

from tests.support.iec104 import Rtu  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rtu_reads_power_per_category_and_commands_survive_a_restart(short_tmp: Path) -> None:
    board = FakeBoard(short_tmp)
    board.appear()
    port = free_port()
    text = config_text(board.path, short_tmp / "state") + f"""
[iec104]
port = {port}
report_s = 0.5
time_tags = false
t1 = 3
t2 = 0.5
contract_w = 10000
[iec104.assets]
solar = ["heatpump"]
storage = ["mains.export"]
"""
    with running_daemon(board, text, short_tmp):
        with Rtu(port) as rtu:
            now = int(time.time())
            for i in range(3):
                board.step(now - 3 + i, power_w=[-500.0, 1500.0], var=[0.0, -300.0])
            t = time.monotonic()
            end = t + 5
            while time.monotonic() < end:
                got = {ioa: v for _t, ioa, v, cot in rtu.received if "PERIODIC" in cot and _t > t}
                # Q of the same gauges, -0.3 kvar as a short float (the heat pump leads)
                if got.get(3101) == 1.5 and got.get(3104) == 0.5 and got.get(3201) == pytest.approx(-0.3):
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"reports never showed the site: {rtu.received[-20:]}")
            assert got[3102] == 0.0  # wind: no asset, a good zero
            assert rtu.send(1001, True) and rtu.send(1101, 30.0)
            assert rtu.wait_value(2001, t)[1] is True
        lim = gridlimits.current()
        assert lim.stop_production and lim.export_limit_w == 3000
    gridlimits.publish(gridlimits.GridLimits())  # as a fresh process starts
    (short_tmp / "b2").mkdir()
    board2 = FakeBoard(short_tmp / "b2")
    board2.appear()
    text2 = text.replace(f'port = "{board.path}"', f'port = "{board2.path}"')
    with running_daemon(board2, text2, short_tmp), Rtu(port) as rtu:
        assert rtu.conn.interrogation(common_address=100, cause=c104.Cot.ACTIVATION,
                                      qualifier=c104.Qoi.STATION)
        time.sleep(0.3)
        assert rtu.point(2001).value is True and rtu.point(2101).value == 30.0
        assert gridlimits.current().stop_production
    gridlimits.publish(gridlimits.GridLimits())
