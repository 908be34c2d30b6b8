"""S0 pulse meters: pulse counts follow the energy, bounce stays within 5 ms."""

from __future__ import annotations

import numpy as np

from gridtap_sim.board import load_board
from gridtap_sim.engine import Simulation
from gridtap_sim.pulses import PulseMeter


def test_pulse_count_follows_import_energy_of_the_metered_channel() -> None:
    sim = Simulation(load_board(), "steady", 4)        # CT1 imports 2300 W; P1 is 1000 imp/kWh
    sim.run_model(60)
    tr = sim.truth_arrays()
    expected = tr["e_imp_j"][:, 0].sum() / 3600.0      # Wh = pulses at 1000 imp/kWh
    assert abs(len(tr["pulse_t_s"]) - expected) <= 1
    gaps = np.diff(tr["pulse_t_s"])
    np.testing.assert_allclose(gaps, 3600.0 / 2300.0, rtol=1e-3)


def _edges_of(meter: PulseMeter, seconds: int, watts: float) -> list[tuple[float, int, int]]:
    edges: list[tuple[float, int, int]] = []
    window = np.full((50, 3), watts / 50.0)
    for k in range(seconds):
        edges += meter.step(k, window)
    return edges


def test_bounce_statistics_and_debounced_count() -> None:
    meter = PulseMeter(0, 3600.0, lambda k, w: w[:, 0], np.random.default_rng(9))
    edges = _edges_of(meter, 3000, 7200.0)             # 2 pulses per second
    starts = np.asarray(meter.starts)
    widths = np.asarray(meter.widths)
    assert len(starts) == 6000
    assert widths.min() >= 0.030 and widths.max() <= 0.100
    t = np.asarray([e[0] for e in edges])
    lv = np.asarray([e[2] for e in edges])
    assert np.all(np.diff(t) > 0)
    assert np.all(lv[1:] != lv[:-1])                   # every edge toggles the pin
    falling = t[lv == 0]
    assert len(falling) > 1.5 * len(starts)            # raw falling edges overcount (bounce)
    # every bounce toggle lies within 5 ms of the pulse start or its end
    idx = np.searchsorted(starts, t, side="right") - 1
    rel = t - starts[idx]
    near_start = rel <= 0.005
    near_end = np.abs(rel - widths[idx]) <= 0.005 + 1e-12
    assert np.all(near_start | (rel >= widths[idx] - 1e-12) & near_end)
    bounced = np.mean([np.sum((rel >= 0) & (rel <= 0.005) & (idx == i)) > 1 for i in range(200)])
    assert 0.6 < bounced < 0.9                         # 0..3 bounce pairs: 3 in 4 pulses bounce
    # a 10 ms debounce (count a falling edge, ignore edges for 10 ms) recovers the count exactly
    count = 0
    quiet_until = -1.0
    for x, level in zip(t.tolist(), lv.tolist(), strict=True):
        if x < quiet_until:
            continue
        if level == 0:
            count += 1
        quiet_until = x + 0.010
    assert count == len(starts)


def test_pauses_are_never_shorter_than_the_shortest_pulse_and_no_pulse_is_lost() -> None:
    """A real S0 meter: pulse 30..100 ms, pause >= 30 ms, at any rate the energy asks for.

    The rate jumps between 1 and 14 pulses per second (above 10 Hz a 100 ms pulse
    plus its pause does not fit between two pulses): no pause may fall below
    30 ms (the firmware's 20 ms debounce would merge the pulses), every pulse is
    still sent, and one that waits for the pause does not fall far behind."""
    rates = [1.0, 14.0, 3.0, 14.0, 9.0, 1.0] * 20

    def src(k: int, w: object) -> np.ndarray:
        return np.full(50, rates[k % len(rates)] / 50.0)

    meter = PulseMeter(0, 1.0, src, np.random.default_rng(3))
    edges: list[tuple[float, int, int]] = []
    for k in range(len(rates)):
        edges += meter.step(k, np.zeros((50, 3)))
    starts = np.asarray(meter.starts)
    widths = np.asarray(meter.widths)
    assert abs(len(starts) + meter.carry - sum(rates)) < 1e-6   # every pulse the energy made
    assert widths.min() >= 0.030 and widths.max() <= 0.100
    pauses = starts[1:] - (starts[:-1] + widths[:-1])
    assert pauses.min() >= 0.030 - 1e-12
    assert np.sum(widths > 0.030 + 1e-9) > len(widths) / 4   # widths still vary when the meter keeps up
    # the ideal start of pulse j is when the energy reached j + 1 units
    ideal = np.concatenate([k + np.arange(1, int(r) + 1) / r for k, r in enumerate(rates)])
    lag = starts - np.sort(ideal)[:len(starts)]
    assert lag.min() >= -0.021 and lag.max() < 0.5, (lag.min(), lag.max())
    # the pin still toggles on every edge, in time order, with bounce only near edges
    t = np.asarray([e[0] for e in edges])
    lv = np.asarray([e[2] for e in edges])
    order = np.argsort(t, kind="stable")
    assert np.all(lv[order][1:] != lv[order][:-1])
