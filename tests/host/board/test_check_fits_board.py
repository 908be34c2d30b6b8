"""Finding 13.7: `gridtap daemon --check` refuses a channel or link rate the board (board.json) lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridtap.cli import main

ROOT = Path(__file__).resolve().parents[3]

BASE = f"""[board]
port = "/dev/ttyUSB0"
board_file = "{ROOT / 'hardware' / 'board.json'}"

[[sensor]]
name = "mains"
id = "0123456789abcdef0123456789abcdef"
kind = "ct"
channel = 0
"""


def check(tmp_path: Path, text: str) -> int:
    f = tmp_path / "gridtap.toml"
    f.write_text(text)
    return main(["daemon", "-c", str(f), "--check"])


def test_the_reference_board_fits(tmp_path: Path) -> None:
    assert check(tmp_path, BASE) == 0


@pytest.mark.parametrize("change, words", [
    (("channel = 0", "channel = 5"), "sensor 'mains' is on CT channel 5, but the board"),
    (('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaud = 460800'), "opens its link at 115200"),
])
def test_what_the_board_does_not_have_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 change: tuple[str, str], words: str) -> None:
    assert check(tmp_path, BASE.replace(*change)) == 2
    assert words in capsys.readouterr().err


def test_a_pulse_input_the_board_does_not_have_is_refused(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE + ('\n[[sensor]]\nname = "gas"\nid = "1123456789abcdef0123456789abcdef"\nkind = "pulse"\n'
                   "input = 3\nmeter_constant = 100\n")
    assert check(tmp_path, text) == 2
    assert "sensor 'gas' is on pulse input 3, but the board" in capsys.readouterr().err
