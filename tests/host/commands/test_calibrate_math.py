"""Calibration maths: gains from ratios, phase only from a reactive reference."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridtap.commands.calibrate import Reading, average_gauges, compute
from gridtap.errors import UserError


def test_gains_scale_by_reference_ratio() -> None:
    cal = compute(Reading(225.0, 9.0, 2025.0), Reading(230.0, 9.2, 2116.0), 1_000_000, 1_000_000, 0)
    assert cal.v_gain_e6 == round(1e6 * 230 / 225)
    assert cal.i_gain_e6 == round(1e6 * 9.2 / 9.0)
    assert not cal.phase_changed  # resistive reference: phase unobservable


@given(st.floats(min_value=30, max_value=75), st.floats(min_value=-3, max_value=3))
def test_phase_error_is_recovered_with_sign(phi_true: float, err: float) -> None:
    v, i = 230.0, 10.0
    board = Reading(v, i, v * i * math.cos(math.radians(phi_true + err)))
    ref = Reading(v, i, v * i * math.cos(math.radians(phi_true)))
    cal = compute(board, ref, 1_000_000, 1_000_000, 4200)
    assert cal.phase_changed
    assert cal.phase_mdeg == pytest.approx(4200 + err * 1000, abs=2)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(UserError, match="no voltage or no current"):
        compute(Reading(0, 1), Reading(230, 1), 1, 1, 0)
    with pytest.raises(UserError, match="too small"):
        compute(Reading(230, 0.01), Reading(230, 0.01), 1, 1, 0)
    with pytest.raises(UserError, match="PF"):
        compute(Reading(230, 1, 200), Reading(230, 1, 300), 1, 1, 0)
    with pytest.raises(UserError, match="GAUGE"):
        average_gauges([])


def test_seconds_must_be_positive() -> None:
    import argparse

    from gridtap.commands.calibrate import register, run

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["calibrate", "--port", "/dev/null", "--channel", "0", "--ref-volts", "230",
                              "--ref-amps", "1", "--seconds", "0"])
    with pytest.raises(UserError, match="--seconds must be positive"):
        run(args)
