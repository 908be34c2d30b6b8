"""The e2e comparison itself, on hand-made runs whose answer is known (fast; no processes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.support.e2e.analysis import Truth, firmware_finals, firmware_stage, host_reference, interp_register

SENSORS = (("load", "ct", 0, "b" * 32, None), ("meter", "pulse", 0, "c" * 32, None))


def _truth(n: int = 1000, dead: int = 500) -> Truth:
    imp = np.full((n, 1), 3600.0)     # 1 Wh every second
    imp[dead] = 0.0                   # the mains is off for this second
    arrays = {"e_imp_j": imp, "e_exp_j": np.zeros((n, 1)),
              "pulse_t_s": np.array([1.5, 3.2, dead + 0.8]), "pulse_input": np.array([0, 0, 0])}
    summary: dict[str, Any] = {"boots": [(0.0, 1), (dead + 1.0, 2)]}
    return Truth([(0.0, arrays, summary)], boot_s=0.3)


def _tuples(lost_mwh: int, n: int = 1000, dead: int = 500) -> list[dict[str, Any]]:
    out = []
    for s in range(1, n):
        if s in (dead, dead + 1):
            continue
        boot = 1 if s < dead else 2
        if s < dead:
            reg = s * 1000
        else:  # after the reset: the saved register (all of the energy up to the failure) minus a loss
            reg = dead * 1000 - lost_mwh + (s - dead - 1) * 1000
        out.append({"k": "c", "i": 0, "gt": float(s), "seg": 0, "boot": boot, "retx": 0, "imp": reg,
                    "exp": 0, "t": 1_700_000_000 + s, "ms": 0})
    out.append({"k": "p", "i": 0, "gt": 10.0, "seg": 0, "boot": 1, "retx": 0, "reg": 2000, "pulses": 2,
                "t": 1_700_000_010, "ms": 0})
    return out


def test_observable_truth_leaves_out_the_boot_window() -> None:
    tr = _truth()
    assert tr.energy(0.0, 10.0, 0, "imp") == pytest.approx(10_000.0)
    # the boot window [500.7, 501.0] lies in the dead second: nothing to subtract there;
    assert tr.energy(499.0, 502.0, 0, "imp") == pytest.approx(2000.0)
    assert tr.energy(2.25, 2.75, 0, "imp") == pytest.approx(500.0)
    # the third pulse starts while the board boots: no board could count it
    assert tr.pulses_between(0, -1.0, 1000.0) == 2


@pytest.mark.parametrize("lost", [0, 600, 1500])
def test_a_register_that_restarts_low_is_counted_as_firmware_loss(lost: int) -> None:
    res = firmware_stage(_tuples(lost), _truth(), SENSORS)
    row = res["b" * 32]
    assert row["resets"] == 1
    assert row["lost_wh"] == pytest.approx(lost / 1000.0, abs=0.01)
    assert res["c" * 32]["lost_wh"] == 0.0 and res["c" * 32]["extra_wh"] == 0.0


def test_resent_tuples_do_not_count_as_the_final_register() -> None:
    tuples = _tuples(0)
    last = max(t["imp"] for t in tuples if t["k"] == "c")
    tuples.append({"k": "c", "i": 0, "gt": 2000.0, "seg": 0, "boot": 2, "retx": 1, "imp": 5, "exp": 0,
                   "t": 1_700_000_003, "ms": 0})
    assert firmware_finals(tuples, SENSORS)["b" * 32] == last


def test_interpolation_uses_whole_second_stamps() -> None:
    tuples = _tuples(0)
    assert interp_register(tuples, "c", 0, "imp", 1_700_000_010.5) == pytest.approx(10_500.0)
    assert interp_register(tuples, "c", 0, "imp", 1_600_000_000.0) is None
    assert interp_register(tuples, "c", 0, "imp", 1_700_000_020.0) == 20_000.0  # a stamp on the instant
    # the tap keeps only the pair around a boundary (PULSE stamps are the last pulse's): linear between
    sparse = [t for t in tuples if t["k"] == "c" and t["gt"] in (5.0, 400.0)]
    assert interp_register(sparse, "c", 0, "imp", 1_700_000_100.0) == pytest.approx(100_000.0)


@pytest.mark.parametrize("lost", [0, 600, 3000])
def test_outputs_are_held_to_the_epoch_rule_not_to_a_register_that_fell(lost: int) -> None:
    tuples = _tuples(lost)
    final = firmware_finals(tuples, SENSORS)["b" * 32]
    ref = host_reference(tuples, SENSORS)["b" * 32]
    first_after = 500_000 - lost + 1_000  # the first tuple after the reset, one second into the boot
    if first_after < 499_000:  # the register restarted below its last value: the host keeps its total
        assert ref == final + (499_000 - first_after)
    else:                      # restored and carried on: the reference is the register itself
        assert ref == final
