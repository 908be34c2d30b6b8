"""`gridtap calibrate` end to end on the virtual board: CT/VT errors and a wrongly configured board.

The steady bench's loads are the reference: 230 V sine, CT1 a 10 A heater
(2300 W), CT2 10 A at PF 0.5 lagging (1150 W). The transducers have gain
errors and phase leads (VT 2 deg, CT 3 deg), and the board is configured with
wrong gains and a wrong phase. After `gridtap calibrate` with the reference
readings the board's gauges must agree with the reference; this also pins the
sign of the phase correction against the firmware's power.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gridtap.board.client import BoardClient
from gridtap.board.session import Session
from gridtap.commands import calibrate
from gridtap.commands.calibrate import Reading, average_gauges
from gridtap.config import BoardConfig, load_config
from gridtap.errors import UserError
from gridtap_fw import wire
from tests.support.hil.rig import VirtualRig

TRANSDUCERS = {"gain_error_sd": 0.01, "vt_lead_deg": 2.0, "ct_lead_deg": 3.0}

# The daemon's config for the bench: CT2 declared on L2, so the file's phase_deg must be the
# board's phase_mdeg without L2's 120 degrees (finding 13.7).
TOML = """\
# the bench board
[board]
port = "/dev/ttyUSB0"

[[sensor]]
name = "heater"
id = "0123456789abcdef0123456789abcdef"
kind = "ct"
channel = 0

[[sensor]]
name = "motor"   # PF 0.5
id = "1123456789abcdef0123456789abcdef"
kind = "ct"
channel = 1
line = "L2"
gain = 1.0       # calibration, written by gridtap calibrate
phase_deg = 0.0
"""


def daemon_wants(path: Path, channel: int) -> dict[int, Any]:
    """The CT parameters the daemon would write to the board for this config (it writes where they differ)."""
    cfg = load_config(path)
    ct = {s.index: s for s in cfg.sensors if s.kind == "ct"}
    fake = SimpleNamespace(board=BoardConfig(), ct=ct, pulse={})
    for target, index, items, _what in Session.config_frames(cast(Any, fake), 3, 0):
        if target == wire.TARGET_CT and index == channel:
            return dict(items)
    raise AssertionError(f"no CONFIG_SET for channel {channel}")
WRONG_V_GAIN, WRONG_I_GAIN, WRONG_PHASE = 1_040_000, 960_000, 4_000


def cli(argv: list[str]) -> int:
    """`gridtap calibrate ARGV` as gridtap.cli.main runs it."""
    parser = argparse.ArgumentParser(prog="gridtap")
    calibrate.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["calibrate", *argv])
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"gridtap: error: {exc}", file=sys.stderr)
        return 2


def reading(client: BoardClient, channel: int, seconds: float = 2.0) -> Reading:
    client.hello()
    return average_gauges(client.gauges(channel, seconds)[2:])


def errors(r: Reading, volts: float, amps: float, watts: float) -> tuple[float, float, float]:
    assert r.watts is not None
    return (abs(r.volts / volts - 1) * 100, abs(r.amps / amps - 1) * 100, abs(r.watts / watts - 1) * 100)


@pytest.fixture
def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = VirtualRig(tmp_path, "steady", 5, sim=TRANSDUCERS, speed=25.0)
    r.start(7200.0)
    yield r
    r.stop()
    r.close()


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    p = tmp_path / "gridtap.toml"
    p.write_text(TOML)
    return p


def test_reactive_reference_fixes_gains_and_phase(rig: VirtualRig, toml: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    client = rig.client()
    try:
        client.config_set(wire.TARGET_VOLTAGE, 0, ((wire.P_GAIN_E6, WRONG_V_GAIN),))
        client.config_set(wire.TARGET_CT, 1,
                          ((wire.P_GAIN_E6, WRONG_I_GAIN), (wire.P_PHASE_MDEG, WRONG_PHASE)))
        before = errors(reading(client, 1), 230.0, 10.0, 1150.0)
    finally:
        client.close()
    assert max(before) > 3.0                    # the board really was wrong
    assert cli(["-c", str(toml), "--port", rig.port, "--channel", "1", "--ref-volts", "230",
                "--ref-amps", "10", "--ref-watts", "1150", "--seconds", "3"]) == 0
    out = capsys.readouterr().out
    assert "phase" in out and "(committed)" in out
    client = rig.client()
    try:
        after = errors(reading(client, 1, 3.0), 230.0, 10.0, 1150.0)
        cfg = client.config_get(wire.TARGET_CT, 1, (wire.P_GAIN_E6, wire.P_PHASE_MDEG))
    finally:
        client.close()
    assert max(after) < 0.3, after
    # VT lead 2 deg minus CT lead 3 deg: docs/protocol.md's phase_mdeg convention
    assert cfg[wire.P_PHASE_MDEG] == pytest.approx(-1000, abs=150)
    # Settings have one owner (finding 13.7): gridtap.toml now holds the calibration, so the daemon's
    # next HELLO finds the board as the file wants it and undoes nothing ...
    want = daemon_wants(toml, 1)
    assert (want[wire.P_GAIN_E6], want[wire.P_PHASE_MDEG]) == (cfg[wire.P_GAIN_E6], cfg[wire.P_PHASE_MDEG])
    # ... the file's phase_deg is the board's phase without L2's 120 degrees (and so is the printed one)
    motor = load_config(toml).sensors[1]
    assert motor.phase_deg == pytest.approx(cfg[wire.P_PHASE_MDEG] / 1000 - 120, abs=0.0015)
    assert f"-> {motor.phase_deg:.3f} degrees" in out and "L2's 120" in out
    # ... and nothing else in the file changed, comments included
    pairs = zip(TOML.splitlines(), toml.read_text().splitlines(), strict=True)
    changed = [(a, b) for a, b in pairs if a != b]
    assert [a for a, _b in changed] == ["gain = 1.0       # calibration, written by gridtap calibrate",
                                        "phase_deg = 0.0"]
    assert changed[0][1].endswith("       # calibration, written by gridtap calibrate")


def test_resistive_reference_changes_gains_only(rig: VirtualRig, toml: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["-c", str(toml), "--port", rig.port, "--channel", "0", "--ref-volts", "230",
                "--ref-amps", "10", "--ref-watts", "2300", "--seconds", "3"]) == 0
    assert "phase_deg    unchanged" in capsys.readouterr().out
    # the heater's [[sensor]] had no gain key: it is added under its header, phase_deg is not
    heater = TOML.split("[[sensor]]")[1]
    written = toml.read_text().split("[[sensor]]")[1]
    assert written.startswith("\ngain = ") and "phase_deg" not in written
    assert written.split("\n", 2)[2] == heater.lstrip("\n")
    client = rig.client()
    try:
        after = errors(reading(client, 0, 3.0), 230.0, 10.0, 2300.0)
        cfg = client.config_get(wire.TARGET_CT, 0, (wire.P_PHASE_MDEG,))
    finally:
        client.close()
    assert max(after) < 0.3, after
    assert cfg[wire.P_PHASE_MDEG] == 0


def test_dry_run_writes_nothing_and_bad_channel_is_named(rig: VirtualRig,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--port", rig.port, "--channel", "1", "--ref-volts", "230", "--ref-amps", "10",
                "--ref-watts", "1150", "--seconds", "2", "--dry-run"]) == 0
    assert "(committed)" not in capsys.readouterr().out
    client = rig.client()
    try:
        assert client.config_get(wire.TARGET_CT, 1, (wire.P_GAIN_E6,)) == {wire.P_GAIN_E6: 1_000_000}
    finally:
        client.close()
    assert cli(["--port", rig.port, "--channel", "7", "--ref-volts", "230", "--ref-amps", "10",
                "--dry-run"]) == 2
    assert "--channel must be 0..2" in capsys.readouterr().err
    # writing needs the daemon's config (else the daemon would undo it), and a home in it
    assert cli(["--port", rig.port, "--channel", "1", "--ref-volts", "230", "--ref-amps", "10"]) == 2
    assert "-c gridtap.toml" in capsys.readouterr().err


def test_a_channel_without_a_sensor_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "gridtap.toml"
    p.write_text(TOML)
    assert cli(["-c", str(p), "--port", str(tmp_path / "none"), "--channel", "2", "--ref-volts", "230",
                "--ref-amps", "10"]) == 2
    assert "no [[sensor]] on CT channel 2" in capsys.readouterr().err
