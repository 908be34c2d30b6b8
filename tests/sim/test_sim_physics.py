"""Physics of the board simulator: energy truth, signs, PF, drift, noise, mux delay."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap_sim import model as m
from gridtap_sim.board import Board, load_board
from gridtap_sim.engine import Simulation


def quiet_board(**sim: object) -> Board:
    b = load_board()
    b.sim.update({"enob": 12.0, "adc_offset_counts_sd": 0.0, "gain_error_sd": 0.0,
                  "vt_lead_deg": 0.0, "ct_lead_deg": 0.0})
    b.sim.update(sim)
    return b


def test_steady_energy_is_exact_and_signed() -> None:
    sim = Simulation(load_board(), "steady", 1)
    sim.run_model(3)
    tr = sim.truth_arrays()
    # 230 V x 10 A resistive, 230 V x 10 A at PF 0.5 lagging, a 10 A generator
    np.testing.assert_allclose(tr["e_net_j"], [[2300.0, 1150.0, -2300.0]] * 3, rtol=1e-9)
    np.testing.assert_allclose(tr["e_imp_j"][:, 2], 0.0, atol=1e-9)
    np.testing.assert_allclose(tr["e_exp_j"][:, 2], 2300.0, rtol=1e-9)
    np.testing.assert_allclose(tr["e_imp_j"] - tr["e_exp_j"], tr["e_net_j"], atol=1e-6)
    pf = tr["e_net_j"][0] / (tr["vrms_v"][0] * tr["irms_a"][0])
    np.testing.assert_allclose(pf, [1.0, 0.5, -1.0], atol=1e-9)
    # reactive: only the PF 0.5 lagging load has any, +sin(60 deg) of its apparent power
    s_va = tr["vrms_v"][0] * tr["irms_a"][0]
    np.testing.assert_allclose(tr["e_q_vars"][0] / s_va, [0.0, math.sin(math.pi / 3), 0.0], atol=1e-9)


@pytest.mark.parametrize("which", ["a", "b"])
def test_reactive_truth_has_the_sign_of_each_quadrant(which: str) -> None:
    """Q = mean of i(t).v(t - T/4): positive where the current lags (inductive import,
    or a generator whose current leads the export direction), P^2 + Q^2 = S^2 for sine loads."""
    from tests.support.hil.campaigns import quadrant_loads

    b = quiet_board()
    rng = np.random.default_rng(4)
    mains = m.Mains(rng, harmonics={1: (1.0, 0.0)})
    mdl = m.Model(b, mains, quadrant_loads(which, mains), rng, adc=False)
    c = mdl.chunk(0)
    s_va = c.vrms * c.irms
    want = {"a": [1.0, -1.0, -1.0], "b": [1.0, 0.0, 0.0]}[which]
    for k in range(3):
        q = c.e_q[k] / s_va[k]     # a unity load's Q is the 2f ripple over a non-integer cycle count
        assert (abs(q) < 5e-3) if want[k] == 0 else (np.sign(q) == want[k] and abs(q) > 0.5), (which, k, q)
        assert abs(math.hypot(c.e_net[k], c.e_q[k]) / s_va[k] - 1.0) < 2e-3


@settings(max_examples=15, deadline=None)
@given(p_w=st.floats(50.0, 9000.0), pf=st.floats(0.5, 1.0), seed=st.integers(0, 1000))
def test_truth_matches_analytic_v_i_cos_phi_with_drift(p_w: float, pf: float, seed: int) -> None:
    """With frequency and amplitude drifting, the integral equals the mean of Vrms^2.Y.cos(phi)."""
    rng = np.random.default_rng(seed)
    mains = m.Mains(rng, harmonics={1: (1.0, 0.0)})
    load = m.inductive("motor", p_w, pf, m.always_on(), {0: 1.0})
    mdl = m.Model(load_board(), mains, [load], rng, adc=False)
    n = 20
    e = sum(mdl.chunk(k).e_net[0] for k in range(n))
    y = p_w / (m.V_NOMINAL ** 2 * pf)
    v = mains.vrms_knots.array()[: n + 1]
    # exact integral of (v0 + dv.tau)^2 over each second, times Y.cos(phi)
    analytic = float(np.sum(v[:-1] ** 2 + v[:-1] * np.diff(v) + np.diff(v) ** 2 / 3.0)) * y * pf
    # the 2f ripple of v.i does not cancel over a non-integer number of cycles: bound it
    ripple = 2 * 253.0 ** 2 * y / (2 * math.pi * 49.5)
    assert abs(e - analytic) <= ripple + 1e-9 * analytic


def test_midpoint_grid_agrees_with_a_ten_times_finer_integral() -> None:
    sim = Simulation(load_board(), "household-pv", 5)
    sim.ensure_second(0)
    e_net = sim.truth.column("e_net")[0]
    n = 4800 * 20
    t = (np.arange(n) + 0.5) / n
    v, i = sim.model.signals(t)
    fine = (v[None, :] * i).sum(axis=1) / n
    np.testing.assert_allclose(e_net, fine, rtol=2e-5, atol=1e-3)


def test_household_pv_signs_by_day_and_night() -> None:
    day = Simulation(load_board(), "household-pv", 2, start_of_day_s=13 * 3600.0)
    day.run_model(5)
    d = day.truth_arrays()
    assert np.all(d["e_net_j"][:, 0] < -1000.0)       # inverter exports: negative on CT1
    assert np.all(d["e_exp_j"][:, 0] > 1000.0) and np.all(d["e_imp_j"][:, 0] == 0.0)
    night = Simulation(load_board(), "household-pv", 2, start_of_day_s=23 * 3600.0)
    night.run_model(5)
    n = night.truth_arrays()
    # the inverter's 45 W standby draw at night is import on CT1
    # (constant power; the 2f ripple over a non-integer number of cycles is < 0.3 %)
    np.testing.assert_allclose(n["e_net_j"][:, 0], 45.0, rtol=3e-3)
    assert np.all(n["e_exp_j"][:, 0] == 0.0)
    # the grid CT (CT2) sees the household plus the inverter, so it imports at night
    assert np.all(n["e_net_j"][:, 1] > 45.0)


def test_power_factor_of_inductive_loads_within_range() -> None:
    for pf in (0.5, 0.7, 0.99):
        mains = m.Mains(np.random.default_rng(1), drift=False, harmonics={1: (1.0, 0.0)}, v_base=230.0)
        ld = m.inductive("x", 1000.0, pf, m.always_on(), {0: 1.0})
        c = m.Model(load_board(), mains, [ld], np.random.default_rng(1), adc=False).chunk(0)
        assert c.e_net[0] / (c.vrms * c.irms[0]) == pytest.approx(pf, abs=1e-9)
        assert c.e_net[0] == pytest.approx(1000.0, rel=1e-9)


def test_frequency_and_voltage_drift_stay_in_bounds_and_move() -> None:
    mains = m.Mains(np.random.default_rng(7))
    mains.ensure(20000)
    f = mains.freq_knots.array()
    v = mains.vrms_knots.array()
    assert f.min() >= 49.5 and f.max() <= 50.5
    assert f.max() - f.min() > 0.1          # it really drifts
    assert v.min() >= 207.0 and v.max() <= 253.0
    assert v.std() > 0.5


def test_adc_noise_matches_enob() -> None:
    for enob in (9.0, 10.5):
        b = quiet_board(enob=enob)
        mdl = m.Model(b, m.Mains(np.random.default_rng(1)), [], np.random.default_rng(2))
        x = np.concatenate([mdl.chunk(k).samples[:, 1].astype(float) for k in range(3)])
        measured = b.bits - math.log2(x.std() * math.sqrt(12.0))
        assert measured == pytest.approx(enob, abs=0.1)


def _phase_deg(x: np.ndarray, f: float, fs: float, t0: float) -> tuple[float, float]:
    t = t0 + np.arange(x.size) / fs
    z = np.sum((x - x.mean()) * np.exp(-2j * np.pi * f * t)) * 2 / x.size
    return math.degrees(math.atan2(z.imag, z.real)), abs(z)


def test_mux_delay_and_phase_leads_show_in_samples() -> None:
    for ct_lead in (0.0, 3.0):
        b = quiet_board(ct_lead_deg=ct_lead, enob=11.0)   # a little noise dithers the rounding
        sim = Simulation(b, "steady", 1)
        s = sim.samples(0, 3 * 4800).astype(float)
        fs = float(b.sets_per_s)
        ph = [_phase_deg(s[:, c], 50.0, fs, c * b.slot_s)[0] for c in range(4)]
        amp = [_phase_deg(s[:, c], 50.0, fs, 0.0)[1] for c in range(4)]
        # phases measured against each sample's true instant: only the leads and loads remain
        rel = [((ph[c] - ph[0] + 180.0) % 360.0) - 180.0 for c in range(1, 4)]
        assert rel[0] == pytest.approx(ct_lead, abs=0.02)
        assert rel[1] == pytest.approx(ct_lead - 60.0, abs=0.02)
        assert abs(abs(rel[2] - ct_lead) - 180.0) < 0.02
        # analysed as if all were sampled with V, CT1 (sampled one slot later) appears to lead
        naive = [_phase_deg(s[:, c], 50.0, fs, 0.0)[0] for c in range(4)]
        lead = ((naive[1] - naive[0] + 180.0) % 360.0) - 180.0
        assert lead == pytest.approx(ct_lead + 360.0 * 50.0 * b.slot_s, abs=0.02)
        assert amp[0] == pytest.approx(230.0 * math.sqrt(2) / b.channels[0]["v_per_count"], rel=1e-3)
        assert amp[1] == pytest.approx(10.0 * math.sqrt(2) / b.channels[1]["a_per_count"], rel=1e-3)


def test_ct_saturation_flattens_peaks() -> None:
    b = quiet_board(ct_saturation_a=10.0)
    s = Simulation(b, "steady", 1).samples(0, 480).astype(float)
    peak_counts = (s[:, 1] - b.midscale).max() * b.channels[1]["a_per_count"]
    assert peak_counts < 10.0 < 10.0 * math.sqrt(2)


def test_three_phase_truth_uses_each_phase_voltage() -> None:
    b = quiet_board(enob=11.0)
    sim = Simulation(b, "three-phase", 3)
    s = sim.samples(0, 4800).astype(float)
    sim.ensure_second(0)
    tr = sim.truth_arrays()
    assert np.all(tr["e_net_j"][0] > 0)                 # every phase only consumes
    fs = float(b.sets_per_s)
    ph = [_phase_deg(s[:, c], 50.0, fs, c * b.slot_s)[0] for c in range(4)]
    for c, lag in ((2, 120.0), (3, 240.0)):
        rel = ((ph[c] - ph[0] + lag + 180.0) % 360.0) - 180.0
        assert abs(rel) < 60.0                          # the phase's own PF angle, within +-60 deg


@pytest.mark.parametrize(("scenario", "start"), [("household-pv", 6.5 * 3600 - 3.0), ("three-phase", None),
                                                  ("brownouts", None), ("household-pv", 19.5 * 3600 - 2.0)])
def test_grouped_loads_give_the_per_load_signals(scenario: str, start: float | None) -> None:
    """The fast path (steady loads summed per law before the basis) changes no number that matters."""
    fast = Simulation(load_board(), scenario, 3, start)
    ref = Simulation(load_board(), scenario, 3, start)
    ref.model.grouped = False
    n = 6 if scenario != "brownouts" else 25          # the first outage is at ~20 s
    a = fast.samples(0, 4800 * n)
    b = ref.samples(0, 4800 * n)
    assert np.array_equal(a, b)
    ta, tb = fast.truth_arrays(), ref.truth_arrays()
    for key in ("e_net_j", "e_imp_j", "e_exp_j", "irms_a", "vrms_v"):
        np.testing.assert_allclose(ta[key], tb[key], rtol=1e-12, atol=1e-9)
    # and the fast path really ran: some seconds used grouped plans
    assert any(groups for groups, _ in fast.model._plans.values())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(0, 50), delta_us=st.floats(-400.0, 400.0))
def test_mains_shift_is_the_phasor_at_the_shifted_instants(seed: int, k: int, delta_us: float) -> None:
    mains = m.Mains(np.random.default_rng(seed))
    t = k + (np.arange(4800) + 0.5) / 4800
    z = np.exp(1j * mains.theta(t))
    delta = delta_us * 1e-6
    got = mains.shift(z, t, delta, k)
    want = np.exp(1j * mains.theta(t + delta))         # also across the second's ends
    # theta itself (hundreds of radians) carries ~1e-13 rad of rounding; without its eps or eps^2/2
    # term the rotation would be off by 1e-10 .. 1e-5
    assert np.max(np.abs(got - want)) < 1e-11


@pytest.mark.parametrize("start_h", [6.5 + 101 / 3600, 9.0, 13.25, 19.5 - 102 / 3600])
def test_adc_pv_output_between_truth_points_is_the_bell(start_h: float) -> None:
    """The ADC channels interpolate the PV bell from the truth grid: within 2e-12 of it."""
    sim = Simulation(load_board(), "household-pv", 1, start_h * 3600)
    mdl = sim.model
    mdl.chunk(0)
    assert mdl._sky_ref, "the truth grid should have left its PV bell for the ADC"
    (sky, (t_ref, _, _)), = mdl._sky_ref.items()
    for delta in (-100e-6, 7e-6, 115e-6, 167e-6, 200e-6):
        t = t_ref + delta
        got = mdl._sky_light(sky, t)
        want = m.clear_sky(t.copy(), sky[0], sky[1])
        np.testing.assert_allclose(got, want, rtol=2e-12, atol=1e-12)
