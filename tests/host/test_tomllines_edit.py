"""tomllines.set_value: one value changed in place, every other byte of gridtap.toml kept."""

from __future__ import annotations

import tomllib

import pytest

from gridtap.tomllines import set_value

TEXT = '''# mine
[board]
port = "/dev/ttyUSB0"   # the adapter

[[sensor]]
name = "a"
gain = 1.0   # nominal

[[sensor]]
name = "b"
phase_deg = { x = 1 }
'''


def test_replaces_in_place_keeping_the_comment() -> None:
    out = set_value(TEXT, ("sensor", 0), "gain", "1.002345")
    assert out == TEXT.replace("gain = 1.0   # nominal", "gain = 1.002345   # nominal")
    assert tomllib.loads(out)["sensor"][0]["gain"] == 1.002345


def test_adds_a_missing_key_under_its_table_header() -> None:
    out = set_value(TEXT, ("sensor", 0), "phase_deg", "-1.5")
    assert out == TEXT.replace('[[sensor]]\nname = "a"', '[[sensor]]\nphase_deg = -1.5\nname = "a"')
    assert tomllib.loads(out)["sensor"][0]["phase_deg"] == -1.5


def test_crlf_files_stay_crlf() -> None:
    crlf = TEXT.replace("\n", "\r\n")
    out = set_value(set_value(crlf, ("sensor", 0), "gain", "2.0"), ("sensor", 0), "line", '"L2"')
    assert "\n" not in out.replace("\r\n", "")
    assert tomllib.loads(out)["sensor"][0] == {"name": "a", "gain": 2.0, "line": "L2"}


def test_what_it_cannot_edit_safely_is_refused() -> None:
    with pytest.raises(ValueError, match="not a plain"):
        set_value(TEXT, ("sensor", 1), "phase_deg", "1.0")
    with pytest.raises(ValueError, match="no table"):
        set_value(TEXT, ("sensor", 5), "gain", "1.0")
