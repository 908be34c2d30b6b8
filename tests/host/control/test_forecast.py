"""The planner's house forecast: learned per quarter hour of the day, bounded, refusing bad input."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.config import parse_config
from gridtap.control.forecast import PER_DAY, ProfileForecast
from gridtap.control.luxpower.config import parse_config as parse_inverter
from gridtap.control.service import InverterService
from gridtap.errors import UserError
from gridtap_sim.luxpower import Datalogger, Inverter
from tests.host.control.conftest import DL, FAST, INV
from tests.host.control.test_luxpower_client import until
from tests.host.test_daemon_config import GOOD

T0 = 1796601600.0  # 2026-12-07 00:00 UTC


def test_learns_each_quarter_hour_of_the_day_and_averages_the_days() -> None:
    f = ProfileForecast(days=3, fallback_w=300.0)
    for day, evening in enumerate((1000.0, 2000.0, 3000.0, 4000.0)):
        base = T0 + day * 86400
        for m in range(0, 15, 1):
            f.observe(base + 19 * 3600 + m * 60, evening)  # 19:00-19:15: the oven
            f.observe(base + 12 * 3600 + m * 60, -2500.0)  # noon: PV surplus
    assert f.days_known() == 3  # the oldest day has gone
    assert f(T0 + 5 * 86400 + 19 * 3600, T0 + 5 * 86400 + 19 * 3600 + 900) == pytest.approx(3000.0)
    assert f(T0 + 12 * 3600, T0 + 12 * 3600 + 1800) == pytest.approx((-2500.0 + 300.0) / 2)  # 12:15 unknown
    assert f(T0 + 3 * 3600, T0 + 3 * 3600 + 3600) == 300.0  # nothing learned at night: house_load_w


def test_samples_are_what_each_kept_day_drew_in_each_quarter_hour() -> None:
    f = ProfileForecast(days=3, fallback_w=300.0)
    for day, evening in enumerate((1000.0, 2000.0, 3000.0)):
        for m in range(15):
            f.observe(T0 + day * 86400 + 19 * 3600 + m * 60, evening + m)  # each day's 19:00 mean: +7
    t = T0 + 3 * 86400 + 19 * 3600
    assert sorted(f.samples(t, t + 900)) == pytest.approx([1007.0, 2007.0, 3007.0])
    # a quarter hour learned on no day counts as the fallback, as in the forecast itself
    assert sorted(f.samples(t, t + 1800)) == pytest.approx([300.0, 1007.0, 2007.0, 3007.0])


def test_refuses_implausible_samples_and_keeps_the_good_ones() -> None:
    f = ProfileForecast()
    assert f.observe(T0, 500.0)
    for t, w in [(T0, math.nan), (T0, math.inf), (T0, 2e5), (T0 - 3 * 86400, 400.0)]:
        assert not f.observe(t, w)
    assert f.rejected == 4 and f(T0, T0 + 900) == 500.0


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 90 * 86400), st.floats(-2e4, 2e4)), max_size=200))
def test_memory_is_bounded_whatever_it_is_fed(samples: list[tuple[float, float]]) -> None:
    f = ProfileForecast(days=5)
    for dt, w in sorted(samples):
        f.observe(T0 + dt, w)
    assert len(f.rows) <= 5 and all(len(r[1]) == len(r[2]) == PER_DAY for r in f.rows)


def test_state_file_round_trip_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    f = ProfileForecast()
    f.observe(T0 + 3600, 800.0)
    path = tmp_path / "forecast.json"
    assert f.save(path)
    g = ProfileForecast()
    assert g.load(path) and g(T0 + 3600, T0 + 4500) == 800.0
    path.write_text(json.dumps({"version": 1, "rows": [[1, [0.0] * 95, [0] * 96]]}))
    assert not ProfileForecast().load(path)
    path.write_text("{not json")
    assert not ProfileForecast().load(path)
    assert not ProfileForecast().load(tmp_path / "missing.json")
    assert not f.save(tmp_path / "no-such-dir" / "forecast.json")  # a storage fault: kept in memory


def test_control_grid_sensor_must_exist() -> None:
    text = GOOD + '\n[control]\nmode = "planner"\ngrid_sensor = "nope"\n'
    with pytest.raises(UserError, match="grid_sensor.*no \\[\\[sensor\\]\\] is named 'nope'; known: mains"):
        parse_config(text)


def test_service_learns_grid_minus_battery(tmp_path: Path) -> None:
    """The forecast is fed the grid sensor's power minus the battery's (pushed by the simulator)."""
    inv = Inverter(INV)
    inv.ac_w = 0.0
    settings = parse_inverter({"host": "127.0.0.1", "datalogger_serial": DL, "inverter_serial": INV})
    sensors = parse_config(GOOD).sensors
    grid = sensors[0]
    with Datalogger(inv, DL, heartbeat_s=0.2, push_s=0.2) as dl:
        settings = replace(settings, port=dl.port, link=FAST)
        f = ProfileForecast()
        svc = InverterService(settings, None, time.time, sensors=sensors,
                              forecast=f, grid_sensor=grid.name, forecast_path=tmp_path / "forecast.json")
        svc.client.start()
        try:
            until(lambda: svc.client.battery_w() is not None and svc.client.soc()[0] is not None)
            svc.gauge(grid.id, "import", 0, 1200.0, "W")
            now = time.time()
            svc._context(now)
            battery_w = svc.client.battery_w()
            assert battery_w is not None
            assert f(now - now % 900, now - now % 900 + 900) == pytest.approx(1200.0 - battery_w)
        finally:
            svc.client.close()
        svc._save_forecast(now)
        assert (tmp_path / "forecast.json").exists()
