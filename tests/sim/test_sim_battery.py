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
from gridtap_sim.engine import Simulation, load_record
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
    """`gridtap sim --luxpower 0` at 19:00 (no PV): the battery first covers the house by itself
    (self-consumption: the grid CT reads about nothing), then a client switches AC charge on mid-run
    and from then on the battery draws its 3 kW on top of the house. The record's `battery_w` is the
    battery's power each second; the grid CT's truth is the house plus it."""
    rec = tmp_path / "run.npz"
    exe = Path(sys.executable).parent / "gridtap"
    proc = subprocess.Popen([str(exe), "sim", "--scenario", "household-pv", "--speed", "10",
                             "--duration", "40", "--seed", "5", "--record", str(rec), "--start", "19:45",
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
            time.sleep(1.5)  # ~15 simulated seconds of self-consumption
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
    grid = arr["e_net_j"][:, 1]  # J per simulated second = mean W; CT2 is the grid connection
    bat = arr["battery_w"]
    assert bat.shape == grid.shape
    k = int(np.argmax(bat >= 2999.0))  # AC charge on: full power from then on
    assert 5 <= k <= 35 and np.all(bat[k:] >= 2999.0)
    house = grid - bat
    assert np.all(house[2:k] > 0)  # the house draws (no PV after sunset)...
    assert np.all(bat[2:k] < 0)  # ...and the battery covers it by itself,
    assert np.allclose(bat[3:k], -house[2:k - 1], rtol=0.005, atol=1.0)  # a second behind, as its CT saw it
    assert float(np.median(np.abs(grid[2:k]))) < 0.1 * float(np.median(house[2:k]))


def _grid_w(start_h: float, inv: Inverter | None, seconds: int = 90) -> tuple[np.ndarray, list[float]]:
    """The household-pv house from start_h o'clock for `seconds`, with the inverter in self-consumption
    (wired as `gridtap sim --luxpower` wires it) or without a battery: grid CT W per second and the
    battery's AC power per second."""
    board = load_board()
    sim = Simulation(board, "household-pv", 11, start_of_day_s=start_h * 3600, adc=False,
                     battery=None if inv is None else inv.ac_power)
    bat: list[float] = []
    if inv is not None:
        inv.clock = lambda: float(sim.next_k)
        inv.t = 0.0
        inv.house_w = lambda t: sim.house_net_w
    grid = sim.scn.ct_names.index("grid")
    for k in range(seconds):
        sim.ensure_second(k)
        bat.append(sim._battery_w)
    return sim.truth.column("e_net")[:, grid], bat


def test_self_consumption_stores_the_noon_surplus() -> None:
    """At noon the 4 kW PV outruns the house: the battery charges from the surplus (never from the
    grid) and the grid CT's export drops by exactly the battery's charge power."""
    inv = Inverter("5555555555", Battery(max_charge_w=3000.0, soc_pct=40.0))
    alone, _ = _grid_w(12.0, None)
    with_bat, bat = _grid_w(12.0, inv)
    assert float(np.mean(alone)) < -1500.0  # exporting without a battery
    charge = np.asarray(bat)
    assert float(np.mean(charge[5:])) > 1000.0 and max(charge) <= 3000.0
    assert np.allclose(with_bat - alone, charge, rtol=0.005, atol=1.0)  # the grid CT sees it
    assert float(np.mean(with_bat[5:])) > float(np.mean(alone[5:])) + 1000.0  # the export drops...
    assert float(np.mean(with_bat[5:])) < 100.0  # ...to about nothing, not into import
    assert inv.battery.soc_pct > 40.0


def test_self_consumption_covers_the_evening_load_down_to_the_floor() -> None:
    """In the evening the battery supplies the house (the grid import drops by its discharge power);
    at its cut-off SOC it stops and the house imports again."""
    inv = Inverter("5555555555", Battery(soc_pct=60.0))
    alone, _ = _grid_w(19.5, None)
    with_bat, bat = _grid_w(19.5, inv)
    dis = -np.asarray(bat)
    assert float(np.mean(alone)) > 100.0  # the house imports without a battery
    assert float(np.mean(dis[5:])) > 100.0 and max(dis) <= 3000.0
    assert np.allclose(alone - with_bat, dis, rtol=0.005, atol=1.0)
    assert abs(float(np.mean(with_bat[5:]))) < 0.2 * float(np.mean(alone[5:]))  # import mostly gone
    assert inv.battery.soc_pct < 60.0
    empty = Inverter("5555555555", Battery(soc_pct=10.0))  # at the 10 % cut-off: nothing to give
    at_floor, bat = _grid_w(19.5, empty, 20)
    assert max(abs(b) for b in bat) == 0.0 and np.allclose(at_floor, alone[:20], atol=1e-6)


def grid_var(model: object, grid: int, t0: float) -> float:
    """Reactive power (var, + lagging): the voltage a quarter period earlier times the current."""
    t = t0 + np.arange(4800) / 4800.0
    _v, i = model.signals(t)  # type: ignore[attr-defined]
    v90, _ = model.signals(t - 0.005, ct=grid)  # type: ignore[attr-defined]
    return float(np.mean(v90 * i[grid]))


def test_the_inverters_reactive_power_shows_on_the_grid_ct() -> None:
    """Registers 59/61 (mode 5 inductive, 4 capacitive; % of the rated power) set the simulated inverter's
    var, which the grid CT sees on top of the house's, with the sign the board measures (+ lagging)."""
    inv = Inverter("5555555555", clock=lambda: 0.0, rated_va=5000.0)
    board = load_board()
    scn = scenarios.build("household-pv", board, seed=3, battery=inv.ac_power, battery_var=inv.q_var)
    model = scenarios.model_for(scn, board, seed=3, adc=False)
    grid = scn.ct_names.index("grid")
    house = grid_var(model, grid, 100.0)
    inv.hold[59], inv.hold[61] = 5, 10
    assert inv.q_var() == 500.0 and abs(grid_var(model, grid, 100.0) - house - 500.0) < 2.0
    inv.hold[59] = 4
    assert abs(grid_var(model, grid, 100.0) - house + 500.0) < 2.0
    inv.hold[61] = 90  # beyond the inverter's 60 %: capped
    assert inv.q_var() == -3000.0
    inv.hold[59] = 2  # a curve mode (Q(P)): not modelled, no var
    assert inv.q_var() == 0.0 and abs(grid_var(model, grid, 100.0) - house) < 1e-6
