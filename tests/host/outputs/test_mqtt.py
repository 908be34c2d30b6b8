"""MQTT: Flukso topics and Home Assistant discovery through a real mosquitto, including restarts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest

from gridtap.outputs.mqtt import (
    FLUKSO_UNITS,
    MqttPublisher,
    MqttSensor,
    counter_topic,
    discovery_configs,
    gauge_topic,
    payload,
)
from tests.support.broker import Collector, Mosquitto, free_port, wait_until

T0 = 1_700_000_000
MAINS = MqttSensor("1994ad6054785f2db8f726086c486ca9", "Mains import")
PV = MqttSensor("c1411c6b4f9910bbbab09f145f8533b9", "PV")
WATER = MqttSensor("4d0c8a5f2f7e1b9c3a6d5e4f3a2b1c0d", "Water", "water")
GAS = MqttSensor("7e3b1f9a2c4d6e8f0a1b2c3d4e5f6a7b", "Gas", "gas")
VOLT = MqttSensor("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "Mains voltage", "voltage")
ALL = [MAINS, PV, WATER, GAS, VOLT]

# Units Home Assistant's sensor platform accepts per device class (for energy, water and gas
# only those its Energy dashboard has always taken)
HA_UNITS = {"power": {"W", "kW"}, "energy": {"Wh", "kWh", "MWh"}, "voltage": {"V", "mV"},
            "water": {"m³", "gal"}, "gas": {"m³", "ft³"},
            "volume_flow_rate": {"m³/h", "ft³/min", "L/min", "gal/min"}}


def render(template: str, data: bytes) -> float:
    """Render a discovery value template the way Home Assistant does (Jinja2, value_json)."""
    return float(jinja2.Environment().from_string(template).render(value_json=json.loads(data)))


def test_discovery_configs_put_every_sensor_in_the_energy_dashboard() -> None:
    cfgs = {t: json.loads(v) for t, v in discovery_configs("flm-test", ALL).items()}
    assert len(cfgs) == 9  # gauge for all five, counter for the four that count
    by_topic = {c["state_topic"]: c for c in cfgs.values()}
    for topic, cfg in cfgs.items():
        assert topic == f"homeassistant/sensor/{cfg['unique_id']}/config"
        assert cfg["unit_of_measurement"] in HA_UNITS[cfg["device_class"]]
        assert cfg["availability_topic"] == "/device/flm-test/status"
        assert cfg["device"]["identifiers"] == ["gridtap_flm-test"]
    assert len({c["unique_id"] for c in cfgs.values()}) == 9
    expect = {  # (sensor, topic kind): (device_class, state_class, value the template must give)
        (MAINS, "counter"): ("energy", "total_increasing", 123456.0),
        (MAINS, "gauge"): ("power", "measurement", 2300.5),
        (WATER, "counter"): ("water", "total_increasing", 123.456),
        (WATER, "gauge"): ("volume_flow_rate", "measurement", round(2300.5 / 1440, 3)),
        (GAS, "counter"): ("gas", "total_increasing", 123.456),
        (GAS, "gauge"): ("volume_flow_rate", "measurement", round(2300.5 / 24000, 4)),
        (VOLT, "gauge"): ("voltage", "measurement", 2300.5),
    }
    for (s, what), (dc, sc, value) in expect.items():
        topic = counter_topic(s.sensor_id) if what == "counter" else gauge_topic(s.sensor_id)
        cfg = by_topic[topic]
        assert (cfg["device_class"], cfg["state_class"]) == (dc, sc)
        unit = FLUKSO_UNITS[s.kind][1 if what == "counter" else 0]
        assert unit is not None
        raw = 123456 if what == "counter" else 2300.5
        assert render(cfg["value_template"], payload(T0, raw, unit)) == pytest.approx(value)
    assert counter_topic(VOLT.sensor_id) not in by_topic


def test_payloads_are_flukso_triples() -> None:
    assert payload(T0, 1234, "Wh") == b'[1700000000,1234,"Wh"]'
    assert payload(T0, -35.12345, "W") == b'[1700000000,-35.123,"W"]'
    with pytest.raises(ValueError, match="32 lowercase hex"):
        MqttSensor("xyz", "bad")
    with pytest.raises(ValueError, match="unknown kind 'steam'"):
        MqttSensor(MAINS.sensor_id, "m", "steam")
    pub = MqttPublisher("127.0.0.1", 1883, "flm-test", [VOLT])
    with pytest.raises(ValueError, match="has no counter"):
        pub.counter(VOLT.sensor_id, T0, 1)
    with pytest.raises(ValueError, match="not configured"):
        pub.gauge(MAINS.sensor_id, T0, 1)
    with pytest.raises(ValueError, match="device id"):
        MqttPublisher("127.0.0.1", 1883, "bad id/with slash", [VOLT])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


def publisher(port: int, sensors: list[MqttSensor] = ALL) -> MqttPublisher:
    return MqttPublisher("127.0.0.1", port, "flm-test", sensors, reconnect_min=0.1, reconnect_max=0.4)


def test_live_values_and_discovery_are_retained_on_a_real_broker(broker: Mosquitto) -> None:
    pub = publisher(broker.port)
    pub.start()
    try:
        assert pub.wait_connected(10)
        pub.gauge(MAINS.sensor_id, T0, 1520.25)
        pub.counter(MAINS.sensor_id, T0, 98765)
        pub.gauge(WATER.sensor_id, T0, 250)
        pub.counter(WATER.sensor_id, T0, 4321)
        pub.flush()
        late = Collector(broker.port)  # a client that connects afterwards sees the retained state
        try:
            assert wait_until(lambda: len(late.topics("homeassistant/")) == 9
                              and late.last(counter_topic(WATER.sensor_id)) is not None)
            assert late.last_json(gauge_topic(MAINS.sensor_id)) == [T0, 1520.25, "W"]
            assert late.last_json(counter_topic(MAINS.sensor_id)) == [T0, 98765, "Wh"]
            assert late.last_json(gauge_topic(WATER.sensor_id)) == [T0, 250, "L/day"]
            assert late.last_json(counter_topic(WATER.sensor_id)) == [T0, 4321, "L"]
            assert late.last("/device/flm-test/status") == b"online"
            # live values keep flowing to a subscriber
            pub.gauge(MAINS.sensor_id, T0 + 1, 1499)
            assert wait_until(lambda: late.last_json(gauge_topic(MAINS.sensor_id)) == [T0 + 1, 1499, "W"])
        finally:
            late.close()
    finally:
        pub.stop()
    after = Collector(broker.port)
    try:
        assert wait_until(lambda: after.last("/device/flm-test/status") == b"offline")
    finally:
        after.close()


def test_after_a_broker_restart_counters_end_at_the_latest_value(broker: Mosquitto) -> None:
    pub = publisher(broker.port, [MAINS, PV])
    pub.start()
    try:
        assert pub.wait_connected(10)
        for i in range(3):
            pub.counter(MAINS.sensor_id, T0 + i, 1000 + i)
            pub.counter(PV.sensor_id, T0 + i, 50 + i)
        pub.flush()
        broker.stop()  # the broker dies and forgets every retained message (no persistence)
        assert wait_until(lambda: not pub.connected)
        for i in range(3, 40):  # the daemon keeps metering while the broker is away
            pub.counter(MAINS.sensor_id, T0 + i, 1000 + i)
            pub.gauge(MAINS.sensor_id, T0 + i, 300 + i)
        pub.counter(PV.sensor_id, T0 + 39, 89)
        pub.flush()
        assert pub.dropped > 0
        broker.start()
        assert wait_until(lambda: pub.connected and pub.connects == 2)
        fresh = Collector(broker.port)
        try:
            assert wait_until(lambda: fresh.last_json(counter_topic(PV.sensor_id)) == [T0 + 39, 89, "Wh"])
            main_counter = counter_topic(MAINS.sensor_id)
            assert wait_until(lambda: fresh.last_json(main_counter) == [T0 + 39, 1039, "Wh"])
            assert fresh.last_json(gauge_topic(MAINS.sensor_id)) == [T0 + 39, 339, "W"]
            assert wait_until(lambda: len(fresh.topics("homeassistant/")) == 4)
            # and live values flow again
            pub.gauge(MAINS.sensor_id, T0 + 40, 777)
            pub.counter(MAINS.sensor_id, T0 + 40, 1040)
            assert wait_until(lambda: fresh.last_json(main_counter) == [T0 + 40, 1040, "Wh"])
            assert wait_until(lambda: fresh.last_json(gauge_topic(MAINS.sensor_id)) == [T0 + 40, 777, "W"])
        finally:
            fresh.close()
    finally:
        pub.stop()


def test_a_broker_that_comes_up_late_gets_the_latest_state(tmp_path: Path) -> None:
    port = free_port()
    pub = publisher(port, [MAINS])
    pub.start()
    try:
        for i in range(5):
            pub.counter(MAINS.sensor_id, T0 + i, 10 * i)
        pub.flush()
        assert not pub.connected and pub.published == 0
        with Mosquitto(tmp_path, port=port):
            assert pub.wait_connected(10)
            c = Collector(port)
            try:
                assert wait_until(lambda: c.last_json(counter_topic(MAINS.sensor_id)) == [T0 + 4, 40, "Wh"])
            finally:
                c.close()
    finally:
        pub.stop()


def test_reactive_power_and_energy_entities() -> None:
    """A CT's reactive power (signed var) and its Q+ / Q- registers (varh), as Home Assistant's
    reactive_power and reactive_energy device classes, on the series ids board/plausible.py derives."""
    from gridtap.board.plausible import reactive_ids

    qpos, qneg = reactive_ids(MAINS.sensor_id)
    sensors = [MqttSensor(qpos, "Mains", "reactive"), MqttSensor(qneg, "Mains", "reactive_energy")]
    configs = discovery_configs("flm-test", sensors).values()
    cfgs = {c["unique_id"]: c for c in (json.loads(v) for v in configs)}
    assert len(cfgs) == 3  # Q+ series: power gauge and counter; Q- series: counter only
    power = cfgs[f"gridtap_{qpos}_gauge"]
    assert (power["device_class"], power["unit_of_measurement"], power["state_class"]) == (
        "reactive_power", "var", "measurement")
    assert power["state_topic"] == gauge_topic(qpos) and power["name"] == "Mains reactive power"
    assert render(power["value_template"], payload(T0, -812.5, "var")) == -812.5
    for sid, name in ((qpos, "Mains reactive energy Q+"), (qneg, "Mains reactive energy Q-")):
        c = cfgs[f"gridtap_{sid}_counter"]
        assert (c["device_class"], c["unit_of_measurement"], c["state_class"], c["name"]) == (
            "reactive_energy", "varh", "total_increasing", name)
        assert render(c["value_template"], payload(T0, 1234.5, "varh")) == 1234.5


def test_mqtt_output_publishes_reactive_values_on_a_real_broker(broker: Mosquitto, tmp_path: Path) -> None:
    from gridtap.board.plausible import reactive_ids
    from gridtap.config import parse_config
    from gridtap.outputs import OutputContext
    from gridtap.outputs.mqtt import MqttOutput
    from tests.support.daemon import IMP, config_text

    qpos, qneg = reactive_ids(IMP)
    text = config_text(tmp_path / "tty", tmp_path / "state") + (
        f'\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "flm-test"\n')
    cfg = parse_config(text, tmp_path / "gridtap.toml")
    out = MqttOutput(cfg.outputs["mqtt"], OutputContext(cfg))
    out.start()
    try:
        assert out.pub.wait_connected(10)
        out.gauge(IMP, "import", T0, 1500.0, "W")
        out.gauge(IMP, "import", T0, -420.5, "var")
        out.reactive_counter(qpos, T0 * 1000 + 250, 98_765)
        out.reactive_counter(qneg, T0 * 1000 + 250, 4_321)
        out.pub.flush()
        late = Collector(broker.port)
        try:
            assert wait_until(lambda: late.last(counter_topic(qneg)) is not None)
            assert late.last_json(gauge_topic(IMP)) == [T0, 1500, "W"]  # the W gauge is not overwritten
            assert late.last_json(gauge_topic(qpos)) == [T0, -420.5, "var"]
            assert late.last_json(counter_topic(qpos)) == [T0, 98.765, "varh"]
            assert late.last_json(counter_topic(qneg)) == [T0, 4.321, "varh"]
            assert late.last(f"homeassistant/sensor/gridtap_{qneg}_counter/config") is not None
        finally:
            late.close()
    finally:
        out.stop()
