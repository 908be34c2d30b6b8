"""`gridtap sim`: option checking and a short end-to-end run that writes a record."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from gridtap.cli import main
from gridtap.errors import UserError
from gridtap_sim import cli as simcli
from gridtap_sim.engine import load_record

ECHO_FW = Path(__file__).resolve().parents[1] / "support" / "simfw" / "echo_fw.py"


def args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"scenario": "household", "speed": "1", "seed": "1", "duration": None,
                               "record": None, "ber": "0", "drop": "0", "stalls": "0", "board": None,
                               "start": None, "firmware": None, "fw_log": None, "eeprom": None,
                               "outage": [], "ber_burst": []}
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("bad, word", [
    ({"scenario": "mansion"}, "--scenario"),
    ({"speed": "fast"}, "--speed"),
    ({"speed": "-3"}, "--speed"),
    ({"seed": "x"}, "--seed"),
    ({"seed": "-1"}, "--seed must not be negative"),
    ({"duration": "0"}, "--duration"),
    ({"ber": "0.7"}, "--ber"),
    ({"ber": "nan"}, "--ber"),
    ({"drop": "1"}, "--drop"),
    ({"start": "25:00"}, "--start"),
    ({"start": "noon"}, "--start"),
    ({"record": "/no/such/dir/r.npz"}, "--record"),
    ({"firmware": "/no/such/fw.py"}, "--firmware"),
    ({"eeprom": "/no/such/dir/ee.bin"}, "--eeprom"),
    ({"outage": ["600"]}, "--outage"),
    ({"outage": ["x:5"]}, "--outage"),
    ({"outage": ["600:0"]}, "--outage"),
    ({"ber_burst": ["1:2"]}, "--ber-burst"),
    ({"ber_burst": ["5:3:1e-3"]}, "--ber-burst"),
    ({"ber_burst": ["1:2:0.9"]}, "--ber-burst"),
])
def test_bad_options_name_the_option(bad: dict[str, object], word: str) -> None:
    with pytest.raises(UserError, match=word):
        simcli.options(args(**bad))


def test_speed_and_start_parsing() -> None:
    assert simcli.parse_speed("max") == math.inf and simcli.parse_speed("0") == math.inf
    assert simcli.parse_speed("60") == 60.0
    assert simcli.parse_start("06:30") == 6.5 * 3600


def test_bad_board_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board = tmp_path / "board.json"
    board.write_text(json.dumps({"adc": {"channels": []}}))
    rc = main(["sim", "--board", str(board), "--duration", "1", "--firmware", str(ECHO_FW)])
    assert rc == 2
    assert "adc.channels" in capsys.readouterr().err


def test_end_to_end_run_prints_the_pty_and_records(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "run.npz"
    rc = main(["sim", "--scenario", "pulse-meters", "--speed", "max", "--seed", "7", "--duration", "6",
               "--record", str(rec), "--firmware", str(ECHO_FW), "--fw-log", str(tmp_path / "fw.log"),
               "--ber", "1e-4"])
    out = capsys.readouterr()
    assert rc == 0
    assert out.out.startswith("pty: /dev/")
    assert "simulated 6.0 s" in out.err
    meta, arr = load_record(rec)
    assert meta["scenario"] == "pulse-meters" and meta["seed"] == 7 and meta["speed"] == "max"
    assert meta["boots"] == [[0.0, 1]]
    assert arr["e_net_j"].shape == (6, 3)
    assert arr["eeprom_writes"][:4].tolist() == [1, 1, 1, 1]      # echo_fw's boot counter
    assert "boot 1 cause 1" in (tmp_path / "fw.log").read_text()


def test_sigterm_stops_the_run_and_still_writes_the_record(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    rec = tmp_path / "stopped.npz"
    exe = Path(sys.executable).parent / "gridtap"
    proc = subprocess.Popen([str(exe), "sim", "--scenario", "household", "--speed", "1", "--record", str(rec),
                             "--firmware", str(ECHO_FW), "--fw-log", str(tmp_path / "fw.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"pty: ")
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    meta, arr = load_record(rec)
    assert 1.0 <= meta["sim_s"] < 10.0 and arr["e_net_j"].shape[0] >= 1


def test_eeprom_image_carries_the_board_from_run_to_run(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "ee.bin"
    common = ["sim", "--scenario", "steady", "--speed", "max", "--duration", "1", "--firmware", str(ECHO_FW),
              "--eeprom", str(image), "--fw-log", str(tmp_path / "fw.log")]
    assert main(common) == 0 and main(common) == 0
    assert image.read_bytes()[:4] == (2).to_bytes(4, "little")     # echo_fw's boot counter
    assert "boot 2 cause 1" in (tmp_path / "fw.log").read_text()
    image.write_bytes(b"short")
    assert main(common) == 2
    assert "--eeprom" in capsys.readouterr().err


def test_outages_and_ber_bursts_in_any_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "faults.npz"
    rc = main(["sim", "--scenario", "household", "--speed", "max", "--seed", "3", "--duration", "8",
               "--record", str(rec), "--fw-log", str(tmp_path / "fw.log"),
               "--outage", "2:1.5", "--outage", "3:1", "--ber-burst", "5:8:2e-2"])
    assert rc == 0, capsys.readouterr().err
    meta, arr = load_record(rec)
    assert arr["outage_s"].tolist() == [[2.0, 4.0]]          # overlapping failures merge into one
    assert len(meta["deaths"]) == 1 and len(meta["boots"]) == 2  # the board died and booted again
    assert meta["brownout_flags_s"] and 2.0 <= meta["brownout_flags_s"][0] < 2.2
    assert meta["uart"]["from_board"]["bits_flipped"] > 0     # the burst hit the board's frames
    assert np.all(arr["e_net_j"][2:4] == 0.0)                 # no mains, no energy


def test_no_burst_no_flipped_bits(tmp_path: Path) -> None:
    rec = tmp_path / "clean.npz"
    assert main(["sim", "--scenario", "household", "--speed", "max", "--duration", "4", "--record", str(rec),
                 "--fw-log", str(tmp_path / "fw.log"), "--ber-burst", "100:200:1e-2"]) == 0
    meta, _ = load_record(rec)
    assert meta["uart"]["from_board"]["bits_flipped"] == 0 and meta["uart"]["from_board"]["bytes_in"] > 0
