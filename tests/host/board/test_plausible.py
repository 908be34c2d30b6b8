"""What the board can be believed (gridtap.board.plausible): limits from board.json and the config."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest

from gridtap.board.plausible import RateLog, load_board_limits, max_rates, printable, reference_board
from gridtap.config import SensorConfig, load_config
from gridtap.errors import UserError


def test_the_reference_board_limits() -> None:
    """hardware/board.json: full scale 2048 counts x 0.2038 V x 2048 x 0.07324 A = 62.6 kW per CT."""
    limits = load_board_limits(None)
    assert limits.n_ct == 3 and limits.n_pulse == 2
    assert limits.ct_max_w[0] == pytest.approx(2048 * 0.2038 * 2048 * 0.07324)
    rates = max_rates(limits, (SensorConfig("mains", "a" * 32, "ct", 0, export_id="b" * 32, gain=1.5),
                               SensorConfig("gas", "c" * 32, "pulse", 0, meter_constant=100.0,
                                            debounce_ms=20)))
    assert rates["a" * 32] == rates["b" * 32] == pytest.approx(limits.ct_max_w[0] * 1.5 / 3.6)
    assert rates["c" * 32] == pytest.approx(10_000 * 50)  # 10 L (10,000 mL) per pulse, 50 pulses a second


def test_board_file_from_the_config_and_its_errors(tmp_path: Path) -> None:
    ref = reference_board()
    assert ref is not None
    one = json.loads(ref.read_text())
    one["adc"]["channels"] = one["adc"]["channels"][:2]
    (tmp_path / "one-ct.json").write_text(json.dumps(one))
    cfg = tmp_path / "gridtap.toml"
    cfg.write_text(textwrap.dedent("""
        [board]
        port = "/dev/ttyUSB0"
        board_file = "one-ct.json"
        [[sensor]]
        name = "mains"
        kind = "ct"
        channel = 0
        id = "6f0bc0a5d7e54d7b8c0a2f5b9e1d3c47"
    """))
    board_file = load_config(cfg).board.board_file
    assert board_file == tmp_path / "one-ct.json"  # relative to the config file
    assert load_board_limits(board_file).n_ct == 1
    for text, why in (("{", "not JSON"), ("[]", "no adc.channels"),
                      ('{"adc": {"midscale": 0, "channels": [{}]}}', "midscale must be a positive")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(UserError, match=why):
            load_board_limits(tmp_path / "bad.json")
    with pytest.raises(UserError, match="No such file"):
        load_board_limits(tmp_path / "missing.json")


def test_printable_escapes_control_characters() -> None:
    assert printable(b"ok\n\x1b[31mred\r\x00") == "ok\\n\\x1b[31mred\\r\\x00"
    assert printable("Zähler €".encode()) == "Zähler €"
    assert printable(b"\xff") == "\ufffd"


def test_rate_log_bursts_then_summarises(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLog(logging.getLogger("t"), every_s=60.0, burst=2, mono=lambda: now[0])
    caplog.set_level(logging.INFO, logger="t")
    assert [rl.log(logging.INFO, "k", "line %d", i) for i in range(5)] == [True, True, False, False, False]
    now[0] = 60.0
    assert rl.log(logging.INFO, "k", "line %d", 5)
    assert caplog.records[-1].getMessage() == "line 5 (3 more like it not logged)"
    assert rl.log(logging.INFO, "other", "x")  # keys have their own budget
