"""Named scenarios: which loads hang on which CT, which meters pulse, when the mains fails.

CT indices below are 0-based (CT1 = 0). Sign convention everywhere: current
flowing from the grid towards the loads is positive (import); a CT that sees a
generator exporting reads negative power.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gridtap_sim import model as m
from gridtap_sim.board import Board
from gridtap_sim.pulses import PulseMeter, ct_export_source, ct_import_source, flow_source

SECONDS_PER_DAY = 86400.0


@dataclass
class Scenario:
    name: str
    description: str
    mains: m.Mains
    loads: list[m.Load]
    meters: list[PulseMeter]
    outages: m.Outages
    start_of_day_s: float
    ct_phase_deg: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    ct_names: list[str] = field(default_factory=list)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _household_loads(rng: Callable[[int], np.random.Generator], mains: m.Mains, grid: int,
                     kitchen: int | None, utility: int | None) -> list[m.Load]:
    """A household: the grid CT sees everything; optional sub-circuit CTs see some."""
    def cts(*extra: int | None) -> dict[int, float]:
        out = {grid: 1.0}
        for e in extra:
            if e is not None:
                out[e] = 1.0
        return out
    return [
        m.constant_power("standby", "standby", 35.0, 0.55, m.always_on(), cts(), leading=True,
                         harm={3: (0.75, 180.0), 5: (0.45, 0.0), 7: (0.2, 180.0)}),
        m.inductive("fridge", 110.0, 0.7, m.random_on_off(rng(1), 600.0, 1200.0), cts(utility)),
        m.resistive("kettle", 2200.0, m.random_on_off(rng(2), 150.0, 1800.0), cts(kitchen), mains),
        m.constant_power("induction-hob", "switching", 1800.0, 0.98,
                         m.cycling(rng(3), 900.0, 2400.0, 4.0, 0.5), cts(kitchen),
                         harm={3: (0.08, 180.0), 5: (0.05, 0.0)}),
        m.inductive("washing-machine", 450.0, 0.6, m.random_on_off(rng(4), 1200.0, 5400.0), cts(utility)),
        m.resistive("lights", 180.0, m.random_on_off(rng(5), 1800.0, 900.0), cts(), mains),
        m.constant_power("computer", "standby", 90.0, 0.95, m.random_on_off(rng(6), 3600.0, 1800.0),
                         cts(), harm={3: (0.1, 180.0)}),
    ]


def _electricity_meter(seed: int, inp: int, ct: int, imp_per_kwh: float, export: bool = False
                       ) -> PulseMeter:
    src = ct_export_source(ct) if export else ct_import_source(ct)
    return PulseMeter(inp, 3.6e6 / imp_per_kwh, src, _rng(seed, 50, inp))


def build(name: str, board: Board, seed: int, start_of_day_s: float | None = None,
          outage_every_s: float = 120.0, battery: Callable[[], float] | None = None,
          ev: Callable[[], float] | None = None, battery_var: Callable[[], float] | None = None) -> Scenario:
    """The named scenario. battery: the AC power (W, + charging) of a home battery on the grid
    connection, read live (gridtap_sim.luxpower.Inverter.ac_power): the grid CT sees it. ev: the
    same for wallboxes (gridtap_sim.wallbox.Fleet.grid_w, their draw on the grid CT's phase). battery_var:
    the battery inverter's reactive power (var, + inductive; Inverter.q_var), on the grid CT too."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")

    def rng(i: int) -> np.random.Generator:
        return _rng(seed, i)
    mains = m.Mains(rng(0))
    meters: list[PulseMeter] = []
    outages = m.Outages()
    phases = [0.0, 0.0, 0.0]
    names = ["", "", ""]
    start = 0.0
    if name == "household":
        start = 18 * 3600.0
        loads = _household_loads(rng, mains, 0, 1, 2)
        names = ["grid", "kitchen", "utility"]
        meters = [_electricity_meter(seed, 0, 0, 1000.0)]
        desc = "consumption only: CT1 grid, CT2 kitchen circuit, CT3 utility circuit; P1 grid meter S0"
    elif name == "household-pv":
        start = 12 * 3600.0
        sod = start if start_of_day_s is None else start_of_day_s
        loads = m.pv_inverter(4000.0, sod, {0: 1.0, 1: 1.0}) + _household_loads(rng, mains, 1, 2, None)
        names = ["pv-inverter", "grid", "kitchen"]
        meters = [_electricity_meter(seed, 0, 1, 1000.0),
                  _electricity_meter(seed, 1, 0, 1000.0, export=True)]
        desc = ("FLM03 setup: CT1 on the inverter output (45 W standby import at night, export by day), "
                "CT2 on the grid connection, CT3 on the kitchen circuit; P1 grid import, P2 PV meter")
    elif name == "three-phase":
        start = 19 * 3600.0
        phases = [0.0, 120.0, 240.0]
        names = ["L1", "L2", "L3"]
        loads = []
        for ph in range(3):
            def phase_rng(i: int, ph: int = ph) -> np.random.Generator:
                return rng(100 * (ph + 1) + i)

            sub = _household_loads(phase_rng, mains, ph, None, None)
            for ld in sub:
                ld.name = f"L{ph + 1}-{ld.name}"
                ld.phase_deg = phases[ph]
            loads += sub
        hp = m.random_on_off(rng(7), 1800.0, 1200.0)
        for ph in range(3):
            ld = m.inductive(f"heat-pump-L{ph + 1}", 1000.0, 0.85, hp, {ph: 1.0})
            ld.phase_deg = phases[ph]
            loads.append(ld)
        meters = [_electricity_meter(seed, 0, 0, 1000.0)]
        desc = "CT1..CT3 on L1..L3 (VT on L1: L2 and L3 voltages lag by 120 and 240 degrees)"
    elif name == "pulse-meters":
        start = 7 * 3600.0
        loads = _household_loads(rng, mains, 0, 1, 2)
        names = ["grid", "kitchen", "utility"]
        tap = m.random_on_off(rng(8), 40.0, 90.0)
        meters = [_electricity_meter(seed, 0, 0, 1000.0),
                  PulseMeter(1, 1.0, flow_source(tap.on, 8.0), _rng(seed, 51))]
        desc = "household plus P1 grid meter 1000 imp/kWh and P2 water meter 1 imp/L, both with bounce"
    elif name == "brownouts":
        start = 20 * 3600.0
        loads = _household_loads(rng, mains, 0, 1, 2)
        names = ["grid", "kitchen", "utility"]
        meters = [_electricity_meter(seed, 0, 0, 1000.0)]
        r = rng(9)
        t = 20.0 + float(r.uniform(0.0, 0.02))
        spans = []
        for _ in range(2000):
            dur = float(r.uniform(2.0, 20.0))
            a = round(t * m.TRUTH_HZ) / m.TRUTH_HZ
            spans.append((a, round((t + dur) * m.TRUTH_HZ) / m.TRUTH_HZ))
            t += dur + float(r.exponential(outage_every_s)) + 5.0
        outages = m.Outages(spans)
        desc = "household with mains failures: first at 20 s, then every ~%g s, 2..20 s long" % outage_every_s
    else:  # steady
        mains = m.Mains(rng(0), v_base=230.0, drift=False, harmonics={1: (1.0, 0.0)})
        loads = [
            m.resistive("heater", 2300.0, m.always_on(), {0: 1.0}, mains),
            m.inductive("motor", 1150.0, 0.5, m.always_on(), {1: 1.0}),
            m.constant_power("generator", "pv", -2300.0, 1.0, m.always_on(), {2: 1.0}),
        ]
        names = ["heater 2300 W", "motor PF 0.5 1150 W", "generator -2300 W"]
        meters = [PulseMeter(0, 3.6e6 / 1000.0, ct_import_source(0), _rng(seed, 50, 0))]
        desc = "calibration bench: 230 V 50 Hz sine; CT1 10 A resistive, CT2 10 A at PF 0.5 lag, CT3 -10 A"
    if start_of_day_s is not None:
        start = start_of_day_s
    if battery is not None:
        if "grid" not in names:
            raise KeyError(f"scenario {name!r} has no grid CT for a battery")
        loads.append(m.battery("battery", battery, {names.index("grid"): 1.0}))
    if battery_var is not None:
        if "grid" not in names:
            raise KeyError(f"scenario {name!r} has no grid CT for a battery")
        loads.append(m.reactive("battery-q", battery_var, {names.index("grid"): 1.0}))
    if ev is not None:
        if "grid" not in names:
            raise KeyError(f"scenario {name!r} has no grid CT for wallboxes")
        draw = ev
        loads.append(m.ev_charger("wallboxes", lambda t: np.full(np.shape(t), draw()),
                                  {names.index("grid"): 1.0}, 3 * 16 * 230.0))
    return Scenario(name, desc, mains, loads, meters, outages, start % SECONDS_PER_DAY, phases, names)


def model_for(scn: Scenario, board: Board, seed: int, adc: bool = True) -> m.Model:
    return m.Model(board, scn.mains, scn.loads, _rng(seed, 60), scn.outages, adc=adc,
                   ct_phase_deg=scn.ct_phase_deg)


SCENARIOS = {
    "household": "consumption only",
    "household-pv": "PV inverter on CT1, grid on CT2 (Flukso FLM03 PV setup)",
    "three-phase": "one CT per phase, voltage from L1",
    "pulse-meters": "S0 electricity and water meters with contact bounce",
    "brownouts": "mains failures that take the board down",
    "steady": "calibration bench with fixed sine loads",
}
