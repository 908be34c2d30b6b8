"""Virtual board speed: simulated seconds per wall second (`make bench`, area `sim`).

sim.model_speedup   the model alone (mains, loads, CT/VT, ADC samples for V + 3 CT at
                    4,800 sets/s, ground truth, S0 pulses), scenario household-pv
sim.speedup         the same scenario with the firmware core (gridtap_fw.app) running in
                    its MicroPython unix-port process against the model, as fast as it goes
sim.cpu_speedup     the same run measured in CPU time (simulator + firmware process), which
                    does not depend on what else the machine is doing
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path

from gridtap_sim.board import load_board
from gridtap_sim.engine import Simulation
from gridtap_sim.runner import FIRMWARE_DIR, VirtualBoard

SIM_S = 120.0
ROOT = Path(__file__).resolve().parents[1]

ANCHORS = {
    "sim.model_speedup": "goal >= 60 (an hour of household-pv in under a minute)",
    "sim.speedup": "goal >= 60 with the firmware process in the loop",
    "sim.cpu_speedup": "goal >= 60; wall-clock figures swing with machine load, this one does not",
}
HOW = {
    "sim.model_speedup": f"{SIM_S:.0f} simulated s of household-pv, model only, best of 3, one core",
    "sim.speedup": f"{SIM_S:.0f} simulated s of household-pv with the firmware process, --speed max, "
                   "nobody reading the pty, best of 3; wall time includes MicroPython start-up",
    "sim.cpu_speedup": f"{SIM_S:.0f} simulated s / CPU seconds of the simulator and the firmware "
                       "process together (getrusage), best of 3",
}


def model_speedup() -> float:
    best = math.inf
    for seed in (1, 2, 3):
        sim = Simulation(load_board(), "household-pv", seed)
        best = min(best, sim.run_model(SIM_S))
    return SIM_S / best


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def firmware_speedup() -> tuple[float, float]:
    """(simulated s per wall s, simulated s per CPU s), best of 3."""
    firmware = None
    if not (FIRMWARE_DIR / "gridtap_fw" / "app.py").exists():
        firmware = ROOT / "tests" / "simtest" / "echo_fw.py"
        for k in ("sim.speedup", "sim.cpu_speedup"):
            HOW[k] += " (firmware core missing: measured with tests/simtest/echo_fw.py)"
    best_wall = best_cpu = 0.0
    for _ in range(3):
        sim = Simulation(load_board(), "household-pv", 1)
        vb = VirtualBoard(sim, firmware=firmware, use_pty=False)
        c0 = _cpu()
        t0 = time.perf_counter()
        try:
            vb.run(SIM_S)
        finally:
            vb.close()
        wall = time.perf_counter() - t0
        cpu = _cpu() - c0
        if len(vb.stats.boots) != 1:
            raise RuntimeError(f"firmware rebooted during the benchmark: {vb.stats.deaths}")
        best_wall = max(best_wall, vb.now / wall)
        best_cpu = max(best_cpu, vb.now / cpu)
    return best_wall, best_cpu


def run() -> dict[str, object]:
    wall, cpu = firmware_speedup()
    return {"sim.model_speedup": round(model_speedup(), 1), "sim.speedup": round(wall, 1),
            "sim.cpu_speedup": round(cpu, 1)}


if __name__ == "__main__":
    print(run())
