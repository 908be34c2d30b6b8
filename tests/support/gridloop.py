"""The virtual house for the grid operator's closed loop (issue #17): `gridtap daemon` with [inverter] and
[iec104], the simulated LuxPower battery, and gridtap_sim's household-pv house metered onto a fake board.

    with House(tmp) as house, house.daemon():
        with Rtu(house.iec104_port) as rtu:
            t = time.time(); rtu.send(1101, 20.0)     # MINSETP 20 % of 9200 W
            settled = house.settled(t, -1840.0)       # seconds until the metered export is inside

What runs: the household-pv scenario's model (its PV inverter, loads and mains, seeded; simulated second 0
is 12:00, PV near its 4 kW peak) with the simulated LuxPower inverter's battery as a load on its grid CT
(gridtap_sim.model.battery); a feeder thread computes, at every wall second T, the mean power of the
pv, grid and kitchen CTs over the second before (from the model's exact V and I, the battery's power as
it is at T) and sends it on a FakeBoard (the board protocol on a pty) stamped T. The daemon therefore
meters what the house does, one reading a second, as from a real board, and its controller talks to the
inverter over the LuxPower TCP protocol. The board's metrology is not in the loop (the HIL campaigns
score it); time is wall time, as the daemon's and the c104 client's.

The simulated inverter idles outside AC charge and forced discharge (no self-consumption callback): the
PV surplus is exported until the controller makes the battery take it.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gridtap.control import gridlimits
from gridtap_sim import scenarios
from gridtap_sim.board import load_board
from gridtap_sim.luxpower import Battery, Datalogger, Inverter
from tests.support.daemon import Rig, running_daemon
from tests.support.fakeboard import FakeBoard

DL, INV = "2222222222", "5555555555"
CONTRACT_W = 9200
SENSORS = (("pv", "e1"), ("grid", "e2"), ("kitchen", "e3"))  # CT1..CT3 of household-pv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class House:
    def __init__(self, tmp: Path, seed: int = 3, soc_pct: float = 40.0, min_dwell_s: float = 300.0) -> None:
        self.tmp = tmp
        self.inverter = Inverter(INV, Battery(max_charge_w=3000.0, max_discharge_w=3000.0, soc_pct=soc_pct),
                                 clock=time.time)
        self.logger = Datalogger(self.inverter, DL, heartbeat_s=5.0, push_s=2.0)
        board = load_board()
        scn = scenarios.build("household-pv", board, seed=seed, start_of_day_s=12 * 3600.0,
                              battery=self.inverter.ac_power, battery_var=self.inverter.q_var)
        self.model = scenarios.model_for(scn, board, seed=seed, adc=False)
        self.cts = [scn.ct_names.index(n) for n in ("pv-inverter", "grid", "kitchen")]
        self.iec104_port = free_port()
        self.min_dwell_s = min_dwell_s
        self.metered: list[tuple[int, float]] = []  # (T, grid W, + import) as sent to the board
        self.metered_var: list[tuple[int, float]] = []  # (T, grid var, + lagging) as sent to the board
        self.boards = 0
        self.board = self._new_board()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="house", daemon=True)
        self._t0 = time.time()

    def __enter__(self) -> House:
        self.logger.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.logger.close()
        self.board.close()
        gridlimits.publish(gridlimits.GridLimits())  # the module's cell outlives the daemon in this process

    def _new_board(self) -> FakeBoard:
        self.boards += 1
        d = self.tmp / f"board{self.boards}"
        d.mkdir()
        board = FakeBoard(d)
        board.appear()
        return board

    # -- metering ----------------------------------------------------------------------------------
    def powers(self, sim_t: float) -> tuple[list[float], list[float]]:
        """Mean power (W) and reactive power (var, + lagging) of the pv, grid and kitchen CTs over the
        simulated second ending at sim_t."""
        t = sim_t - 1.0 + np.arange(4800) / 4800.0  # a whole number of mains cycles
        v, i = self.model.signals(t)
        # Q: the voltage a quarter period earlier times the current (+ for a lagging current)
        v90, _ = self.model.signals(t - 0.25 / 50.0, ct=self.cts[0])
        return [float(np.mean(v * i[c])) for c in self.cts], [float(np.mean(v90 * i[c])) for c in self.cts]

    def _feed(self) -> None:
        while not self._stop.is_set():
            due = math.floor(time.time()) + 1
            self._stop.wait(max(0.0, due - time.time()))
            p, q = self.powers(due - self._t0)
            self.board.step(due, power_w=p, var=q)
            self.metered.append((due, p[1]))
            self.metered_var.append((due, q[1]))

    def settled(self, since: float, low_w: float, hold_s: float = 5.0, timeout: float = 20.0) -> float | None:
        """Seconds from `since` (Unix time) to the end of the first metered second from which the grid
        power stays >= low_w (export inside the limit) for hold_s; None if not within timeout."""
        return self._settled(self.metered, since, low_w, math.inf, hold_s, timeout)

    def settled_var(self, since: float, low: float, high: float, hold_s: float = 5.0,
                    timeout: float = 20.0) -> float | None:
        """The same for the grid CT's reactive power inside [low, high] var."""
        return self._settled(self.metered_var, since, low, high, hold_s, timeout)

    def _settled(self, series: list[tuple[int, float]], since: float, low: float, high: float, hold_s: float,
                 timeout: float) -> float | None:
        end = time.time() + timeout + hold_s
        while time.time() < end:
            after = [(t, w) for t, w in series if t - 1 >= since]  # seconds metered wholly after
            first = None
            for t, w in after:
                if not low <= w <= high:
                    first = None
                elif first is None:
                    first = t
            if first is not None and after[-1][0] - first >= hold_s:
                return max(0.0, first - since)
            time.sleep(0.1)
        return None

    # -- the daemon ----------------------------------------------------------------------------------
    def config(self) -> str:
        state = self.tmp / "state"
        ids = {name: (f"{k}{'0' * 29}1", f"{k}{'0' * 29}2") for name, k in SENSORS}
        sensors = "".join(f"""
[[sensor]]
name = "{name}"
id = "{ids[name][0]}"
export_id = "{ids[name][1]}"
kind = "ct"
channel = {ch}
""" for ch, (name, _k) in enumerate(SENSORS))
        return f"""
[daemon]
state_dir = "{state}"
rrdcached_flush_s = 3600
rrd_mode = "batched"
bind = "127.0.0.1"
port = 0
state_flush_s = 1

[board]
port = "{self.board.path}"
baud = 115200
{sensors}
[inverter]
host = "127.0.0.1"
port = {self.logger.port}
datalogger_serial = "{DL}"
inverter_serial = "{INV}"
min_dwell_s = {self.min_dwell_s}
reply_timeout_s = 2

[iec104]
port = {self.iec104_port}
contract_w = {CONTRACT_W}
grid_sensor = "grid"
time_tags = false
t1 = 3
t2 = 0.5

[iec104.assets]
solar = ["pv.export"]
"""

    @contextlib.contextmanager
    def daemon(self) -> Iterator[Rig]:
        """`gridtap daemon` on this house (in a thread of this process); a second call is a restart, on a
        replugged board, with the same state directory."""
        gridlimits.publish(gridlimits.GridLimits())  # as a fresh process starts
        try:
            with running_daemon(self.board, self.config(), self.tmp) as rig:
                yield rig
        finally:
            self.board = self._new_board()
