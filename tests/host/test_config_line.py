"""A CT's line (L1/L2/L3) in gridtap.toml: parsed, checked, combined with phase_deg and pushed to the board.

The board has one VT, on L1; a CT on L2 reads against L1's voltage 120 degrees
later and one on L3 240 degrees later (= -120), which the daemon sends as part
of phase_mdeg (docs/protocol.md, hardware/analogue.md section 2a).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridtap.board.session import Session
from gridtap.commands.calibrate import Reading, compute
from gridtap.config import BoardConfig, load_config, parse_config
from gridtap.errors import UserError
from gridtap_fw import config as fwconfig
from gridtap_fw import wire

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
[board]
port = "/dev/ttyUSB0"

[[sensor]]
name = "l1"
id = "0123456789abcdef0123456789abcdef"
kind = "ct"
channel = 0

[[sensor]]
name = "l2"
id = "1123456789abcdef0123456789abcdef"
kind = "ct"
channel = 1
line = "L2"

[[sensor]]
name = "l3"
id = "2123456789abcdef0123456789abcdef"
kind = "ct"
channel = 2
line = "L3"
phase_deg = -4.2
"""


def pushed_phase(text: str) -> dict[int, int]:
    """phase_mdeg per CT channel in the daemon's CONFIG_SET frames for this config."""
    cfg = parse_config(text)
    ct = {s.index: s for s in cfg.sensors if s.kind == "ct"}
    fake = SimpleNamespace(board=BoardConfig(), ct=ct, pulse={})
    frames = Session.config_frames(cast(Any, fake), 3, 0)
    out = {}
    for target, index, items, _what in frames:
        if target == wire.TARGET_CT:
            out[index] = dict(items)[wire.P_PHASE_MDEG]
    return out


def test_lines_become_phase_mdeg_the_board_accepts() -> None:
    cfg = parse_config(BASE)
    assert [s.line for s in cfg.sensors] == ["L1", "L2", "L3"]
    assert [s.phase_mdeg for s in cfg.sensors] == [0, 120000, -124200]  # L3: 240 - 4.2 = -124.2
    assert pushed_phase(BASE) == {0: 0, 1: 120000, 2: -124200}
    board = fwconfig.Config(3, 0)
    for index, mdeg in pushed_phase(BASE).items():
        assert board.apply(wire.TARGET_CT, index, ((wire.P_PHASE_MDEG, mdeg),)) == 0
        assert board.cts[index].phase_mdeg == mdeg


@given(st.sampled_from(["L1", "L2", "L3"]), st.floats(min_value=-180, max_value=180))
def test_any_line_and_correction_stays_in_the_boards_range(line: str, phase: float) -> None:
    text = BASE.replace('line = "L2"', f'line = "{line}"\nphase_deg = {phase!r}', 1)
    s = parse_config(text).sensors[1]
    lag = {"L1": 0, "L2": 120, "L3": 240}[line]
    assert -180000 <= s.phase_mdeg < 180000
    # the same angle modulo a turn, to the millidegree
    assert (s.phase_mdeg - round((phase + lag) * 1000)) % 360000 == 0
    assert fwconfig.Config(3, 0).check(wire.TARGET_CT, 1, ((wire.P_PHASE_MDEG, s.phase_mdeg),)) == 0


@pytest.mark.parametrize(("bad", "words"), [
    ('"L4"', ["line", "one of L1, L2, L3", "'L4'"]),
    ('"l2"', ["line", "one of L1, L2, L3", "'l2'"]),
    ("2", ["line", "expected a string"]),
])
def test_a_bad_line_is_named_with_its_key_and_line(bad: str, words: list[str]) -> None:
    text = BASE.replace('line = "L2"', f"line = {bad}", 1)
    with pytest.raises(UserError) as info:
        parse_config(text, Path("gridtap.toml"))
    msg = str(info.value)
    assert "Traceback" not in msg
    m = re.search(r"line (\d+)", msg)
    assert m is not None and int(m.group(1)) == text.splitlines().index(f"line = {bad}") + 1, msg
    for w in words:
        assert w in msg, msg


def test_line_does_not_apply_to_a_pulse_input() -> None:
    text = BASE + '\n[[sensor]]\nname = "gas"\nid = "3123456789abcdef0123456789abcdef"\nkind = "pulse"\n' \
                  'input = 0\nmeter_constant = 100\nline = "L1"\n'
    with pytest.raises(UserError, match="does not apply to a pulse"):
        parse_config(text)


def test_example_config_puts_the_heat_pump_on_l2() -> None:
    cfg = load_config(ROOT / "docs" / "gridtap.example.toml")
    assert cfg.sensor("heatpump").line == "L2" and cfg.sensor("heatpump").phase_mdeg == 120000
    assert cfg.sensor("mains").line == "L1"


def test_calibrating_a_ct_on_l3_keeps_the_phase_in_range() -> None:
    v, i, phi = 230.0, 10.0, 60.0
    err = -2.0  # the board reads the current 2 degrees less lagging than the reference
    board = Reading(v, i, v * i * math.cos(math.radians(phi + err)))
    ref = Reading(v, i, v * i * math.cos(math.radians(phi)))
    cal = compute(board, ref, 1_000_000, 1_000_000, -179000)  # L3 (-120) plus a -59 degree correction
    assert cal.phase_changed
    assert cal.phase_mdeg == pytest.approx(-181000 + 360000, abs=2)  # wrapped: -181 degrees is +179
    assert fwconfig.Config(3, 0).check(wire.TARGET_CT, 2, ((wire.P_PHASE_MDEG, cal.phase_mdeg),)) == 0

