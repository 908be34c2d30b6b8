"""Virtual sensors (gridtap.inputs.virtual): a wallbox's E<n> meter over OCPP and an expression meter
are sensors like a board's, through the board session's own path: the counter store, RRDs, the REST
API's series and live window, MQTT with Home Assistant discovery, PVOutput fields, IEC-104 assets;
and nothing they send is believed without checks."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import pytest

from gridtap.config import parse_config
from gridtap.control.ev.config import sensor_id
from gridtap.errors import UserError
from gridtap.outputs.mqtt import counter_topic, gauge_topic
from gridtap_sim.wallbox import Battery, WallboxState, connect_wallbox
from tests.support.broker import Collector, Mosquitto, wait_until
from tests.support.daemon import config_text, running_daemon
from tests.support.fakeboard import FakeBoard

EV = """
[ev]
port = 0
max_total_current_a = 25
grid_sensor = "mains"
interval_s = 1
min_on_s = 0
min_off_s = 0

[[ev.wallbox]]
id = "garage"
rule = "full"

[[ev.wallbox]]
id = "carport"
rule = "surplus"
"""
GARAGE = sensor_id("garage")


def test_wallboxes_are_sensors_other_sections_may_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDTAP_PVOUTPUT_KEY", "k" * 40)
    base = config_text(Path("/dev/ttyACM0"), Path("/var/lib/gridtap")) + EV
    cfg = parse_config(base)
    assert [(s.name, s.id, s.source) for s in cfg.virtual] == [("E1", GARAGE, "ev"),
                                                                ("E2", sensor_id("carport"), "ev")]
    assert cfg.series()[GARAGE][1] == "import" and cfg.sensor("E1").id == GARAGE
    iec = '\n[iec104]\nport = 0\nassets = { ev = ["E1", "E2"], solar = ["-mains"] }\n'
    assert parse_config(base + iec).outputs["iec104"].model.assets["ev"] == ("E1", "E2")
    pvo = '\n[pvoutput]\nsystem_id = 1\nv4 = "E1:power"\nv3 = "E1:energy"\n'
    assert parse_config(base + pvo).outputs["pvoutput"].values[0].series == "E1"
    with pytest.raises(UserError) as bad:  # an unknown series is still an error naming the known ones
        parse_config(base + pvo.replace("E1:power", "E9:power"))
    assert "E1" in str(bad.value)
    with pytest.raises(UserError, match="'E1' is taken"):
        parse_config(base.replace('name = "heatpump"', 'name = "E1"'))


def test_a_wallbox_meter_takes_the_board_path_to_every_store_and_output(short_tmp: Path) -> None:
    """A real daemon (fake board on a pty, rrdcached, mosquitto) with [ev]; a simulated wallbox speaks
    OCPP to it. Its MeterValues become the E1 series: counter store, RRD, REST (series and live
    minute), MQTT gauge/counter and a Home Assistant entity."""
    board = FakeBoard(short_tmp)
    board.appear()
    (short_tmp / "mq").mkdir()
    t0 = int(time.time()) - 30
    with Mosquitto(short_tmp / "mq") as broker:
        text = (config_text(board.path, short_tmp / "state") + EV
                + f'\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "gt-ev"\n')
        seen = Collector(broker.port)
        try:
            with running_daemon(board, text, short_tmp) as rig:
                for i in range(5):
                    board.step(t0 + i, power_w=[500.0, 0.0], pulses=[0, 0])
                ev: Any = next(o for o in rig.daemon.outputs if o.section == "ev")
                rig.wait(lambda: ev.port > 0)
                state = WallboxState(max_a=16, phases=3, energy_wh=12_000.0)
                powers: list[float] = []

                async def charge() -> None:
                    cp, task = await connect_wallbox(f"ws://127.0.0.1:{ev.port}", "garage", state)
                    assert await cp.boot() == "Accepted"
                    await cp.plug(Battery(soc=0.5))
                    for k in range(6):
                        state.advance(time.time(), 20.0 if k else 0.0)   # 20 s of charging per report
                        powers.append(state.power_w())
                        await cp.meter_values()
                        await asyncio.sleep(0.3)
                    task.cancel()

                asyncio.run(charge())
                v = rig.daemon.virtual
                rig.wait(lambda: v.accepted >= 10)
                assert rig.total(GARAGE) == round(state.energy_wh * 1000)      # the counter store
                rig.wait_rrd(GARAGE, int(time.time()) - 5, timeout=20)         # its RRD
                view = rig.daemon.view
                assert view is not None and view.series()[GARAGE][0].name == "E1"   # the REST API
                minute = [x for _t, x in view.live_window(GARAGE, int(time.time())) if x is not None]
                assert max(powers) > 0 and max(minute) == pytest.approx(max(powers) / 3.6, rel=0.01)
                assert v.refused == {}
                assert rig.daemon.status()["virtual"]["accepted"] == v.accepted
            assert wait_until(lambda: seen.last_json(counter_topic(GARAGE)) is not None)
            assert seen.last_json(counter_topic(GARAGE))[1] == pytest.approx(state.energy_wh, abs=0.01)
            assert seen.last_json(gauge_topic(GARAGE)) is not None
            assert any(GARAGE in t for t in seen.topics("homeassistant/"))  # discovered like a sensor
        finally:
            seen.close()


def test_implausible_virtual_values_are_refused_counted_and_lose_nothing(short_tmp: Path) -> None:
    """Values that cannot be true never reach a store; the good ones around them all do."""
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, short_tmp / "state") + EV
    with running_daemon(board, text, short_tmp) as rig:
        inbox, feed = rig.daemon.inbox, rig.daemon.virtual
        now = time.time()
        inbox.counter(GARAGE, now - 20, 1000.0, boot=1)         # the first reading: the starting point
        inbox.counter(GARAGE, now - 19, 1001.0, boot=1)
        inbox.counter(GARAGE, now - 18, 999.0, boot=1)          # fell within its epoch
        inbox.counter(GARAGE, now - 17, 9000.0, boot=1)         # 8 MWh/h: more than 100 kW delivers
        inbox.counter(GARAGE, now + 3600, 1002.0, boot=1)       # from the future
        inbox.counter(GARAGE, now - 16, math.nan, boot=1)
        inbox.power(GARAGE, now - 16, 1e9)                      # a gigawatt wallbox
        inbox.power("f" * 32, now - 16, 10.0)                   # nobody's series
        inbox.counter(GARAGE, now - 15, 1002.0, boot=1)
        inbox.counter(GARAGE, now - 10, 5.0, boot=2)            # rebooted with a lost register: flat
        inbox.counter(GARAGE, now - 9, 6.0, boot=2)
        inbox.power(GARAGE, now - 9, 7360.0)
        rig.daemon.link.wake()
        rig.wait(lambda: feed.accepted + sum(feed.refused.values()) >= 12)
        assert feed.refused == {"backwards": 1, "step": 1, "future": 1, "implausible": 2, "unknown": 1}
        assert feed.accepted == 6
        assert rig.total(GARAGE) == 1_003_000     # 1000 Wh start, +2 Wh, then +1 Wh in the new epoch


def test_an_expression_meter_is_a_pvoutput_field_through_the_spool(short_tmp: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The meter's register reaches PVOutput as the board's do: spooled, then read by the uploader."""
    from gridtap import daemon
    from gridtap.meters import derived_id
    from gridtap.outputs.pvoutput import output as pvoutput_output
    from gridtap.outputs.pvoutput.output import PVOutputOutput

    monkeypatch.setenv("GRIDTAP_PVOUTPUT_KEY", "c0ffee0123456789abcdef0123456789deadbeef")
    monkeypatch.setattr(daemon, "SPOOL_COMMIT_S", 0.5)
    monkeypatch.setattr(pvoutput_output, "FEED_PERIOD_S", 0.2)
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, short_tmp / "state") + """
[[meter]]
id = 1
sensors = ["mains"]

[[meter]]
id = 2
name = "house"
power_w = "M1.power_w + 100"
import_wh = "import_wh + max(M1.power_w + 100, 0) * dt / 3600"

[pvoutput]
system_id = 4242
base_url = "http://127.0.0.1:9/"
v3 = "house:energy"
v4 = "house:power"
"""
    sid = derived_id("house")
    with running_daemon(board, text, short_tmp) as rig:
        now = int(time.time())
        for i in range(20):
            board.step(now - 20 + i, power_w=[3500.0, 0.0], pulses=[0, 0])
        pv = next(x for x in rig.daemon.outputs if isinstance(x, PVOutputOutput))
        rig.wait(lambda: "house" in pv.up.counters and ("house", "W") in pv.up.gauges)
        points = rig.daemon.spool.pending("pvoutput", sid)
        assert points and points[-1][1] == pytest.approx(3600.0 * (points[-1][0] - points[0][0]) / 3600
                                                         + points[0][1], abs=0.01)


def test_a_virtual_sensor_is_an_iec104_asset(short_tmp: Path) -> None:
    """The operator's RTU (c104) reads category P from an expression meter as from a board sensor."""
    pytest.importorskip("c104", reason="c104 wheels exist for x86-64 only")
    import socket

    from tests.support.iec104 import Rtu

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, short_tmp / "state") + f"""
[[meter]]
id = 1
sensors = ["heatpump"]

[[meter]]
id = 2
name = "charger"
power_w = "M1.power_w * 2"

[iec104]
port = {port}
report_s = 0.5
time_tags = false
t1 = 3
t2 = 0.5
[iec104.assets]
ev = ["charger"]
"""
    with running_daemon(board, text, short_tmp), Rtu(port) as rtu:
        now = int(time.time())
        t = time.monotonic()
        for i in range(4):
            board.step(now - 4 + i, power_w=[0.0, 1500.0])
        end = t + 5
        got: dict[int, float] = {}
        while time.monotonic() < end and got.get(3105) != 3.0:   # ev.p in kW: twice the heat pump
            got = {ioa: v for _t, ioa, v, cot in rtu.received if "PERIODIC" in cot and _t > t}
            time.sleep(0.05)
        assert got.get(3105) == 3.0, rtu.received[-20:]
