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

import pytest

from gridtap.board.client import BoardClient
from gridtap.commands import calibrate
from gridtap.commands.calibrate import Reading, average_gauges
from gridtap.errors import UserError
from gridtap_fw import wire
from tests.support.hil.rig import VirtualRig

TRANSDUCERS = {"gain_error_sd": 0.01, "vt_lead_deg": 2.0, "ct_lead_deg": 3.0}
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


def test_reactive_reference_fixes_gains_and_phase(rig: VirtualRig,
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
    assert cli(["--port", rig.port, "--channel", "1", "--ref-volts", "230", "--ref-amps", "10",
                "--ref-watts", "1150", "--seconds", "3"]) == 0
    out = capsys.readouterr().out
    assert "phase" in out and "(committed)" in out
    client = rig.client()
    try:
        after = errors(reading(client, 1, 3.0), 230.0, 10.0, 1150.0)
        cfg = client.config_get(wire.TARGET_CT, 1, (wire.P_PHASE_MDEG,))
    finally:
        client.close()
    assert max(after) < 0.3, after
    # VT lead 2 deg minus CT lead 3 deg: docs/protocol.md's phase_mdeg convention
    assert cfg[wire.P_PHASE_MDEG] == pytest.approx(-1000, abs=150)


def test_resistive_reference_changes_gains_only(rig: VirtualRig, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--port", rig.port, "--channel", "0", "--ref-volts", "230", "--ref-amps", "10",
                "--ref-watts", "2300", "--seconds", "3"]) == 0
    assert "phase        unchanged" in capsys.readouterr().out
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
    assert cli(["--port", rig.port, "--channel", "7", "--ref-volts", "230", "--ref-amps", "10"]) == 2
    assert "--channel must be 0..2" in capsys.readouterr().err
