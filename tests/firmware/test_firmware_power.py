"""Signed power and energy of the firmware core under real MicroPython, against the analytic truth."""

from __future__ import annotations

import json
import math
from typing import Any

from tests.support.mpy import ROOT, run_micropython

FWTEST = ROOT / "tests" / "support" / "fwtest"
BOARD = str(ROOT / "hardware" / "board.json")


def run_scenarios(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    script = """
import json, sys
import scenario
specs = json.loads(sys.stdin.read())
print(json.dumps([scenario.run(s) for s in specs]))
"""
    for s in specs:
        s.setdefault("board", BOARD)
    out = run_micropython(script, extra_path=[FWTEST], stdin=json.dumps(specs).encode(), timeout=300)
    return json.loads(out.strip().splitlines()[-1])


def true_s(spec: dict[str, Any], k: int) -> tuple[float, float]:
    """CT k's apparent power signed by its clamp and invert, and its current's lag (radians)."""
    c = spec["cts"][k]
    sign = c.get("sign", 1) * (-1 if spec.get("cfg", [{}] * 3)[k].get("invert", 0) else 1)
    return spec["vrms"] * c["irms"] * sign, math.radians(c.get("angle", 0.0))


def true_w(spec: dict[str, Any], k: int) -> float:
    s, lag = true_s(spec, k)
    return s * math.cos(lag)


def check_energy(spec: dict[str, Any], res: dict[str, Any], k: int, tol: float) -> None:
    p = true_w(spec, k)
    truth_mwh = abs(p) * res["ac_sets"] / res["sps"] / 3.6
    imp, exp = res["regs"][k]
    got, other = (imp, exp) if p > 0 else (exp, imp)
    assert other == 0, f"CT{k + 1}: energy went to the wrong register ({imp=}, {exp=}, true {p:.1f} W)"
    assert abs(got - truth_mwh) <= tol * truth_mwh, (
        f"CT{k + 1}: {got:.3f} mWh vs true {truth_mwh:.3f} mWh ({(got / truth_mwh - 1) * 100:+.3f} %)")


def true_var(spec: dict[str, Any], k: int) -> float:
    s, lag = true_s(spec, k)
    return s * math.sin(lag)


def check_reactive(spec: dict[str, Any], res: dict[str, Any], k: int, tol_of_s: float) -> None:
    """Reactive energy in Q+ (lagging) or Q-, within tol_of_s of the apparent energy."""
    q = true_var(spec, k)
    s_mvah = spec["vrms"] * spec["cts"][k]["irms"] * res["ac_sets"] / res["sps"] / 3.6
    truth = abs(q) * res["ac_sets"] / res["sps"] / 3.6
    pos, neg = res["qregs"][k]
    got, other = (pos, neg) if q > 0 else (neg, pos)
    assert other <= tol_of_s * s_mvah, f"CT{k + 1}: reactive energy in the wrong register ({pos=}, {neg=})"
    assert abs(got - truth) <= tol_of_s * s_mvah, (
        f"CT{k + 1}: {got:.3f} mvarh vs true {truth:.3f} ({(got - truth) / s_mvah * 100:+.3f} % of S)")


# A realistic front end: VT and CT phase leads, ADC offsets, noise, off-nominal
# frequency; phase_mdeg = VT lead - CT lead corrects the leads, the core adds the
# multiplexing delay itself.
FRONT: dict[str, Any] = {"vrms": 241.0, "freq": 49.8, "vt_lead": 1.0, "v_offset": 12.0, "noise": 2.0}
PHASE = -3200  # (1.0 - 4.2) degrees


def test_energy_accuracy_from_5_to_95_percent_of_rating() -> None:
    specs: list[dict[str, Any]] = [
        dict(FRONT, seconds=6, cts=[
            {"irms": 5.0, "angle": 0.0, "lead": 4.2, "offset": -7.0},
            {"irms": 50.0, "angle": 60.0, "lead": 4.2, "offset": 5.0},
            {"irms": 95.0, "angle": 0.0, "lead": 4.2, "offset": 20.0, "scale": 1.02}],
            cfg=[{"phase_mdeg": PHASE}, {"phase_mdeg": PHASE}, {"phase_mdeg": PHASE, "gain_e6": 1020000}]),
        dict(FRONT, seconds=6, freq=50.3, cts=[
            {"irms": 5.0, "angle": -60.0, "lead": 4.2},
            {"irms": 20.0, "angle": 25.0, "lead": 4.2},
            {"irms": 70.0, "angle": 180.0, "lead": 4.2}],
            cfg=[{"phase_mdeg": PHASE}] * 3),
    ]
    for spec, res in zip(specs, run_scenarios(specs), strict=True):
        assert res["ac_sets"] >= (spec["seconds"] - 1.1) * res["sps"]  # all committed seconds but the first
        for k in range(3):
            check_energy(spec, res, k, 0.002)
            check_reactive(spec, res, k, 0.002)


def test_four_quadrants_reversed_clamp_and_standby_draw() -> None:
    specs: list[dict[str, Any]] = [
        dict(FRONT, seconds=4, cts=[
            {"irms": 10.0, "angle": 30.0, "lead": 4.2},  # import, lagging
            {"irms": 10.0, "angle": 150.0, "lead": 4.2},  # export
            {"irms": 10.0, "angle": 210.0, "lead": 4.2}],  # export, other side
            cfg=[{"phase_mdeg": PHASE}] * 3),
        dict(FRONT, seconds=4, cts=[
            {"irms": 10.0, "angle": 330.0, "lead": 4.2},  # import, leading
            {"irms": 20.0, "angle": 10.0, "lead": 4.2, "sign": -1},  # clamp fitted backwards...
            {"irms": 45.0 / 241.0, "angle": 0.0, "lead": 4.2}],  # 45 W inverter standby at night
            cfg=[{"phase_mdeg": PHASE}, {"phase_mdeg": PHASE, "invert": 1}, {"phase_mdeg": PHASE}]),
    ]
    res = run_scenarios(specs)
    for k in range(3):
        check_energy(specs[0], res[0], k, 0.005)
        check_reactive(specs[0], res[0], k, 0.003)
    check_reactive(specs[1], res[1], 0, 0.003)  # leading: Q-
    check_reactive(specs[1], res[1], 1, 0.003)
    check_energy(specs[1], res[1], 0, 0.005)
    check_energy(specs[1], res[1], 1, 0.005)  # ...and corrected by invert: import
    # 45 W is 0.2 % of the CT's rating (4 ADC counts peak): the sign must be right
    # and the reading close; it must never land in the export register.
    check_energy(specs[1], res[1], 2, 0.05)
    g = res[1]["gauges"][2]
    assert 40_000 < g[3] < 50_000, g


def test_gauges_describe_the_last_second() -> None:
    spec: dict[str, Any] = dict(FRONT, seconds=3, cts=[
        {"irms": 12.0, "angle": 36.87, "lead": 4.2},
        {"irms": 3.0, "angle": 120.0, "lead": 4.2},
        {"irms": 0.0}], cfg=[{"phase_mdeg": PHASE}] * 3)
    (res,) = run_scenarios([spec])
    for k in range(2):
        ch, _t, _ms, p_mw, va_mva, vrms_mv, irms_ma, pf_e4, freq_mhz, q_mvar, *_regs = res["gauges"][k]
        assert ch == k
        p = true_w(spec, k)
        assert abs(p_mw / 1000 - p) <= 0.005 * abs(p) + 0.5
        assert abs(vrms_mv / 1000 - 241.0) < 0.5
        assert abs(irms_ma / 1000 - spec["cts"][k]["irms"]) < 0.01 * spec["cts"][k]["irms"]
        assert abs(va_mva / 1000 - 241.0 * spec["cts"][k]["irms"]) < 0.01 * 241.0 * spec["cts"][k]["irms"]
        assert abs(pf_e4 / 1e4 - math.cos(math.radians(spec["cts"][k]["angle"]))) < 0.005
        assert abs(freq_mhz - 49800) < 20
        q = true_var(spec, k)
        assert abs(q_mvar / 1000 - q) <= 0.003 * 241.0 * spec["cts"][k]["irms"], (k, q_mvar, q)
    assert abs(res["gauges"][2][3]) < 1000  # nothing on CT3: the noise floor is well under 1 W


def test_no_mains_voltage_reports_zero_power_and_the_current() -> None:
    spec: dict[str, Any] = {"vrms": 0.0, "noise": 2.0, "seconds": 2,
                            "cts": [{"irms": 10.0}, {"irms": 0.0}, {"irms": 0.0}]}
    (res,) = run_scenarios([spec])
    assert res["ac_sets"] == 0
    assert res["regs"][0] == [0, 0]
    g = res["gauges"][0]
    assert g[3] == 0 and g[8] == 0  # 0 W, 0 Hz
    assert abs(g[6] - 10_000) < 100  # but Irms is measured
    assert res["periods"] >= 19  # fixed 0.1 s periods keep running


def test_adc_noise_on_an_idle_ct_is_not_rectified_into_both_registers() -> None:
    # Per mains cycle the noise reads a few watts either way; split per cycle it would
    # pile up in import AND export. Netted per second under the 1 W no-load threshold,
    # an idle CT registers nothing, while a 45 W standby beside it still counts in full.
    spec: dict[str, Any] = dict(FRONT, seconds=8, noise=3.0, cts=[
        {"irms": 0.0}, {"irms": 45.0 / 241.0, "lead": 4.2}, {"irms": 0.0, "offset": 30.0}],
        cfg=[{"phase_mdeg": PHASE}] * 3)
    (res,) = run_scenarios([spec])
    assert res["regs"][0] == [0, 0] and res["regs"][2] == [0, 0]
    check_energy(spec, res, 1, 0.05)


def test_three_phase_with_one_vt_at_off_nominal_frequency() -> None:
    """CT2 on L2 and CT3 on L3, read against the L1 VT: phase_mdeg +120000 and -120000
    (plus the calibration) refer them to L1's voltage a third and two thirds of a cycle
    later. Their currents lag V1 by 120 / 240 degrees more than their own voltages."""
    own = [25.0, 36.87, 45.0]  # each current's lag behind its own line's voltage
    lag = [0.0, 120.0, 240.0]
    phase = [PHASE, PHASE + 120000, PHASE - 120000]
    for freq in (49.5, 50.5):
        spec: dict[str, Any] = dict(FRONT, seconds=6, freq=freq, cts=[
            {"irms": i, "angle": lag[k] + own[k], "lead": 4.2} for k, i in enumerate((8.0, 30.0, 5.0))],
            cfg=[{"phase_mdeg": p} for p in phase])
        (res,) = run_scenarios([spec])
        # what each line's meter would say: its own voltage (L1's, 120/240 degrees later) times its current
        truth = dict(spec, cts=[dict(c, angle=own[k]) for k, c in enumerate(spec["cts"])])
        for k in range(3):
            check_energy(truth, res, k, 0.002)
            check_reactive(truth, res, k, 0.002)
            p_w = true_w(truth, k)
            assert abs(res["gauges"][k][3] / 1000 - p_w) <= 0.002 * p_w, (freq, k, res["gauges"][k])
        # without the line setting, L2 and L3 read nothing like their power
        wrong = dict(spec, cfg=[{"phase_mdeg": PHASE}] * 3)
        (bad,) = run_scenarios([wrong])
        for k in (1, 2):
            assert abs(bad["gauges"][k][3] / 1000 - true_w(truth, k)) > 0.3 * true_w(truth, k)
