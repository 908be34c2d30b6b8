"""Closed loop: the controller switches the simulated LuxPower inverter, the virtual house's grid CT
sees the battery's charge power."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gridtap.control.controller import Controller, ControllerSettings
from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.luxpower.client import LinkSettings, LuxClient
from gridtap_sim import scenarios
from gridtap_sim.board import load_board
from gridtap_sim.engine import load_record
from gridtap_sim.luxpower import Battery, Datalogger, Inverter

ECHO_FW = Path(__file__).resolve().parents[1] / "support" / "simfw" / "echo_fw.py"


class Charge:
    def __init__(self) -> None:
        self.on = False

    def decide(self, ctx: ControlContext) -> Decision:
        return Decision(InverterState(ac_charge=self.on, charge_pct=50), "test", "override")


def grid_power_w(model: object, grid: int, t0: float) -> float:
    t = t0 + np.arange(4800) / 4800.0  # one second, a whole number of mains cycles
    v, i = model.signals(t)  # type: ignore[attr-defined]
    return float(np.mean(v * i[grid]))


def test_ac_charge_shows_on_the_grid_ct() -> None:
    clock = [0.0]
    inv = Inverter("5555555555", Battery(max_charge_w=3000.0, soc_pct=40.0), clock=lambda: clock[0])
    board = load_board()
    scn = scenarios.build("household-pv", board, seed=3, battery=inv.ac_power)
    model = scenarios.model_for(scn, board, seed=3, adc=False)
    grid = scn.ct_names.index("grid")
    before = grid_power_w(model, grid, 100.0)
    with Datalogger(inv, "2222222222", heartbeat_s=5, push_s=5) as dl:
        c = LuxClient("127.0.0.1", dl.port, "2222222222", inv.serial, LinkSettings(reply_timeout_s=2)).start()
        try:
            assert c.wait_connected(5)
            pol = Charge()
            ctl = Controller(c, pol, ControllerSettings(min_dwell_s=0))
            pol.on = True
            ctl.tick(0.0)
            assert ctl.status.error is None
            charging = grid_power_w(model, grid, 100.0)  # the same second of the same house
            clock[0] = 1800.0  # half an hour of charging at 1.5 kW
            soc_after = inv.ac_power() and inv.battery.soc_pct
            pol.on = False
            ctl.tick(1.0)
            after = grid_power_w(model, grid, 100.0)
        finally:
            c.close()
    assert abs((charging - before) - 1500.0) < 1.0  # 50 % of 3 kW
    assert abs(after - before) < 1e-6
    # 750 Wh into 10 kWh at sqrt(0.9) efficiency
    assert abs(soc_after - (40.0 + 7.5 * 0.9 ** 0.5)) < 0.01


def test_gridtap_sim_luxpower_closed_loop(tmp_path: Path) -> None:
    """`gridtap sim --luxpower 0`: a client switches AC charge on mid-run; the recorded truth of the
    grid CT (CT2 in household-pv) rises by the battery's 3 kW from then on (the PV and kitchen CTs,
    which the battery does not cross, are taken out so the kettle and hob cannot look like it)."""
    rec = tmp_path / "run.npz"
    exe = Path(sys.executable).parent / "gridtap"
    proc = subprocess.Popen([str(exe), "sim", "--scenario", "household-pv", "--speed", "10",
                             "--duration", "40", "--seed", "5", "--record", str(rec),
                             "--firmware", str(ECHO_FW), "--fw-log", str(tmp_path / "fw.log"),
                             "--luxpower", "0", "--battery", "10:3:40"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = b""
        for _ in range(20):
            line = proc.stderr.readline()
            if line.startswith(b"luxpower: "):
                break
        m = re.match(rb"luxpower: 127\.0\.0\.1:(\d+) datalogger (\w+) inverter (\w+)", line)
        assert m, line
        c = LuxClient("127.0.0.1", int(m[1]), m[2].decode(), m[3].decode(), LinkSettings(reply_timeout_s=2))
        c.start()
        try:
            assert c.wait_connected(5)
            time.sleep(1.5)  # ~15 simulated seconds without the battery
            reg = c.read_hold(21)[0]
            c.write_single(21, reg | 0x80)
        finally:
            c.close()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    _, arr = load_record(rec)
    e = arr["e_net_j"]  # J per simulated second = mean W, CT1 PV inverter, CT2 grid, CT3 kitchen
    grid = e[:, 1] - e[:, 0] - e[:, 2]  # the grid without PV and kitchen: no other step near 3 kW
    steps = np.diff(grid)
    k = int(np.argmax(steps))
    assert 5 <= k <= 35
    assert abs(float(np.median(grid[k + 2:k + 5]) - np.median(grid[k - 4:k - 1])) - 3000.0) < 400.0
