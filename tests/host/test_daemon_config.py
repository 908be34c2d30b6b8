"""gridtap.toml: the example validates, and every mistake names its key and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.config import load_config, parse_config
from gridtap.errors import UserError
from gridtap.tomllines import locate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "gridtap.example.toml"

GOOD = """\
[board]
port = "/dev/ttyUSB0"

[[sensor]]
name = "mains"
id = "0123456789abcdef0123456789abcdef"
kind = "ct"
channel = 0

[[sensor]]
name = "gas"
id = "fedcba9876543210fedcba9876543210"
kind = "pulse"
input = 0
meter_constant = 100
unit = "litre"
"""


def test_example_config_validates() -> None:
    cfg = load_config(EXAMPLE)
    assert [s.name for s in cfg.sensors] == ["mains", "heatpump", "pv-meter", "water"]
    assert cfg.sensors[0].export_id is not None
    assert cfg.board.baud == 115200 and cfg.daemon.port == 8080
    assert len(cfg.series()) == 5


def test_minimal_config_defaults() -> None:
    cfg = parse_config(GOOD)
    assert cfg.daemon.rrd_dir == cfg.daemon.state_dir / "rrd"
    assert cfg.sensors[1].unit == "litre" and cfg.sensors[1].meter_constant == 100.0
    assert cfg.sensor("gas").index == 0


def error_of(text: str) -> str:
    with pytest.raises(UserError) as info:
        parse_config(text, Path("gridtap.toml"))
    return str(info.value)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("edit", "needle", "words"),
    [
        (("channel = 0", "channel = 0\ngian = 1.0"), "gian", ["unknown key", "gian"]),
        (("channel = 0", 'channel = "zero"'), "channel =", ["channel", "expected an integer", "'zero'"]),
        (("channel = 0", "channel = 9"), "channel =", ["channel", "0..7"]),
        (('kind = "ct"', 'kind = "cd"'), 'kind = "cd"', ["kind", "one of ct, pulse"]),
        (('id = "fedcba', 'id = "FEDCBA'), "FEDCBA", ["[[sensor]] #2", "'id'", "32 lowercase hex"]),
        (
            ("meter_constant = 100", "meter_constant = true"),
            "meter_constant",
            ["expected a number", "got true/false true"],
        ),
        (('unit = "litre"', 'unit = "litre"\nphase_deg = 3.0'), "phase_deg", ["does not apply to a pulse"]),
        (('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaud = 12345'), "baud", ["baud", "115200"]),
        (("input = 0", "input = 0\nname = 'x'"), "name = 'x'", []),  # TOML itself: duplicate key
    ],
)
def test_errors_name_key_and_line(edit: tuple[str, str], needle: str, words: list[str]) -> None:
    text = GOOD.replace(*edit, 1)
    assert text != GOOD
    msg = error_of(text)
    assert "Traceback" not in msg
    m = re.search(r"line (\d+)", msg)
    assert m is not None, msg
    assert int(m.group(1)) == line_of(text, needle), msg
    for w in words:
        assert w in msg, msg


def test_missing_sensors_and_required_keys() -> None:
    msg = error_of('[board]\nport = "/dev/ttyS0"\n')
    assert "no sensors" in msg and "[[sensor]]" in msg
    msg = error_of(GOOD.replace('kind = "ct"\n', ""))
    assert "[[sensor]] #1 key 'kind'" in msg and "required" in msg and "line 4:" in msg
    msg = error_of(GOOD.replace("[board]\n", "[boards]\n"))
    assert "unknown key" in msg and "boards" in msg and "line 1:" in msg


def test_duplicates_are_refused() -> None:
    text = GOOD.replace("fedcba9876543210fedcba9876543210", "0123456789abcdef0123456789abcdef")
    msg = error_of(text)
    assert "[[sensor]] #2 key 'id'" in msg and "already used by [[sensor]] #1" in msg
    assert f"line {[i for i, x in enumerate(text.splitlines(), 1) if x.startswith('id =')][1]}:" in msg
    msg = error_of(GOOD.replace('name = "gas"', 'name = "mains"'))
    assert "name 'mains' is already used" in msg


def test_absent_features_are_refused_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    from gridtap import outputs

    monkeypatch.setitem(outputs.REGISTRY, "mqtt", "gridtap.outputs.no_such_module:MqttOutput")
    msg = error_of(GOOD + '\n[mqtt]\nhost = "127.0.0.1"\n')
    assert "key 'mqtt'" in msg and "the mqtt feature is not available" in msg
    assert f"line {GOOD.count(chr(10)) + 2}:" in msg
    monkeypatch.undo()
    msg = error_of(GOOD + "\n[mqtt]\nhots = 1\n")
    assert "[mqtt] key 'hots'" in msg and f"line {GOOD.count(chr(10)) + 3}:" in msg
    msg = error_of(GOOD + '\n[rules]\nv4 = ["v4"]\n')
    assert "a top-level [rules] section has no effect in the daemon" in msg


def test_not_toml_is_a_clear_error(tmp_path: Path) -> None:
    msg = error_of("[board\nport=1")
    assert "not valid TOML" in msg and "line 1" in msg
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_locator_handles_arrays_and_multiline() -> None:
    text = (
        'a = [\n  1,\n  2,\n]\nb = """\nx = 1\n"""\n[t]\nc = 1\n[[s]]\nd = 1\n[[s]]\nd = 2\n[s.sub]\ne = 3\n'
    )
    lines = locate(text)
    assert lines[("a",)] == 1 and lines[("b",)] == 5 and ("x",) not in lines
    assert lines[("t", "c")] == 9
    assert lines[("s", 0, "d")] == 11 and lines[("s", 1, "d")] == 13
    assert lines[("s", 1, "sub", "e")] == 15


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_config_or_user_error(text: str) -> None:
    try:
        parse_config(text)
    except UserError:
        pass


PVO = """
[pvoutput]
system_id = 4242
interval = 5
timezone = "Europe/Brussels"
v2 = "mains.export:power"
v4 = "mains:power"
"""


def test_pvoutput_section_is_checked_with_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDTAP_PVOUTPUT_KEY", "c0ffee0123456789abcdef0123456789deadbeef")
    good = GOOD.replace("channel = 0\n", 'channel = 0\nexport_id = "00000000000000000000000000000001"\n')
    cfg = parse_config(good + PVO)
    assert {s.series for s in cfg.outputs["pvoutput"].values} == {"mains", "mains.export"}
    text = good + PVO.replace('v4 = "mains:power"', 'v4 = "house:power"')
    msg = error_of(text)
    assert f"line {line_of(text, 'v4 =')}: [pvoutput] key 'v4'" in msg and "'house' is not a sensor" in msg
    text = good + PVO.replace("interval = 5", "interval = 7")
    msg = error_of(text)
    assert f"line {line_of(text, 'interval = 7')}:" in msg and "interval" in msg
    msg = error_of(good + "\n[rules]\ndialect = 'basic'\n")
    assert "[rules]" in msg and "has no effect" in msg and f"line {good.count(chr(10)) + 2}:" in msg
