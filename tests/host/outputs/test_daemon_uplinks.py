"""The daemon with its optional outputs: the Flukso spool + uploader (ACK after commit) and MQTT."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtap import daemon
from gridtap.config import parse_config
from gridtap.daemon import Daemon
from gridtap.outputs.flukso import FluksoOutput
from gridtap.outputs.pvoutput import output as pvoutput_output
from gridtap.outputs.pvoutput.output import PVOutputOutput
from tests.support.broker import Collector, Mosquitto, wait_until
from tests.support.daemon import EXP, IMP, PULSE, Rig, config_text, running_daemon
from tests.support.fakeboard import FakeBoard
from tests.support.flukso_server import FluksoServer

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def uplink_rig(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, rrd_mode: str
) -> Iterator[tuple[Rig, FluksoServer, Mosquitto]]:
    monkeypatch.setattr(daemon, "SPOOL_COMMIT_S", 0.5)
    (short_tmp / "device.key").write_text(KEY + "\n")
    board = FakeBoard(short_tmp, retx_s=2.0)
    board.appear()
    with FluksoServer({IMP: KEY, EXP: KEY, PULSE: KEY}) as srv, Mosquitto(short_tmp) as broker:
        text = (
            config_text(board.path, short_tmp / "state", rrd_mode=rrd_mode)
            + f"""
[flukso]
base_url = "{srv.url}"
key_file = "{short_tmp / "device.key"}"
interval_s = 1

[mqtt]
host = "127.0.0.1"
port = {broker.port}
device_id = "gridtap-test"
"""
        )
        with running_daemon(board, text, short_tmp) as r:
            yield r, srv, broker


def test_spool_commit_comes_before_the_ack_and_the_server_gets_every_wh(
    uplink_rig: tuple[Rig, FluksoServer, Mosquitto],
) -> None:
    rig, srv, broker = uplink_rig
    sub = Collector(broker.port)
    try:
        now = int(time.time())
        for i in range(10):
            rig.board.step(now - 10 + i, power_w=[3600.0], pulses=[1])
        # counted at once, but ACKed only once the spool has committed them
        rig.wait(lambda: rig.total(IMP) == 10_000)
        assert rig.board.wait_acked(10)
        fl = next(x for x in rig.daemon.outputs if isinstance(x, FluksoOutput))
        assert fl.spool.uncommitted() == 0
        # the server holds every whole Wh (the spool ages a minute to its first and last point,
        # as Flukso did: cumulative counters keep the energy exact)
        rig.wait(lambda: srv.measurements(IMP)[-1:] == [(now - 1, 10)], timeout=15)
        rig.wait(lambda: srv.measurements(PULSE)[-1:] == [(now - 1, 10)], timeout=15)
        assert srv.measurements(EXP)[-1][1] == 0
        # MQTT: Flukso counter and gauge topics, retained
        assert wait_until(lambda: sub.last_json(f"/sensor/{IMP}/counter") == [now - 1, 10, "Wh"])
        assert wait_until(lambda: sub.last_json(f"/sensor/{IMP}/gauge") == [now - 1, 3600, "W"])
        assert wait_until(lambda: any(t.startswith("homeassistant/sensor/") for t in sub.topics()))
        # /status (and the web page) name each destination's backlog and last upload (#15 item 5)
        rig.wait(lambda: rig.daemon.status()["outputs"]["flukso"]["backlog"] == 0, timeout=15)
        outs = rig.daemon.status()["outputs"]
        assert abs(outs["flukso"]["last_upload"] - time.time()) < 15 and outs["flukso"]["error"] is None
        assert outs["mqtt"]["connected"] and outs["mqtt"]["published"] > 0
    finally:
        sub.close()


def test_config_without_key_is_refused(short_tmp: Path) -> None:
    from gridtap.errors import UserError

    text = (
        config_text(short_tmp / "tty", short_tmp / "state")
        + f"""
[flukso]
base_url = "http://127.0.0.1:9"
key_file = "{short_tmp / "missing.key"}"
"""
    )
    cfg = parse_config(text, short_tmp / "gridtap.toml")
    d = Daemon(cfg)
    with pytest.raises(UserError, match="cannot read the Flukso device key file"):
        d.start()
    d.close()


def test_pvoutput_is_a_destination_of_the_spool_and_the_ack_waits_for_it(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#14 item 2: with only [pvoutput], counters go through the durable spool and the board is
    ACKed only after its commit (they sat in a RAM queue, ACKed at once, before)."""
    monkeypatch.setenv("GRIDTAP_PVOUTPUT_KEY", "c0ffee0123456789abcdef0123456789deadbeef")
    monkeypatch.setattr(daemon, "SPOOL_COMMIT_S", 3.0)
    monkeypatch.setattr(pvoutput_output, "FEED_PERIOD_S", 0.2)
    board = FakeBoard(short_tmp, retx_s=30.0)
    board.appear()
    text = (
        config_text(board.path, short_tmp / "state")
        + """
[pvoutput]
system_id = 4242
base_url = "http://127.0.0.1:9/"
v2 = "mains.export:power"
v4 = "mains:power"
"""
    )
    with running_daemon(board, text, short_tmp) as r:
        now = int(time.time())
        for i in range(5):
            board.step(now - 5 + i, power_w=[-1000.0])
        session = r.daemon.session
        assert session is not None
        r.wait(lambda: session.stats.tuples >= 5)
        time.sleep(0.5)
        assert board.unacked(), "ACKed before the spool commit"
        assert board.wait_acked(10)
        pv = r.daemon.status()["outputs"]["pvoutput"]  # nothing accepted: the server is not there
        assert pv["last_upload"] is None and pv["backlog"] >= 0 and pv["statuses"] >= 0
        spool = r.daemon.spool
        assert spool.destinations == ("pvoutput",)
        pv = next(x for x in r.daemon.outputs if isinstance(x, PVOutputOutput))
        # the uploader got the counters from the spool (and the gauges directly)
        r.wait(lambda: {"mains", "mains.export"} <= set(pv.up.counters))
        assert pv.up.counters["mains.export"].last_ts == now - 1
        assert spool.pending("pvoutput", EXP)[-1][0] == now - 1
        r.wait(lambda: ("mains.export", "W") in pv.up.gauges)


VOLT = "e" * 31 + "1"


def test_mqtt_carries_the_ct_voltage_on_its_own_sensor(short_tmp: Path) -> None:
    """#15 item 6: a CT with voltage_id publishes its Vrms as a Flukso gauge and an HA voltage sensor,
    so a FluksoToPvoutput v6 (rule "v6 * 1.154") has something to read; the power gauge keeps its W."""
    board = FakeBoard(short_tmp)
    board.appear()
    with Mosquitto(short_tmp) as broker:
        text = config_text(board.path, short_tmp / "state").replace(
            f'export_id = "{EXP}"', f'export_id = "{EXP}"\nvoltage_id = "{VOLT}"'
        ) + f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
device_id = "gridtap-test"
"""
        sub = Collector(broker.port)
        try:
            with running_daemon(board, text, short_tmp):
                now = int(time.time())
                for i in range(3):
                    board.step(now - 3 + i, power_w=[1150.0])  # the fake board's Vrms is 230.000 V
                assert board.wait_acked()
                assert wait_until(lambda: sub.last_json(f"/sensor/{VOLT}/gauge") == [now - 1, 230, "V"])
                assert wait_until(lambda: sub.last_json(f"/sensor/{IMP}/gauge") == [now - 1, 1150, "W"])
                topic = f"homeassistant/sensor/gridtap_{VOLT}_gauge/config"
                assert wait_until(lambda: sub.last(topic) is not None)
                cfg = sub.last_json(topic)
                assert (cfg["device_class"], cfg["unit_of_measurement"], cfg["state_class"]) == (
                    "voltage", "V", "measurement")
                assert cfg["state_topic"] == f"/sensor/{VOLT}/gauge" and cfg["name"] == "mains voltage"
                # what FluksoToPvoutput does with it: value_json[1] through the seed's v6 rule
                from gridtap.rules import compile_mapping

                rules = compile_mapping({"v6": ["v6 * 1.154"]}, "flukso")
                v6 = sub.last_json(f"/sensor/{VOLT}/gauge")[1]
                assert round(rules.evaluate({"v6": v6}).values["v6"], 2) == 265.42
                # only the CT that names a voltage_id has one
                assert not [t for t in sub.topics("/sensor/") if t.endswith("/gauge")
                            and sub.last_json(t)[2] == "V" and t != f"/sensor/{VOLT}/gauge"]
        finally:
            sub.close()


def test_voltage_id_is_a_ct_key_and_unique(short_tmp: Path) -> None:
    from gridtap.errors import UserError

    base = config_text(short_tmp / "tty", short_tmp / "state")
    with pytest.raises(UserError, match="voltage_id.*already used"):
        parse_config(base.replace(f'export_id = "{EXP}"', f'export_id = "{EXP}"\nvoltage_id = "{EXP}"'),
                     short_tmp / "gridtap.toml")
    with pytest.raises(UserError, match="voltage_id'?: does not apply to a pulse sensor"):
        pulse = base.replace("meter_constant = 1000\n", f'meter_constant = 1000\nvoltage_id = "{VOLT}"\n', 1)
        parse_config(pulse, short_tmp / "gridtap.toml")
