"""The seed document's six cases (Flukso V2/V3 CUSTOM_RULES), loaded verbatim."""

from __future__ import annotations

import pytest

from gridtap.rules import load_text
from tests.support.seed_rules import FLM02, FLM03_GRID_INVERTER, FLM03_TWO_CLAMPS


def run(block: str, **inputs: float) -> dict[str, float]:
    ev = load_text(block).evaluate(inputs)
    assert ev.errors == []
    return ev.values


def test_case1_flm02_inverter_idle_standby_moves_from_generation_to_consumption() -> None:
    # The FLM02 cannot see direction: the inverter's 45 W standby draw shows up
    # as 45 W "generation" on v2. House load reads 500 W raw on v4.
    out = run(FLM02, v2=45.0, v4=500.0)
    assert out["v2"] == 0.0                          # no generation at night: 0, and kept
    assert out["v4"] == pytest.approx(500 * 0.89 + 45)  # standby added to consumption (raw v2)
    assert out["v4"] == pytest.approx(490.0)
    assert out["v11"] == pytest.approx(0.0001)       # the seed's own literal, kept as written
    assert out["v12"] == pytest.approx(490.0)


def test_case2_flm02_inverter_running() -> None:
    out = run(FLM02, v2=2000.0, v4=800.0)
    assert out["v2"] == pytest.approx(1780.0)   # 2000 * 0.89, above the 50 W threshold
    assert out["v4"] == pytest.approx(712.0)    # not topped up: v2 >= 50
    assert out["v11"] == pytest.approx(1068.0)  # export = v2 - v4
    assert out["v12"] == pytest.approx(0.0001)


def test_case2_flm02_consumption_above_generation_gives_import_on_v12() -> None:
    out = run(FLM02, v2=600.0, v4=1500.0)
    assert out["v12"] == pytest.approx(1500 * 0.89 - 600 * 0.89)
    assert out["v11"] == pytest.approx(0.0001)


def test_case3_flm03_two_clamps_inverter_idle() -> None:
    # FLM03 sees direction: the standby current flows backwards through the
    # inverter clamp, so the export-direction sensor v12 carries it and v2 is 0.
    out = run(FLM03_TWO_CLAMPS, v2=0.0, v12=45 / 0.89, v4=500.0, v6=213.0)
    assert out["v2"] == 0.0
    assert out["v12"] == pytest.approx(45.0)
    assert out["v4"] == pytest.approx(445.0 + 45.0)
    assert out["v6"] == pytest.approx(213.0 * 1.126)


def test_case4_flm03_two_clamps_inverter_running() -> None:
    out = run(FLM03_TWO_CLAMPS, v2=2000.0, v12=0.0, v4=800.0, v6=213.0)
    assert out["v2"] == pytest.approx(1780.0)
    assert out["v12"] == 0.0
    assert out["v4"] == pytest.approx(712.0)


def test_case5_flm03_grid_and_inverter_clamps_idle() -> None:
    # Inverter output v2 is 0; grid import v11 carries house load plus standby.
    out = run(FLM03_GRID_INVERTER, v2=0.0, v11=550.0, v12=0.0, v6=207.5)
    assert out["v4"] == pytest.approx(0.0 + 550 * 0.89 - 0.0)
    assert out["v6"] == pytest.approx(207.5 * 1.154)
    assert out["v2"] == 0.0


@pytest.mark.parametrize(("v2", "v11", "v12", "house"), [
    (3000.0, 0.0, 1500.0, (3000 - 1500) * 0.89),   # exporting
    (1000.0, 500.0, 0.0, (1000 + 500) * 0.89),     # importing
])
def test_case6_flm03_grid_and_inverter_clamps_running(v2: float, v11: float, v12: float,
                                                      house: float) -> None:
    out = run(FLM03_GRID_INVERTER, v2=v2, v11=v11, v12=v12, v6=207.5)
    assert out["v4"] == pytest.approx(house)
    assert out["v2"] == pytest.approx(v2 * 0.89)


def test_without_the_0_0001_trick_zero_is_a_value() -> None:
    rs = load_text('CUSTOM_RULES = {"v11": ["v2 - v4 if v2 > v4 else 0"],'
                   ' "v12": ["v4 - v2 if v4 > v2 else 0"]}')
    out = rs.evaluate({"v2": 100.0, "v4": 100.0}).values
    assert out["v11"] == 0.0 and out["v12"] == 0.0
    assert "v11" in out and "v12" in out
