"""[inverter] in gridtap.toml, and the controller thread with its Home Assistant entities on a real
mosquitto broker against the simulated LuxPower datalogger."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gridtap.config import parse_config
from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.luxpower import registers as r
from gridtap.control.luxpower.config import parse_config as parse_inverter
from gridtap.control.service import InverterService
from gridtap.errors import UserError
from gridtap.outputs.mqtt import MqttPublisher
from gridtap_sim.luxpower import Datalogger, Inverter
from tests.host.control.conftest import DL, FAST, INV
from tests.host.control.test_luxpower_client import until
from tests.host.test_daemon_config import GOOD
from tests.support.broker import Collector, Mosquitto

SECTION = f"""
[inverter]
host = "127.0.0.1"
datalogger_serial = "{DL}"
inverter_serial = "{INV}"
schedule = ["00:30-04:30"]
"""


def error_of(text: str) -> str:
    with pytest.raises(UserError) as exc:
        parse_config(text)
    return str(exc.value)


def line(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_inverter_section_parses_and_errors_name_key_and_line() -> None:
    s = parse_config(GOOD + SECTION).outputs["inverter"]
    assert (s.host, s.port, s.inverter_serial, s.schedule) == ("127.0.0.1", 8000, INV, ("00:30-04:30",))
    for bad, key, words in [
        (f'inverter_serial = "{INV}"', 'inverter_serial = "12345"', "10-character serial"),
        ('schedule = ["00:30-04:30"]', 'schedule = ["00:30-4:30"]', "not HH:MM-HH:MM"),
        ('host = "127.0.0.1"', 'host = "127.0.0.1"\nport = 80000', "from 1 to 65535"),
        ('host = "127.0.0.1"', 'host = "127.0.0.1"\ncolour = "red"', "unknown key"),
    ]:
        text = GOOD + SECTION.replace(bad, key)
        msg = error_of(text)
        first = key.splitlines()[-1]
        key_name = first.split(" =")[0]
        assert f"line {line(text, first)}: [inverter] key '{key_name}'" in msg and words in msg, msg
    with pytest.raises(UserError, match="datalogger_serial': is required"):
        parse_inverter({"host": "x", "inverter_serial": INV})


def test_service_over_mqtt_override_and_safe_stop(tmp_path: Path) -> None:
    inv = Inverter(INV)
    settings = replace(parse_inverter({"host": "127.0.0.1", "datalogger_serial": DL, "inverter_serial": INV,
                                       "tick_s": 1, "min_dwell_s": 0}), link=FAST)
    with Mosquitto(tmp_path) as broker, Datalogger(inv, DL, heartbeat_s=0.2, push_s=0.2) as dl:
        settings = replace(settings, port=dl.port, tick_s=0.05)
        pub = MqttPublisher("127.0.0.1", broker.port, "flm-test", [], reconnect_min=0.1, reconnect_max=0.4)
        svc = InverterService(settings, None, time.time, mqtt=pub, device_id="flm-test")
        pub.start()
        svc.start()
        sub = Collector(broker.port)
        try:
            assert pub.wait_connected(10)
            base = "/device/flm-test/inverter"
            switch = "homeassistant/switch/gridtap_flm-test_ac_charge_override/config"
            until(lambda: sub.last(switch) is not None)
            cfg = json.loads(sub.last("homeassistant/number/gridtap_flm-test_soc_target/config") or b"{}")
            assert cfg["command_topic"] == f"{base}/soc_target/set" and cfg["max"] == 100
            until(lambda: (json.loads(sub.last(f"{base}/state") or b"{}")).get("soc_pct") == 50.0)
            sub.client.publish(f"{base}/soc_target/set", b"80", qos=1)
            sub.client.publish(f"{base}/override/set", b"ON", qos=1)
            until(lambda: inv.hold[r.REG_FUNCTION] & r.BIT_AC_CHARGE)
            until(lambda: json.loads(sub.last(f"{base}/state") or b"{}").get("ac_charge") is True)
            state = json.loads(sub.last(f"{base}/state") or b"{}")
            assert state["soc_target"] == 80 and state["source"] == "override"
            sub.client.publish(f"{base}/soc_target/set", b"lots", qos=1)
            until(lambda: svc.bad_commands == 1)
        finally:
            svc.stop()  # the daemon's stop: the safe state, verified
            pub.stop()
            sub.client.loop_stop()
        assert inv.hold[r.REG_FUNCTION] & (r.BIT_AC_CHARGE | r.BIT_FORCED_DISCHARGE) == 0
        assert svc.override.soc_target == 80


class Surplus:
    """Charge while a price is known and the grid exports."""

    def decide(self, ctx: ControlContext) -> Decision:
        export = ctx.meters.get("mains.power_w", 0.0) < 0
        on = ctx.prices is not None and export
        return Decision(InverterState(ac_charge=on), f"prices {ctx.prices}, export {export}", "policy")


def test_service_context_carries_prices_and_meters() -> None:
    settings = parse_inverter({"host": "127.0.0.1", "datalogger_serial": DL, "inverter_serial": INV})
    failing = {"on": False}

    def prices(now: float) -> object:
        if failing["on"]:
            raise OSError("price server down")
        return "series"

    # "mains" (a CT with an export series, M1) and "gas" (pulses, M2)
    good = GOOD.replace("channel = 0\n", 'channel = 0\nexport_id = "00000000000000000000000000000001"\n')
    sensors = parse_config(good).sensors
    svc = InverterService(settings, Surplus(), time.time, prices=prices, sensors=sensors)
    mains = sensors[0]
    svc.gauge(mains.id, "import", 0, 0.0, "W")
    svc.gauge(str(mains.export_id), "export", 0, 1500.0, "W")
    svc.gauge(mains.id, "import", 0, 230.0, "V")  # not a power: not a meter
    svc.counter(mains.id, "import", 0, 12_345_000)
    meters = svc.meters()
    assert meters["mains.power_w"] == meters["M1.power_w"] == -1500.0
    assert meters["M1.import_wh"] == 12345.0 and "M2.power_w" not in meters
    assert svc.controller.decide(0.0).state.ac_charge
    failing["on"] = True
    d = svc.controller.decide(0.0)
    assert not d.state.ac_charge and "prices None" in d.reason


def test_registered_output_takes_control_and_prices(tmp_path: Path) -> None:
    """[inverter] with [control] and [prices]: the policy and its dry run come from [control]; a price
    source that cannot be reached leaves the safe Decision "no price known"."""
    from gridtap import outputs

    text = GOOD.replace("[board]", f'[daemon]\nstate_dir = "{tmp_path}"\n\n[board]') + SECTION + '''
[prices]
source = "octopus"
tariff = "E-1R-AGILE-24-10-01-C"
base_url = "http://127.0.0.1:9"

[control]
mode = "policy"
policy = \'\'\'
ac_charge = price.now <= 5 && soc < 95
\'\'\'
dry_run = true
'''
    cfg = parse_config(text)
    out = outputs.build("inverter", cfg.outputs["inverter"], outputs.OutputContext(cfg, None, time.time))
    assert isinstance(out, InverterService) and out.s.control.dry_run
    d = out.controller.decide(time.time())
    assert d.source == "safe" and d.reason == "no price known" and not d.state.ac_charge
