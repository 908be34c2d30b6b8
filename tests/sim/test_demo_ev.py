"""`gridtap demo --scenario ev`: the config it writes, how it judges the connection, and a short real run
(virtual board, daemon with its OCPP central system, three simulated wallboxes closing the loop
through the grid CT)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gridtap.config import parse_config
from gridtap.control.ev.config import sensor_id
from gridtap_sim import demo, demo_ev


def test_its_config_has_three_wallboxes_as_sensors_under_25_a(tmp_path: Path) -> None:
    text = demo.daemon_toml(tmp_path, tmp_path / "tty", 8080, None) + "\n" + "\n".join(demo_ev.ev_toml(9000))
    cfg = parse_config(text, tmp_path / "gridtap.toml")
    ev = cfg.outputs["ev"]
    assert ev.max_total_current_a == 25 and [w.id for w in ev.wallboxes] == ["garage", "carport", "street"]
    assert [(s.name, s.id) for s in cfg.virtual] == [(f"E{n}", sensor_id(w.id))
                                                     for n, w in enumerate(ev.wallboxes, 1)]


def test_the_connection_is_judged_per_phase_second_by_second() -> None:
    """The grid CT is L1 (the house, the PV, the cars' L1); L2/L3 carry only the 3-phase cars."""
    t0 = 1_000_000.0
    rows = [{"t": t0, "id": "a", "amps": 16.0, "phases": 3, "power_w": 11040.0, "energy_wh": 0.0},
            {"t": t0, "id": "b", "amps": 10.0, "phases": 1, "power_w": 2300.0, "energy_wh": 0.0},
            {"t": t0 + 5, "id": "b", "amps": 10.0, "phases": 3, "power_w": 6900.0, "energy_wh": 1.0}]
    net = np.full(10, 26 * 230.0 - 4000.0)    # L1: the cars' 26 A less 4 kW of PV export
    got = demo_ev.connection(net, rows, t0)
    assert got["max_phase_a"] == 26.0 and got["seconds_over_limit"] == 5   # L2/L3 at 26 A from t0+5
    cars_wh = (11040.0 + 2300.0) * 5 / 3600 + (11040.0 + 6900.0) * 5 / 3600
    assert got["ev_wh"] == pytest.approx(cars_wh, abs=0.1)
    assert got["pv_wh"] == pytest.approx(4000.0 * 10 / 3600, abs=0.1)   # the export the cars took


@pytest.mark.slow
def test_a_short_ev_demo_charges_the_cars_and_keeps_the_limit(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    p = subprocess.run([sys.executable, "-m", "gridtap.cli", "demo", "--scenario", "ev", "--out", str(out),
                        "--speed", "max", "--duration", "420", "--status-every", "60", "--no-mqtt"],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "E1 garage" in p.stdout and "EV charging" in p.stdout, p.stdout
    ev = json.loads((out / "report.json").read_text())["ev"]
    boxes = {b["id"]: b for b in ev["wallboxes"]}
    assert boxes["garage"]["wallbox_wh"] > 20         # its car came at +1 min and charged
    for b in ev["wallboxes"]:   # each wallbox's meter reached the daemon as its E<n> sensor
        assert b["daemon_wh"] == pytest.approx(b["wallbox_wh"], abs=25), b   # up to the last report
    assert ev["seconds_over_limit"] == 0 and ev["max_phase_a"] <= 25.5
    assert (out / "E1.png").exists()
