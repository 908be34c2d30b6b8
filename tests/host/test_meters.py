"""Expression meters (gridtap.meters): the cFos document's dt semantics, phases, persistence,
config errors, and the daemon end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.config import SensorConfig, parse_config
from gridtap.errors import UserError
from gridtap.meters import MeterHub, derived_id, parse_meters
from gridtap.outputs.mqtt import counter_topic, gauge_topic
from tests.support.broker import Collector, Mosquitto, wait_until
from tests.support.daemon import IMP, config_text, running_daemon
from tests.support.fakeboard import FakeBoard

T0 = 1_790_000_000
GRID = SensorConfig(name="grid", id="a" * 32, kind="ct", index=0, export_id="b" * 32, line="L1")
PV = SensorConfig(name="pv", id="c" * 32, kind="ct", index=1, line="L2")


METERS = """
[[meter]]
id = 1
sensors = ["mains"]

[[meter]]
id = 2
name = "house_energy"
power_w = "M1.power_w + 100"
import_wh = "import_wh + max(M1.power_w, 0) * dt / 3600"
"""


class Recorder:
    """The virtual-sensor inbox as the hub sees it: keeps what it was given."""

    def __init__(self) -> None:
        self.gauges: list[tuple[str, float, float]] = []
        self.counters: list[tuple[str, float, int]] = []

    def power(self, sensor: str, t: float, watts: float) -> None:
        self.gauges.append((sensor, t, watts))

    def counter(self, sensor: str, t: float, wh: float, boot: int = 0) -> None:
        self.counters.append((sensor, t, round(wh * 1000)))


def hub(items: list[dict[str, Any]], state: Path | None = None) -> tuple[MeterHub, Recorder]:
    rec = Recorder()
    board_meters = [{"id": 1, "sensors": ["grid"]}, {"id": 2, "sensors": ["pv"]}]
    specs = parse_meters([*board_meters, *items], ["grid", "pv"])
    return MeterHub(specs, [GRID, PV], rec, state), rec


def feed(h: MeterHub, t: int, grid_w: float, pv_w: float = 0.0) -> None:
    h.gauge(GRID.id, "import", t, max(grid_w, 0.0), "W")
    h.gauge("b" * 32, "export", t, max(-grid_w, 0.0), "W")
    h.gauge(PV.id, "import", t, pv_w, "W")
    h.flush()


def test_integrating_meter_follows_the_document() -> None:
    h, rec = hub([{"id": 5, "name": "ev", "import_wh": "import_wh + M1.power_w * dt / 3600"}])
    for t in range(1000, 1011):
        feed(h, t, 3600.0)
    assert h.values["M5"]["import_wh"] == pytest.approx(10.0)   # 3600 W for 10 s
    sid = derived_id("ev")
    assert rec.counters[-1][0] == sid and rec.counters[-1][2] == 10000


def test_smoothing_meter_and_export_side() -> None:
    h, rec = hub([{"id": 6, "name": "smooth", "power_w": "(power_w * (20 - dt) + M1.power_w * dt) / 20"}])
    feed(h, 0, 0.0)
    for t in range(1, 21):
        feed(h, t, -2000.0)   # exporting 2 kW: M1.power_w is negative
    got = h.values["M6"]["power_w"]
    assert -2000.0 < got < -1200.0  # 1 - (19/20)^20 = 64 % of the step after 20 s
    assert got == pytest.approx(-2000.0 * (1 - (19 / 20) ** 20))
    assert rec.gauges[-1][2] == pytest.approx(got)  # signed: the session splits import and export


def test_current_l1_formula_serves_every_phase() -> None:
    h, _ = hub([{"id": 7, "name": "sum", "current_l1": "M1.current + M2.current"}])
    feed(h, 5, 2300.0, 4600.0)
    v = h.values["M7"]
    assert v["current_l1"] == pytest.approx(10000.0)   # grid on L1: 2300 W / 230 V
    assert v["current_l2"] == pytest.approx(20000.0)   # pv on L2
    assert v["current_l3"] == 0.0


def test_register_survives_a_restart_and_never_runs_back(tmp_path: Path) -> None:
    state = tmp_path / "state" / "meters.json"
    item = {"id": 5, "name": "ev", "import_wh": "import_wh + M1.power_w * dt / 3600"}
    h, _ = hub([item], state)
    for t in range(0, 37):
        feed(h, t, 1000.0)
    h.save()
    h2, rec = hub([item], state)
    assert h2.values["M5"]["import_wh"] == pytest.approx(10.0)
    feed(h2, 100, 500.0)          # first update after the restart: dt is 0, the register holds
    feed(h2, 136, -1000.0)        # a formula that would decrease the register is held back
    assert h2.values["M5"]["import_wh"] == pytest.approx(10.0)
    assert h2.held_back == 1
    assert [c[2] for c in rec.counters] == [10000, 10000]


@pytest.mark.parametrize("bad", ["{not json", '{"ev": {"import_wh": -5}}', '{"ev": {"import_wh": "x"}}',
                                 '{"ev": 1}', "[1, 2]", "x" * 70000])
def test_a_bad_state_file_starts_the_register_at_zero(tmp_path: Path, bad: str) -> None:
    state = tmp_path / "meters.json"
    state.write_text(bad)
    h, _ = hub([{"id": 5, "name": "ev", "import_wh": "import_wh + M1.power_w * dt / 3600"}], state)
    assert h.values["M5"]["import_wh"] == 0.0


def test_a_second_is_evaluated_once_all_its_values_are_in() -> None:
    h, _ = hub([{"id": 7, "name": "sum", "power_w": "M1.power_w + M2.power_w"}])
    h.gauge(GRID.id, "import", 10, 300.0, "W")
    h.gauge(PV.id, "import", 10, 1200.0, "W")
    assert h.values["M7"]["power_w"] == 0.0      # second 10 is still open
    h.gauge(GRID.id, "import", 11, 400.0, "W")   # the first value of second 11 closes it
    assert h.values["M7"]["power_w"] == 1500.0


def test_the_hub_ignores_values_that_are_not_the_boards() -> None:
    """Its own values come back through the session as sinks' values: they are not board readings."""
    h, rec = hub([{"id": 3, "name": "double", "power_w": "M1.power_w * 2"}])
    feed(h, 1, 50.0)
    h.gauge(derived_id("double"), "import", 2, 9999.0, "W")
    h.counter(derived_id("double"), "import", 2, 5)
    feed(h, 3, 50.0)
    assert rec.gauges[-1][2] == 100.0 and h.board.registers == {}


def test_a_failing_formula_keeps_its_value() -> None:
    h, _ = hub([{"id": 8, "name": "ratio", "power_w": "M1.power_w / M2.power_w"}])
    feed(h, 1, 100.0, 50.0)
    feed(h, 2, 100.0, 0.0)
    assert h.values["M8"]["power_w"] == 2.0 and h.errors == 1


@pytest.mark.parametrize(("item", "reason"), [
    ({"id": 9, "power_w": "M3.power_w"}, "unknown name 'M3.power_w'"),
    ({"id": 9, "power_w": "v99"}, "unknown name 'v99'"),
    ({"id": 9, "power_w": "GM.surplus.power_w"}, "unknown name 'GM.surplus.power_w'"),  # no value here
    ({"id": 9, "power_w": "date.hour >= 8 ? M1.power_w : 0"}, ""),
    ({"id": 9, "power_w": "M1.power_w +"}, "column"),
    ({"id": 9}, "at least one formula"),
    ({"id": 1, "power_w": "1"}, "also meter"),
    ({"id": 9, "sensors": ["house"]}, "no [[sensor]] named 'house'"),
    ({"id": 9, "sensors": ["grid"], "power_w": "1"}, "not both"),
    ({"id": 9, "power": "1"}, "unknown key 'power'"),
])
def test_config_errors_name_the_meter(item: dict[str, Any], reason: str) -> None:
    if not reason:  # the control case: loads
        assert parse_meters([{"id": 1, "sensors": ["grid"]}, item], ["grid", "pv"])[1].device == "M9"
        return
    with pytest.raises(UserError, match="meter") as info:
        parse_meters([{"id": 1, "sensors": ["grid"]}, item], ["grid", "pv"])
    assert reason in str(info.value)


def test_gridtap_toml_meter_tables() -> None:
    text = config_text(Path("/dev/ttyACM0"), Path("/var/lib/gridtap")) + METERS
    cfg = parse_config(text)
    assert [m.device for m in cfg.meters] == ["M1", "M2"]
    assert cfg.meters[1].sensor_id == derived_id("house_energy")
    with pytest.raises(UserError, match="unknown name 'M3.power_w'"):
        parse_config(text.replace("M1.power_w + 100", "M3.power_w + 100"))
    with pytest.raises(UserError, match="not another series' id"):
        parse_config(text + f'sensor_id = "{IMP}"\n')


def test_daemon_sends_expression_meters_to_its_sinks(short_tmp: Path) -> None:
    """End to end: a fake board on a pty, the daemon, rrdcached, mosquitto; the expression meter gets
    its RRD and its MQTT topics like a board series, and its register is in state_dir/meters.json
    after the daemon stops."""
    board = FakeBoard(short_tmp)
    board.appear()
    (short_tmp / "mq").mkdir()
    with Mosquitto(short_tmp / "mq") as broker:
        text = (config_text(board.path, short_tmp / "state") + METERS
                + f'\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "gt-meters"\n')
        _run_daemon(board, text, short_tmp)
        sid = derived_id("house_energy")
        seen = Collector(broker.port)  # the daemon has stopped: its values are retained on the broker
        try:
            assert wait_until(lambda: seen.last_json(gauge_topic(sid)) is not None
                              and seen.last_json(counter_topic(sid)) is not None)
            assert seen.last_json(gauge_topic(sid))[1] == pytest.approx(1900.0, rel=0.01)
            assert any(sid in t for t in seen.topics("homeassistant/"))  # discovered like a sensor
        finally:
            seen.close()
    saved = json.loads((short_tmp / "state" / "meters.json").read_text())
    assert 0 < saved["house_energy"]["import_wh"] <= 40 * 1800 / 3600 + 1e-6


def _run_daemon(board: FakeBoard, text: str, short_tmp: Path) -> None:
    sid = derived_id("house_energy")
    with running_daemon(board, text, short_tmp) as rig:
        for i in range(40):
            board.step(T0 + i, power_w=[1800.0, 0.0], pulses=[0, 0])
        assert board.wait_acked()
        rig.wait(lambda: rig.daemon.meters.values["M2"]["import_wh"] > 0)
        rig.wait_rrd(sid, T0 + 20, timeout=20)
        assert rig.daemon.meters.values["M2"]["power_w"] == pytest.approx(1900.0, rel=0.01)
        view = rig.daemon.view
        assert view is not None  # the REST API is on
        assert view.series()[sid][0].name == "house_energy"  # the REST API serves it
        minute = [v for _t, v in view.live_window(sid, T0 + 39) if v is not None]
        assert minute and minute[-1] == pytest.approx(1900.0 / 3.6, rel=0.01)  # interval=minute


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.floats(-5000, 5000)), min_size=1, max_size=30))
def test_integration_is_the_sum_of_power_times_dt(steps: list[tuple[int, float]]) -> None:
    """import_wh + max(M1.power_w, 0) * dt / 3600 over irregular updates: the power seen at each update
    times the seconds since the previous one, and never less than before."""
    h, _ = hub([{"id": 5, "name": "ev", "import_wh": "import_wh + max(M1.power_w, 0) * dt / 3600"}])
    t, want, prev = 1000, 0.0, 0.0
    feed(h, t, 0.0)
    for gap, p in steps:
        t += gap
        feed(h, t, p)
        want += max(p, 0.0) * gap / 3600
        got = h.values["M5"]["import_wh"]
        assert got == pytest.approx(want, abs=1e-6) and got >= prev
        prev = got
